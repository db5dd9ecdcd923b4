"""The `sparsenet` command: train | compare | demo | bench | data | info."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _option_value(text):
    """`--opt key=value` values: JSON when it parses (numbers, booleans, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_options(pairs):
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt expects key=value, got {pair!r}")
        options[key.replace("-", "_")] = _option_value(value)
    return options


def add_train_arguments(p, single_run=True):
    p.add_argument("--model", default="lenet300",
                   help="lenet300, lenet5, conv2/4/6, mlp:784-...-10, gpt:L4-D128-H4-T64[-E8-K2]")
    if single_run:
        p.add_argument("--method", default="dense", help="dense or a method from `sparsenet info`")
        p.add_argument("--sparsity", type=float, default=0.0, help="fraction of weights removed")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=0,
                   help="language models: training steps (0: --epochs passes over the text)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="auto", help="auto | subset | full | a directory")
    p.add_argument("--dataset", default="fashion-mnist",
                   choices=["fashion-mnist", "mnist", "shakespeare"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--pattern", default=None,
                   help="unstructured | block:BS | nm:N:M (sets --format and its options)")
    p.add_argument("--format", default=None, choices=["csr", "block", "nm", "masked"],
                   help="storage of sparse layers (default csr)")
    p.add_argument("--distribution", default=None, choices=["uniform", "er", "erk"],
                   help="how the sparsity is shared among layers")
    p.add_argument("--l1", type=float, default=0.0, help="L1 regularization strength (any method)")
    p.add_argument("--group-lasso", type=float, default=0.0, help="group-lasso strength (any method)")
    p.add_argument("--groups", default="rows", choices=["rows", "columns", "blocks"],
                   help="groups of the group lasso")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. --opt format=csr --opt alpha=0.3 (repeatable)")
    p.add_argument("--val", type=int, default=0, metavar="N",
                   help="hold out N training images and evaluate on them instead of the test set "
                        "(for choosing hyperparameters)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def pattern_options(pattern, format=None) -> dict:
    """--pattern unstructured | block:16 | nm:2:4 as method options (format, block_size, n, m)."""
    if pattern is None or pattern == "unstructured":
        if format in ("block", "nm") and pattern == "unstructured":
            raise ValueError(f"--pattern unstructured contradicts --format {format}")
        return {"format": format} if format else {}
    kind, *numbers = pattern.split(":")
    try:
        numbers = [int(v) for v in numbers]
    except ValueError:
        raise ValueError(f"--pattern must be unstructured, block:BS or nm:N:M, got {pattern!r}") from None
    if kind == "block" and len(numbers) == 1:
        options = {"format": "block", "block_size": numbers[0]}
    elif kind == "nm" and len(numbers) == 2:
        options = {"format": "nm", "n": numbers[0], "m": numbers[1]}
    else:
        raise ValueError(f"--pattern must be unstructured, block:BS or nm:N:M, got {pattern!r}")
    if format not in (None, options["format"]):
        raise ValueError(f"--pattern {pattern} contradicts --format {format}")
    return options


def config_from_args(args):
    from .train import TrainConfig
    options = pattern_options(args.pattern, args.format)
    if args.distribution:
        options["distribution"] = args.distribution
    options.update(_parse_options(args.opt))
    return TrainConfig(model=args.model, method=args.method, sparsity=args.sparsity,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay,
                       optimizer=args.optimizer, schedule=args.schedule, seed=args.seed,
                       data=args.data, dataset=args.dataset, device=args.device,
                       progress=not args.no_progress, method_options=options, l1=args.l1,
                       group_lasso=args.group_lasso, groups=args.groups, val=args.val,
                       steps=args.steps)


def summary_line(record) -> str:
    if "val_bpc" in record:                    # a language model's record
        from .train_lm import summary_line as lm_summary_line
        return lm_summary_line(record)
    b = record["bytes"]["total"]
    from . import metrics
    split, accuracy = metrics.evaluated_accuracy(record)
    return (f"{record['method']:>10s} {record['model']:>10s}  {split} accuracy "
            f"{100 * accuracy:.2f} %  density {record['density']:.4f}  "
            f"params {record['parameters']:,}  bytes {b:,}  "
            f"train FLOPs x{record['flops']['training_relative']:.3f}  "
            f"inference FLOPs x{record['flops']['inference_relative']:.3f}  "
            f"{record['train_seconds']:.1f} s")


def cmd_train(args):
    from . import io
    from .train import train_model
    config = config_from_args(args)
    model, record = train_model(config)
    print(summary_line(record))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"record written to {args.json}")
    if args.save:
        io.save(model, args.save)
        print(f"model written to {args.save}")


def cmd_demo(args):
    from .train import TrainConfig, train_model
    print("sparsenet demo: LeNet-300-100 on the bundled Fashion-MNIST subset "
          "(6,000 training / 1,000 test images)\n")
    records = []
    for method, sparsity in args.runs:
        config = TrainConfig(model="lenet300", method=method, sparsity=sparsity,
                             epochs=args.epochs, data="subset", progress=False)
        print(f"--- {method}" + (f" at {sparsity:.0%} sparsity" if sparsity else ""))
        records.append(train_model(config, log=print)[1])
    print()
    print(demo_table(records))


def demo_table(records) -> str:
    """Side by side: accuracy, weights stored, bytes held, FLOPs relative to dense, time."""
    header = (f"{'method':>10} {'sparsity':>8} {'test acc':>9} {'params':>9} {'bytes':>11} "
              f"{'train FLOPs':>11} {'infer FLOPs':>11} {'seconds':>8}")
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(f"{r['method']:>10} {r['sparsity']:>8.2%} {r['test_accuracy']:>9.2%} "
                     f"{r['parameters']:>9,} {r['bytes']['total']:>11,} "
                     f"{r['flops']['training_relative']:>10.3f}x "
                     f"{r['flops']['inference_relative']:>10.3f}x {r['train_seconds']:>8.1f}")
    lines.append("bytes: weights (values and indices) + gradients + optimizer state; "
                 "FLOPs relative to the dense model")
    return "\n".join(lines)


def cmd_info(args):
    import platform

    import numba
    import numpy as np
    import scipy

    from . import __version__, backend
    from .algorithms import available
    from .data import find_data
    print(f"sparsenet {__version__} on Python {platform.python_version()} ({platform.machine()})")
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}")
    print(f"CPU cores: {os.cpu_count()}, numba threads: {numba.get_num_threads()}, "
          f"threading layer: {numba.config.THREADING_LAYER}, "
          f"jit disabled: {bool(numba.config.DISABLE_JIT)}")
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            print(f"BLAS: {pool.get('internal_api')} with {pool.get('num_threads')} threads")
    except ImportError:
        print("BLAS threads: unknown (install threadpoolctl to see them)")
    cp = backend.cupy_module()
    if cp is None:
        print("GPU: none (CuPy not installed or no CUDA device)")
    else:
        props = cp.cuda.runtime.getDeviceProperties(0)
        print(f"GPU: {props['name'].decode()} (CuPy {cp.__version__})")
    for name in ("fashion-mnist", "mnist"):
        try:
            print(f"data {name}: {find_data(name)}")
        except FileNotFoundError as e:
            print(f"data {name}: not found ({e})")
    print(f"methods: {', '.join(available())}")


def cmd_data(args):
    from .data import download_dataset
    path = download_dataset(args.dataset, dest=args.dest, base_url=args.base_url)
    print(f"{args.dataset} verified and stored in {path}")


def cmd_bench(args):
    import runpy
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(here, "benchmarks", f"{args.which}.py")
    if not os.path.exists(script):
        raise SystemExit(f"benchmark script {script} not found: benchmarks run from a source "
                         "checkout of sparsenet")
    sys.argv = [script] + args.rest
    runpy.run_path(script, run_name="__main__")


def _demo_runs(text):
    runs = []
    for item in text.split(","):
        method, _, sparsity = item.partition(":")
        runs.append((method, float(sparsity) if sparsity else 0.0))
    return runs


def build_parser():
    parser = argparse.ArgumentParser(prog="sparsenet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model with one method")
    add_train_arguments(p)
    p.add_argument("--json", help="write the run record to this file")
    p.add_argument("--save", help="write the trained model (safetensors) to this file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="a quick run on the bundled subset")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--runs", type=_demo_runs, default=_demo_runs("dense,rigl:0.9"),
                   help="comma-separated METHOD[:SPARSITY] list")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, threads, GPU, data location, methods")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("data", help="data set management")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="fetch the full data set and verify its SHA-256")
    d.add_argument("--dataset", default="fashion-mnist")
    d.add_argument("--dest", default=None, help="directory (default: the user cache)")
    d.add_argument("--base-url", default=None)
    d.set_defaults(func=cmd_data)

    p = sub.add_parser("bench", help="run a script from benchmarks/ (source checkout)")
    p.add_argument("which", help="kernels | train_speed | accuracy")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    from .compare import add_compare_parser
    add_compare_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, KeyError, FloatingPointError) as e:
        print(f"sparsenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
