"""`sparsenet compare`: several methods x sparsities x seeds, one table and one plot.

    sparsenet compare --methods gmp,snip,random --sparsity 0.9,0.98 --seeds 2 --out runs/cmp

Every run's record is written to OUT/<method>-<sparsity>-s<seed>.json; `dense` is trained once per
seed as the reference (without the sparse methods' --pattern/--format/--opt options). The seeds
are --seed, --seed + 1, ... (--seeds of them). The table (OUT/table.md) gives the mean and spread of test accuracy over
seeds; the plot (OUT/accuracy_vs_sparsity.png, when matplotlib is installed) shows accuracy
against sparsity per method.
"""
from __future__ import annotations

import json
import os
import statistics

from . import metrics


def check_out_dir(out_dir):
    """The output folder exists or can be made, and is a folder: before any training."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file, not a folder: the records, table and plot "
                         "go into a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out_dir}: cannot create the folder ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"--out {out_dir}: the folder is not writable")


def run_grid(base_config, methods, sparsities, seeds, out_dir, log=print, first_seed=0):
    """Train every (method, sparsity, seed) for the seeds first_seed .. first_seed + seeds - 1;
    returns the list of records (also written to disk)."""
    import dataclasses

    from .train import load_arrays, train_model
    check_out_dir(out_dir)
    data = load_arrays(base_config.data, base_config.dataset)
    records = []
    cells = [("dense", None)] + [(m, s) for m in methods if m != "dense" for s in sparsities]
    for method, sparsity in cells:
        for seed in range(first_seed, first_seed + seeds):
            options = {} if method == "dense" else base_config.method_options
            config = dataclasses.replace(base_config, method=method, sparsity=sparsity, seed=seed,
                                         method_options=dict(options))
            path = os.path.join(out_dir, f"{method}-{sparsity or 0:g}-s{seed}.json")
            if log:
                log(f"== {method} sparsity {sparsity or 0:g} seed {seed}")
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
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    import dataclasses
    args.sparsity, args.method = None, "dense"
    base = config_from_args(args)
    for m in methods:                   # bad flags or options fail here, before any work
        sparse = m != "dense"
        dataclasses.replace(base, method=m, sparsity=sparsities[0] if sparse else None,
                            method_options=base.method_options if sparse else {}).validate()
    check_out_dir(args.out)
    records = run_grid(base, methods, sparsities, args.seeds, args.out, first_seed=args.seed)
    rows = summarize(records)
    dense = [r for r in rows if r["method"] == "dense"]
    table = markdown(rows, dense[0]["accuracy_mean"] if dense else None)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"# {base.model} on {base.dataset}, {records[0]['epochs']} epochs\n\n{table}\n")
    print(table)
    png = os.path.join(args.out, "accuracy_vs_sparsity.png")
    if plot(rows, png, f"{base.model}: accuracy vs sparsity"):
        print(f"plot written to {png}")


def add_compare_parser(sub, formatter_class=None):
    from .cli import add_train_arguments
    help = "methods x sparsities x seeds: a table and a plot"
    p = sub.add_parser("compare", help=help, description=help, formatter_class=formatter_class)
    add_train_arguments(p, single_run=False)
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--sparsity", dest="sparsities", default="0.9", help="comma-separated, e.g. 0.9,0.98")
    p.add_argument("--seeds", type=int, default=2, help="runs per cell, seeds --seed, --seed + 1, ...")
    p.add_argument("--out", default="runs/compare", help="directory for records, table and plot")
    p.set_defaults(func=cmd_compare)
