"""The `sparsenet` command: train | compare | report | methods | compress | evaluate | demo | bench | data |
info.

Every user or environment error (a bad flag, a missing file, no GPU, no network) ends with one
line on stderr, `sparsenet COMMAND: error: ...`, and exit status 2, never a traceback; warnings
(a run too short for its schedule, a default taken for a flag left out) print one line each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default, except the non-informative None and False."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument error is one line too (not the usage block), pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
        key = key.replace("-", "_")
        if key in options:
            raise ValueError(f"--opt {key} is given twice")
        options[key] = _option_value(value)
    return options


def add_train_arguments(p, single_run=True):
    p.add_argument("--model", default="lenet300",
                   help="lenet300, lenet5, conv2/4/6, mlp:784-...-10, gpt:L4-D128-H4-T64[-E8-K2]")
    if single_run:
        p.add_argument("--method", default="dense",
                       help="dense or a method from `sparsenet methods`")
        p.add_argument("--sparsity", type=float, default=None,
                       help="fraction of weights removed; left out, a sparse method trains at "
                            "its own default (`sparsenet methods NAME`), and says so")
    p.add_argument("--epochs", type=int, default=20, help="training epochs")
    p.add_argument("--steps", type=int, default=0,
                   help="language models: training steps (0: --epochs passes over the text)")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (peak of the schedule)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"],
                   help="the optimizer")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"],
                   help="learning-rate schedule")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed" + ("" if single_run else " of the first run"))
    p.add_argument("--data", default="auto", help="auto | subset | full | a directory")
    p.add_argument("--dataset", default="fashion-mnist",
                   choices=["fashion-mnist", "mnist", "shakespeare"],
                   help="the data set")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where to train (cuda needs CuPy and an NVIDIA GPU)")
    p.add_argument("--pattern", default=None,
                   help="unstructured | block:BS | nm:N:M (sets --format and its options)")
    p.add_argument("--format", default=None, choices=["csr", "block", "nm", "masked"],
                   help="storage of sparse layers (default: the method's, csr for most)")
    p.add_argument("--distribution", default=None, choices=["uniform", "er", "erk"],
                   help="how the sparsity is shared among layers (default: the method's)")
    p.add_argument("--l1", type=float, default=0.0, help="L1 regularization strength (any method)")
    p.add_argument("--group-lasso", type=float, default=0.0, help="group-lasso strength (any method)")
    p.add_argument("--groups", default="rows", choices=["rows", "columns", "blocks"],
                   help="groups of the group lasso")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. --opt alpha=0.3 --opt delta_t=200 (repeatable; "
                        "`sparsenet methods NAME` lists them)")
    p.add_argument("--val", type=int, default=0, metavar="N",
                   help="hold out N training images and evaluate on them instead of the test set "
                        "(for choosing hyperparameters)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="cores to use (default: all this process may run on); they go to the "
                        "sparse kernels (Numba) or to BLAS, whichever does most of the work")
    if single_run:
        p.add_argument("--max-steps", type=int, default=None, metavar="N",
                       help="stop after N optimizer steps and write the record (to probe a long "
                            "run; the schedules still span --epochs)")


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


# method options that have a flag of their own: giving both is a conflict
_FLAG_OPTIONS = {"sparsity": "--sparsity", "format": "--format/--pattern",
                 "block_size": "--pattern", "n": "--pattern", "m": "--pattern",
                 "distribution": "--distribution"}


def method_options_from_args(args) -> dict:
    """--pattern, --format, --distribution and --opt as one dict; an option given twice (a flag
    and --opt) is refused rather than one silently overriding the other."""
    options = pattern_options(args.pattern, args.format)
    if args.distribution:
        options["distribution"] = args.distribution
    extra = _parse_options(args.opt)
    for key, value in extra.items():
        flag = _FLAG_OPTIONS.get(key)
        if key == "sparsity":
            raise ValueError(f"--opt sparsity={value}: give the sparsity with --sparsity")
        if key in options:
            raise ValueError(f"--opt {key}={value} conflicts with {flag} (which sets "
                             f"{key}={options[key]!r}): give it once")
        options[key] = value
    return options


def config_from_args(args):
    from .train import TrainConfig
    options = method_options_from_args(args)
    return TrainConfig(model=args.model, method=args.method, sparsity=args.sparsity,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay,
                       optimizer=args.optimizer, schedule=args.schedule, seed=args.seed,
                       data=args.data, dataset=args.dataset, device=args.device,
                       progress=not args.no_progress, method_options=options, l1=args.l1,
                       group_lasso=args.group_lasso, groups=args.groups, val=args.val,
                       threads=args.threads, max_steps=getattr(args, "max_steps", None),
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


def _positive_steps(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of steps, got {value}")
    return value


def _positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, "
                                         f"got {text}")
    return value


def train_outputs(args):
    """Check every destination before training (one clear error, exit 2); the checkpointer."""
    from .checkpoint import Checkpointer
    from .files import check_output_file
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.save is not None:
        check_output_file(args.save, "--save")
    if args.checkpoint_every is not None and not (args.checkpoint or args.resume):
        raise ValueError("--checkpoint-every needs --checkpoint DIR (or --resume DIR)")
    if args.resume and args.checkpoint and os.path.realpath(args.resume) != \
            os.path.realpath(args.checkpoint):
        raise ValueError("--resume DIR goes on checkpointing into DIR; give --checkpoint only "
                         "for a new run")
    if args.resume is not None or args.checkpoint is not None:
        return Checkpointer(args.resume or args.checkpoint, every=args.checkpoint_every,
                            resume=bool(args.resume))
    return None


def write_outputs(args, model, record):
    """The record and the model, each written even if the other cannot be."""
    from . import io
    from .files import OutputError, atomic_write_json
    failed = []
    for path, what, write in ((args.json, "record", lambda p: atomic_write_json(p, record)),
                              (args.save, "model", lambda p: io.save(model, p))):
        if path is None:
            continue
        try:
            write(path)
            print(f"{what} written to {path}")
        except (OSError, ValueError) as err:
            failed.append(f"the {what} could not be written to {path} "
                          f"({getattr(err, 'strerror', None) or err})")
    if failed:
        raise OutputError("; ".join(failed))


def cmd_train(args):
    config = config_from_args(args)
    if args.mpi_timeout is not None and not args.distributed:
        raise ValueError("--mpi-timeout is for --distributed runs")
    if args.distributed:            # this process is one rank of an MPI job (distributed_run.py)
        from .distributed_run import command
        return command(args, config, train_and_write, train_outputs)
    train_and_write(args, config, train_outputs(args))


def train_and_write(args, config, checkpointer, log=print, lead=True):
    """Train, print the summary and write the outputs; `lead=False` (a distributed run's
    ranks other than 0) trains in step and neither prints nor writes."""
    from .checkpoint import Interrupted
    from .train import train_model
    try:
        model, record = train_model(config, log=log, checkpointer=checkpointer)
    except KeyboardInterrupt as stop:
        if not lead:
            raise SystemExit(130) from None
        if isinstance(stop, Interrupted):
            message = str(stop)
        elif checkpointer is not None and checkpointer.saved_steps is not None:
            message = (f"interrupted; the checkpoint in {checkpointer.directory} holds "
                       f"{checkpointer.saved_steps} steps: continue with --resume "
                       f"{checkpointer.directory}")
        else:
            message = "interrupted; nothing was saved (--checkpoint DIR keeps a run)"
        print(f"sparsenet train: {message}", file=sys.stderr)
        raise SystemExit(130) from None
    if lead:
        print(summary_line(record))
        write_outputs(args, model, record)


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
    from threadpoolctl import threadpool_info

    from . import threads
    cores = threads.check_threads(args.threads)
    print(f"CPU cores: {os.cpu_count()} ({threads.available_cores()} available to this process), "
          f"numba pool: {numba.config.NUMBA_NUM_THREADS} threads, threading layer: "
          f"{numba.config.THREADING_LAYER}, jit disabled: {bool(numba.config.DISABLE_JIT)}")
    for pool in threadpool_info():
        print(f"BLAS: {pool.get('internal_api')} {pool.get('version')} with "
              f"{pool.get('num_threads')} threads ({pool.get('threading_layer')})")
    print(f"thread policy: training uses {cores} core(s){' (--threads)' if args.threads else ''}; "
          f"they go to the sparse kernels (Numba) when sparse layers do most of the multiply-adds, "
          f"with BLAS on one thread, and to BLAS otherwise, with Numba on one thread "
          f"(sparsenet/threads.py says why)")
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


def cmd_methods(args):
    from .algorithms.base import available, method_class
    from .algorithms.options import format_options_table
    names = [args.name] if args.name else available()
    for name in names:
        cls = method_class(name)                    # an unknown name: ValueError, the known ones
        print(format_options_table(name, cls))
        if len(names) > 1:
            print()
    if not args.name:
        print("Pass any option with --opt KEY=VALUE; `sparsenet methods NAME` shows one method.")


def cmd_data(args):
    from .data import download_dataset
    try:
        path = download_dataset(args.dataset, dest=args.dest, base_url=args.base_url,
                                progress=not args.no_progress and sys.stderr.isatty(),
                                timeout=args.timeout, max_seconds=args.max_seconds)
    except NotImplementedError as e:           # no recorded hashes (MNIST): a user's choice
        raise ValueError(f"--dataset {args.dataset}: {e}") from None
    print(f"{args.dataset} verified and stored in {path}")


def cmd_bench(args):
    import runpy
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(here, "benchmarks", f"{args.which}.py")
    if not os.path.exists(script):
        raise ValueError(f"no benchmark script {args.which!r} ({script}): benchmarks run from a "
                         "source checkout of sparsenet (kernels | train_speed | accuracy | tune)")
    sys.argv = [script] + args.rest
    runpy.run_path(script, run_name="__main__")


def _demo_runs(text):
    runs = []
    for item in text.split(","):
        method, _, sparsity = item.partition(":")
        try:
            runs.append((method, float(sparsity) if sparsity else None))
        except ValueError:
            raise argparse.ArgumentTypeError(f"METHOD[:SPARSITY] expected, got {item!r}") from None
    return runs


def build_parser():
    from . import __version__
    parser = Parser(prog="sparsenet", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"sparsenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help):
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    p = command("train", "train one model with one method")
    add_train_arguments(p)
    p.add_argument("--json", help="write the run record to this file")
    p.add_argument("--save", help="write the trained model (safetensors) to this file")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="save the run in DIR as it goes (every epoch, and on Ctrl-C)")
    p.add_argument("--checkpoint-every", type=_positive_steps, metavar="N",
                   help="also save every N steps")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run saved in DIR (same settings), checkpointing there")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an MPI job: mpiexec -n N sparsenet "
                        "train ... --distributed (needs the mpi extra)")
    p.add_argument("--mpi-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="with --distributed: how long a rank waits for the others in one "
                        "collective before it ends the job (default 300)")
    p.set_defaults(func=cmd_train)

    p = command("methods", "every method's options, with their defaults and sources")
    p.add_argument("name", nargs="?", default=None, help="one method (default: all)")
    p.set_defaults(func=cmd_methods)

    p = command("demo", "a quick run on the bundled subset")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run")
    p.add_argument("--runs", type=_demo_runs, default="dense,rigl:0.9",
                   help="comma-separated METHOD[:SPARSITY] list")
    p.set_defaults(func=cmd_demo)

    p = command("info", "versions, threads, GPU, data location, methods")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="show the thread policy for N cores")
    p.set_defaults(func=cmd_info)

    p = command("data", "data set management")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="fetch the full data set and verify its SHA-256",
                            formatter_class=HelpFormatter)
    d.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"],
                   help="the data set")
    d.add_argument("--dest", default=None, help="directory (default: the user cache)")
    d.add_argument("--base-url", default=None, help="an https:// mirror of the four files "
                                                     "(default: the data set's own host)")
    d.add_argument("--timeout", type=float, default=60.0,
                   help="seconds without progress before a connection is given up")
    d.add_argument("--max-seconds", type=float, default=1800.0,
                   help="overall deadline of each file's download, in seconds")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_data)

    p = command("bench", "run a script from benchmarks/ (source checkout)")
    p.add_argument("which", help="kernels | train_speed | accuracy")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the script's own arguments")
    p.set_defaults(func=cmd_bench)

    from .compare import add_compare_parser
    add_compare_parser(sub, HelpFormatter)
    from .compress_cli import add_compress_parser
    add_compress_parser(sub, HelpFormatter)
    from .report.command import add_report_parser
    add_report_parser(sub, HelpFormatter)
    return parser


def _user_errors() -> tuple:
    """The exceptions that mean bad input or a hostile environment, not a bug of sparsenet."""
    from safetensors import SafetensorError

    from .data import DownloadError
    return (ValueError, TypeError, KeyError, OSError, FloatingPointError, DownloadError,
            SafetensorError)


def _one_line(error) -> str:
    text = str(error) if str(error) else type(error).__name__
    if isinstance(error, KeyError) and error.args:          # str(KeyError) adds quotes
        text = str(error.args[0])
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    name = " ".join(["sparsenet", args.command] + ([args.data_command]
                                                    if getattr(args, "data_command", None) else []))

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"{name}: warning: {_one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=UserWarning)   # ours: each one once
        warnings.showwarning = show_warning
        try:
            args.func(args)
        except BrokenPipeError:                 # `sparsenet methods | head`: not an error
            sys.stdout = open(os.devnull, "w")
            return 0
        except _user_errors() as e:
            print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
