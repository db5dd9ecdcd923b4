"""Accuracy against sparsity on the full Fashion-MNIST: the tables of the issues, reproduced.

Each cell is a `sparsenet train` run for several seeds; `dense` is the reference. Two kinds of
suite:

- `pruning`, `dst`: every method at the defaults (20 epochs, batch 128, SGD lr 0.05, momentum
  0.9, weight decay 1e-4, cosine schedule).
- `tuned`: every cell at the learning rate, weight decay and method options that the validation
  grids of `benchmarks/tune.py` chose (55,000 training images, 5,000 held out; the test set
  never took part), dense included, which is then the reference. Same epoch budget.

Records go to benchmarks/results/accuracy/<suite>-<model>/ and the table to
benchmarks/results/accuracy-<suite>-<model>.md.

    python benchmarks/accuracy.py --suite pruning --jobs 2   # gmp, magnitude, lottery, snip, ...
    python benchmarks/accuracy.py --suite dst                # static, set, rigl, srigl, mest, ...
    python benchmarks/accuracy.py --suite tuned --seeds 3
    python benchmarks/accuracy.py --suite conv --model lenet5 --jobs 2
    python benchmarks/accuracy.py --suite nm --jobs 2                # SR-STE 2:4 against dense
    python benchmarks/accuracy.py --suite claims --jobs 2     # issue 14: report and claims runs
    python benchmarks/accuracy.py --suite custom --cells rigl:0.9,static:0.98 --seeds 2

A suite reuses records already on disk (delete them to rerun), so it can be resumed. `--jobs N`
trains N runs at once, each on one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, run_name, train_runs  # noqa: E402

from sparsenet.compare import markdown, summarize  # noqa: E402

# (method, sparsity, settings): the cells the issues' "must show" lists ask for. A setting is a
# method option, or a TrainConfig field among CONFIG_KEYS (lr, weight_decay, ...).
SUITES = {
    "pruning": [("gmp", 0.9, {}), ("magnitude", 0.9, {}),
                ("magnitude", 0.5, {"format": "nm", "n": 2, "m": 4}),
                ("lottery", 0.893, {}), ("lottery", 0.964, {}), ("lottery", 0.964, {"reinit": True}),
                ("snip", 0.95, {}), ("snip", 0.98, {}), ("random", 0.98, {}),
                ("grasp", 0.95, {}), ("synflow", 0.95, {}), ("structured", 0.5, {})],
    "dst": [("static", 0.9, {}), ("static", 0.98, {}), ("set", 0.9, {}), ("rigl", 0.9, {}),
            ("rigl", 0.98, {}), ("srigl", 0.9, {}), ("mest", 0.9, {}), ("autosparse", 0.9, {})],
    # chosen on validation: benchmarks/results/tuning-{dst,rigl-schedule,extra,pruning}.md.
    # set and srigl take rigl's 90 % setting (not tuned on their own); the long lottery runs
    # come first so that the short ones fill the other worker.
    "tuned": [("lottery", 0.964, {"reinit": True, "rewind_step": 0}),
              ("lottery", 0.893, {"rewind_step": 0}),
              ("lottery", 0.893, {}),
              ("dense", 0.0, {"weight_decay": 5e-4}),
              ("magnitude", 0.9, {}),
              ("static", 0.9, {"lr": 0.1, "weight_decay": 5e-4, "sparse_init": True}),
              ("rigl", 0.9, {"lr": 0.1, "weight_decay": 5e-4, "sparse_init": True}),
              ("set", 0.9, {"lr": 0.1, "weight_decay": 5e-4, "sparse_init": True}),
              ("srigl", 0.9, {"lr": 0.1, "weight_decay": 5e-4, "sparse_init": True}),
              ("static", 0.98, {"lr": 0.1}),
              ("rigl", 0.98, {"lr": 0.1, "weight_decay": 5e-4, "alpha": 0.5, "delta_t": 200}),
              ("snip", 0.95, {"lr": 0.1, "weight_decay": 5e-4}),
              ("snip", 0.98, {"lr": 0.1, "weight_decay": 5e-4}),
              ("random", 0.98, {"lr": 0.1})],
    # issue 14: the runs behind `sparsenet report` (every record with per-example predictions)
    # and the claims of benchmarks/claims.py: pruning and DST at 90 / 98 % (1x: 20 epochs),
    # then RigL, SET and static at the RigL paper's longer budgets (5x = 100 epochs, 2x = 40),
    # in the order they were run (a resumed suite fills in what is missing)
    "claims": [("random", s, {"distribution": "uniform"}) for s in (0.95, 0.98)]
              + [(m, 0.98, {}) for m in ("snip", "synflow", "grasp")]
              + [(m, s, {}) for s in (0.9, 0.98) for m in ("rigl", "set", "static", "gmp")]
              + [(m, s, {"epochs": e}) for e, s in ((100, 0.9), (100, 0.98), (40, 0.9), (40, 0.98))
                 for m in ("rigl", "set", "static")],
    # convolutional models (--model lenet5): lr 0.01, Caffe's LeNet solver (0.05 diverges)
    "conv": [("dense", 0.0, {"lr": 0.01}), ("gmp", 0.9, {"lr": 0.01})],
    # N:M from scratch (issue 13): SR-STE 2:4 on every layer, at the defaults
    "nm": [("sr_ste", 0.5, {})],
}
REFERENCE = {"tuned": ("dense", 0.0, {"weight_decay": 5e-4}), "conv": ("dense", 0.0, {"lr": 0.01})}
DEFAULT_REFERENCE = ("dense", 0.0, {})


def run_suite(cells, seeds, model, epochs, out_dir, data_source="full", jobs=1):
    """Train the cells missing on disk (`jobs` at a time); return every cell's records."""
    os.makedirs(out_dir, exist_ok=True)
    todo, paths = [], []
    for method, sparsity, settings in cells:
        for seed in range(seeds):
            path = os.path.join(out_dir, run_name(method, sparsity, settings, seed) + ".json")
            paths.append(path)
            if not os.path.exists(path):
                todo.append((dict(model=model, method=method, sparsity=sparsity, seed=seed,
                                  data=data_source, epochs=epochs), settings, path))
    print(f"{len(todo)} runs to do, {jobs} at once", flush=True)
    train_runs(todo, jobs)
    records = []
    for path in paths:
        with open(path) as f:
            records.append(json.load(f))
    return records


def label(record):
    """Method name with the options that distinguish cells (e.g. magnitude[format=nm])."""
    hyper = record.get("hyperparameters", {})
    opts = dict(hyper.get("method_options") or {})
    opts.pop("sparsity", None)
    for key, default in (("epochs", 20), ("lr", 0.05), ("weight_decay", 1e-4), ("l1", 0.0),
                         ("group_lasso", 0.0)):          # runs off the defaults get own rows
        if key in hyper and hyper[key] != default:
            opts[key] = hyper[key]
    return record["method"] + (f"[{','.join(f'{k}={v}' for k, v in sorted(opts.items()))}]"
                               if opts else "")


def load_records(directory):
    records = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                records.append(json.load(f))
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="pruning", choices=sorted(SUITES) + ["custom"])
    parser.add_argument("--cells", default="", help="custom: METHOD:SPARSITY,... ")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data", default="full")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    parser.add_argument("--collect", metavar="DIR", default=None,
                        help="only summarize the run records (JSON) found in DIR; train nothing")
    args = parser.parse_args(argv)
    cells = SUITES.get(args.suite) or [(c.split(":")[0], float(c.split(":")[1]), {})
                                       for c in args.cells.split(",") if c]
    reference = REFERENCE.get(args.suite, DEFAULT_REFERENCE)
    name = f"{args.suite}-{args.model}"
    if args.collect:
        records = [r for r in load_records(args.collect) if r["model"] == args.model]
        name = f"collected-{args.model}"
    else:
        if reference not in cells:
            cells = [reference] + cells
        records = run_suite(cells, args.seeds, args.model, args.epochs,
                            os.path.join(RESULTS, "accuracy", name), args.data, args.jobs)
    for r in records:                      # cells differing by options get their own row
        r["method"] = label(r)
    # a lottery run with reinit=True also trained the random-reinitialization control: its row
    records += [dict(r, method=r["method"] + " reinit control",
                     test_accuracy=r["reinit_test_accuracy"])
                for r in records if "reinit_test_accuracy" in r]
    rows = summarize(records)
    ref_label = reference[0] + ("[" + ",".join(f"{k}={v}" for k, v in sorted(reference[2].items()))
                                + "]" if reference[2] else "")
    dense = [r for r in rows if r["method"] == ref_label]
    table = markdown(rows, dense[0]["accuracy_mean"] if dense else None)
    origin = records[0]["data"]["origin"] if records else "?"
    seeds = max((r["seeds"] for r in rows), default=0)
    command = "--collect " + args.collect if args.collect else f"--suite {args.suite} --seeds {args.seeds}"
    text = (f"# Accuracy: {args.model}, up to {seeds} seeds per cell\n\n"
            f"Data: {origin}. Produced by `python benchmarks/accuracy.py {command}`. "
            f"\"vs dense\" is against `{ref_label}`.\n\n{table}\n")
    with open(os.path.join(RESULTS, f"accuracy-{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
