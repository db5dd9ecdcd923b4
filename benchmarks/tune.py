"""Choose hyperparameters on a validation split, never on the test set.

Every run trains on 55,000 of the 60,000 Fashion-MNIST training images and is scored on the
5,000 held out (`sparsenet train --val 5000`); the test set is not loaded. For each cell
(method, sparsity) the grid's best setting by mean validation accuracy is printed; that setting
is then run on the whole training set and scored on the test set by `benchmarks/accuracy.py`.

    python benchmarks/tune.py --grid dst          # static/rigl at 90 and 98 %: lr, wd, init, α, ΔT
    python benchmarks/tune.py --grid pruning      # snip, random, magnitude, lottery
    python benchmarks/tune.py --grid dst --jobs 2 --seeds 2

Records go to benchmarks/results/tuning/<model>/ (rerunning skips the ones on disk) and the
table to benchmarks/results/tuning-<grid>.md. `--jobs` runs that many trainings at once, each
on one thread.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, run_name, train_runs  # noqa: E402

VAL = 5000


def product(**axes):
    """Every combination of the axes, as dicts."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


# cell -> list of settings; a setting holds TrainConfig fields (lr, weight_decay) and method options
GRIDS = {
    "dst": {
        ("dense", 0.0): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4]),
        ("static", 0.9): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4], sparse_init=[False, True]),
        ("rigl", 0.9): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4], sparse_init=[False, True]),
        ("static", 0.98): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4], sparse_init=[False, True]),
        ("rigl", 0.98): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4], sparse_init=[False, True]),
    },
    # RigL's own schedule, at the rate and decay the "dst" grid chose for it
    "rigl-schedule": {
        ("rigl", 0.9): product(lr=[0.1], weight_decay=[5e-4], sparse_init=[True],
                               alpha=[0.3, 0.5], delta_t=[50, 100, 200]),
        ("rigl", 0.98): product(lr=[0.1], weight_decay=[5e-4], alpha=[0.3, 0.5],
                                delta_t=[50, 100, 200]),
    },
    # more of RigL's schedule at 98 %, and two SNIP variants: the sparse-fan-in rescaling of
    # the kept weights (Evci et al. 2022) and SNIP's scores ranked within ERK's layer shares
    "extra": {
        ("rigl", 0.98): product(lr=[0.1], weight_decay=[5e-4], alpha=[0.5, 0.7],
                                delta_t=[300, 400]),
        ("snip", 0.95): product(lr=[0.1], weight_decay=[5e-4], sparse_init=[True])
        + product(lr=[0.1], weight_decay=[5e-4], scope=["layer"], distribution=["erk"]),
        ("snip", 0.98): product(lr=[0.1], weight_decay=[5e-4], sparse_init=[True])
        + product(lr=[0.1], weight_decay=[5e-4], scope=["layer"], distribution=["erk"]),
    },
    # RigL at 90 %: the layer shares and how long the topology keeps moving
    "rigl90": {
        ("rigl", 0.9): product(lr=[0.1], weight_decay=[5e-4], sparse_init=[True],
                               distribution=["erk", "uniform"], t_end=[0.5, 0.9]),
        ("set", 0.9): product(lr=[0.1], weight_decay=[5e-4], sparse_init=[True]),
    },
    "pruning": {
        ("snip", 0.95): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4]),
        ("snip", 0.98): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4]),
        ("random", 0.98): product(lr=[0.05, 0.1], weight_decay=[1e-4, 5e-4]),
        ("magnitude", 0.9): product(scope=["layerwise", "global"],
                                    finetune_lr=[0.005, 0.02, 0.05]),
        ("lottery", 0.893): product(rewind_step=[0, 469]),
    },
}


def table(grid, directory, seeds):
    """Markdown: every setting's mean validation accuracy, the best of each cell marked."""
    lines = ["| method | sparsity | setting | validation accuracy (%) | seeds | best |",
             "|---|---|---|---|---|---|"]
    best = {}
    for (method, sparsity), settings in grid.items():
        rows = []
        for setting in settings:
            accs = []
            for seed in range(seeds):
                path = os.path.join(directory, run_name(method, sparsity, setting, seed) + ".json")
                if os.path.exists(path):
                    with open(path) as f:
                        accs.append(100 * json.load(f)["val_accuracy"])
            if accs:
                rows.append((statistics.mean(accs), setting, len(accs)))
        if not rows:
            continue
        top = max(rows, key=lambda r: r[0])
        best[(method, sparsity)] = top[1]
        for acc, setting, n in rows:
            text = ", ".join(f"{k}={v}" for k, v in setting.items())
            mark = "**best**" if setting is top[1] else ""
            lines.append(f"| {method} | {sparsity:g} | {text} | {acc:.2f} | {n} | {mark} |")
    return "\n".join(lines), best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=sorted(GRIDS), required=True)
    p.add_argument("--cells", default=None, help="only these cells, e.g. rigl:0.98,static:0.98")
    p.add_argument("--model", default="lenet300")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (one thread each)")
    args = p.parse_args(argv)

    grid = GRIDS[args.grid]
    if args.cells:
        wanted = {(m, float(s)) for m, s in (c.split(":") for c in args.cells.split(","))}
        grid = {cell: settings for cell, settings in grid.items() if cell in wanted}
    directory = os.path.join(RESULTS, "tuning", args.model)
    os.makedirs(directory, exist_ok=True)
    jobs = []
    for (method, sparsity), settings in grid.items():
        for setting, seed in itertools.product(settings, range(args.seeds)):
            path = os.path.join(directory, run_name(method, sparsity, setting, seed) + ".json")
            if not os.path.exists(path):
                jobs.append((dict(model=args.model, method=method, sparsity=sparsity, seed=seed,
                                  data="full", epochs=args.epochs, val=VAL), setting, path))
    print(f"{len(jobs)} runs to do ({args.jobs} at once), validation on {VAL} held-out images",
          flush=True)
    train_runs(jobs, args.jobs)
    text, best = table(grid, directory, args.seeds)
    out = os.path.join(RESULTS, f"tuning-{args.grid}.md")
    header = (f"# Validation grid `{args.grid}`: {args.model}, {args.epochs} epochs, trained on "
              f"55,000 images, scored on {VAL} held out\n\nProduced by `python benchmarks/tune.py "
              f"--grid {args.grid} --seeds {args.seeds}`. The test set is not used.\n\n")
    with open(out, "w") as f:
        f.write(header + text + "\n")
    print(text)
    for cell, setting in best.items():
        print(f"best {cell}: {setting}")


if __name__ == "__main__":
    main()
