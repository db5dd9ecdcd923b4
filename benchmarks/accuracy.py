"""Accuracy against sparsity on the full Fashion-MNIST: the tables of the issues, reproduced.

Each cell is a `sparsenet train` run (default hyperparameters: 20 epochs, batch 128, SGD lr 0.05
momentum 0.9, cosine schedule) for 2 seeds; `dense` is the reference. Records go to
benchmarks/results/accuracy/<suite>/ and the table to benchmarks/results/accuracy-<suite>.md.

    python benchmarks/accuracy.py --suite pruning     # gmp, magnitude, lottery, snip, ...
    python benchmarks/accuracy.py --suite dst         # static, set, rigl, srigl, mest, ...
    python benchmarks/accuracy.py --suite custom --cells rigl:0.9,static:0.98 --seeds 2

A suite reuses records already on disk (delete them to rerun), so it can be resumed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS  # noqa: E402

from sparsenet.compare import markdown, summarize  # noqa: E402
from sparsenet.train import TrainConfig, load_arrays, train_model  # noqa: E402

# (method, sparsity, method options): the cells the issues' "must show" lists ask for
SUITES = {
    "pruning": [("gmp", 0.9, {}), ("magnitude", 0.9, {}),
                ("magnitude", 0.5, {"format": "nm", "n": 2, "m": 4}),
                ("lottery", 0.893, {}), ("lottery", 0.964, {}), ("lottery", 0.964, {"reinit": True}),
                ("snip", 0.95, {}), ("snip", 0.98, {}), ("random", 0.98, {}),
                ("grasp", 0.95, {}), ("synflow", 0.95, {}), ("structured", 0.5, {})],
    "dst": [("static", 0.9, {}), ("static", 0.98, {}), ("set", 0.9, {}), ("rigl", 0.9, {}),
            ("rigl", 0.98, {}), ("srigl", 0.9, {}), ("mest", 0.9, {}), ("autosparse", 0.9, {})],
}


def cell_name(method, sparsity, options, seed):
    extra = "".join(f"-{k}{v}" for k, v in sorted(options.items()))
    return f"{method}-{sparsity:g}{extra}-s{seed}"


def run_suite(cells, seeds, model, epochs, out_dir, data_source="full"):
    os.makedirs(out_dir, exist_ok=True)
    data = load_arrays(data_source)
    records = []
    for method, sparsity, options in [("dense", 0.0, {})] + cells:
        for seed in range(seeds):
            path = os.path.join(out_dir, cell_name(method, sparsity, options, seed) + ".json")
            if os.path.exists(path):
                with open(path) as f:
                    records.append(json.load(f))
                continue
            config = TrainConfig(model=model, method=method, sparsity=sparsity, epochs=epochs,
                                 seed=seed, progress=False, method_options=dict(options))
            print(f"== {os.path.basename(path)}", flush=True)
            _, record = train_model(config, log=None, data=data)
            with open(path, "w") as f:
                json.dump(record, f, indent=1)
            print(f"   {100 * record['test_accuracy']:.2f} %  density {record['density']:.4f}  "
                  f"{record['train_seconds']:.0f} s", flush=True)
            records.append(record)
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
    parser.add_argument("--collect", metavar="DIR", default=None,
                        help="only summarize the run records (JSON) found in DIR; train nothing")
    args = parser.parse_args(argv)
    cells = SUITES.get(args.suite) or [(c.split(":")[0], float(c.split(":")[1]), {})
                                       for c in args.cells.split(",") if c]
    name = f"{args.suite}-{args.model}"
    if args.collect:
        records = [r for r in load_records(args.collect) if r["model"] == args.model]
        name = f"collected-{args.model}"
    else:
        records = run_suite(cells, args.seeds, args.model, args.epochs,
                            os.path.join(RESULTS, "accuracy", name), args.data)
    for r in records:                      # cells differing by options get their own row
        r["method"] = label(r)
    rows = summarize(records)
    dense = [r for r in rows if r["method"] == "dense"]
    table = markdown(rows, dense[0]["accuracy_mean"] if dense else None)
    origin = records[0]["data"]["origin"] if records else "?"
    seeds = max((r["seeds"] for r in rows), default=0)
    text = (f"# Accuracy: {args.model}, up to {seeds} seeds per cell\n\n"
            f"Data: {origin}. Produced by `python benchmarks/accuracy.py "
            f"{'--collect ' + args.collect if args.collect else '--suite ' + args.suite}`.\n\n"
            f"{table}\n")
    with open(os.path.join(RESULTS, f"accuracy-{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
