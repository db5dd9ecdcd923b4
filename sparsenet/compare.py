"""`sparsenet compare`: several methods x sparsities x seeds, one table and one plot.

    sparsenet compare --methods gmp,snip,random --sparsity 0.9,0.98 --seeds 2 --out runs/cmp

Every run's record is written to OUT/<method>-<sparsity>-s<seed>.json; `dense` is trained once per
seed as the reference. The table (OUT/table.md) gives the mean and spread of test accuracy over
seeds; the plot (OUT/accuracy_vs_sparsity.png, when matplotlib is installed) shows accuracy
against sparsity per method.
"""
from __future__ import annotations

import json
import os
import statistics

from . import metrics


def run_grid(base_config, methods, sparsities, seeds, out_dir, log=print):
    """Train every (method, sparsity, seed); returns the list of records (also written to disk)."""
    import dataclasses

    from .train import load_arrays, train_model
    os.makedirs(out_dir, exist_ok=True)
    data = load_arrays(base_config.data, base_config.dataset)
    records = []
    cells = [("dense", 0.0)] + [(m, s) for m in methods if m != "dense" for s in sparsities]
    for method, sparsity in cells:
        for seed in range(seeds):
            config = dataclasses.replace(base_config, method=method, sparsity=sparsity, seed=seed)
            path = os.path.join(out_dir, f"{method}-{sparsity:g}-s{seed}.json")
            if log:
                log(f"== {method} sparsity {sparsity:g} seed {seed}")
            _, record = train_model(config, log=None, data=data)
            with open(path, "w") as f:
                json.dump(record, f, indent=1)
            if log:
                split, accuracy = metrics.evaluated_accuracy(record)
                log(f"   {split} accuracy {100 * accuracy:.2f} %  "
                    f"density {record['density']:.4f}  {record['train_seconds']:.1f} s")
            records.append(record)
    return records


def summarize(records) -> list:
    """One row per (method, target sparsity): mean/std accuracy, density, FLOPs, seeds."""
    groups = {}
    for r in records:
        # a format with a fixed density (N:M) is run without --sparsity: use what it reached
        sparsity = r["target_sparsity"] or round(r["sparsity"], 3)
        groups.setdefault((r["method"], sparsity), []).append(r)
    rows = []
    for (method, sparsity), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        accs = [100 * metrics.evaluated_accuracy(r)[1] for r in rs]
        rows.append({"method": method, "sparsity": sparsity, "seeds": len(rs),
                     "accuracy_mean": statistics.mean(accs),
                     "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "density": statistics.mean(r["density"] for r in rs),
                     "train_flops": statistics.mean(r["flops"]["training_relative"] for r in rs),
                     "inference_flops": statistics.mean(r["flops"]["inference_relative"] for r in rs)})
    return rows


def markdown(rows, dense_mean=None) -> str:
    lines = ["| method | sparsity | density | test accuracy (%) | vs dense | train FLOPs | "
             "inference FLOPs | seeds |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = "" if dense_mean is None else f"{r['accuracy_mean'] - dense_mean:+.2f}"
        lines.append(f"| {r['method']} | {r['sparsity']:g} | {r['density']:.4f} | "
                     f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f} | {delta} | "
                     f"{r['train_flops']:.3f} | {r['inference_flops']:.3f} | {r['seeds']} |")
    return "\n".join(lines)


def plot(rows, path, title="") -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = sorted((r["sparsity"], r["accuracy_mean"], r["accuracy_std"])
                     for r in rows if r["method"] == method)
        if method == "dense":
            ax.axhline(pts[0][1], color="k", linestyle="--", label="dense")
            continue
        xs, ys, es = zip(*pts)
        ax.errorbar([100 * x for x in xs], ys, yerr=es, marker="o", capsize=3, label=method)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def cmd_compare(args):
    from .cli import config_from_args
    methods = [m for m in args.methods.split(",") if m]
    sparsities = [float(s) for s in args.sparsities.split(",") if s]
    for s in sparsities:
        if not 0 < s < 1:
            raise ValueError(f"--sparsity values must be in (0, 1), got {s}")
    from .algorithms import available
    for m in methods:
        if m not in available():
            raise ValueError(f"unknown method {m!r}: expected one of {', '.join(available())}")
    if args.seeds <= 0:
        raise ValueError(f"--seeds must be positive, got {args.seeds}")
    args.sparsity = 0.0
    args.method = "dense"
    base = config_from_args(args)
    from .data.text import TEXT_DATASETS
    if base.dataset in TEXT_DATASETS or base.model.startswith("gpt:"):
        raise ValueError("compare tabulates the accuracy of image classifiers; for language "
                         "models run `sparsenet train` per method, or benchmarks/lm.py")
    records = run_grid(base, methods, sparsities, args.seeds, args.out)
    rows = summarize(records)
    dense = [r for r in rows if r["method"] == "dense"]
    table = markdown(rows, dense[0]["accuracy_mean"] if dense else None)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"# {base.model} on {base.dataset}, {records[0]['epochs']} epochs\n\n{table}\n")
    print(table)
    png = os.path.join(args.out, "accuracy_vs_sparsity.png")
    if plot(rows, png, f"{base.model}: accuracy vs sparsity"):
        print(f"plot written to {png}")


def add_compare_parser(sub):
    from .cli import add_train_arguments
    p = sub.add_parser("compare", help="methods x sparsities x seeds: a table and a plot")
    add_train_arguments(p, single_run=False)
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--sparsity", dest="sparsities", default="0.9", help="comma-separated, e.g. 0.9,0.98")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", default="runs/compare", help="directory for records, table and plot")
    p.set_defaults(func=cmd_compare)
