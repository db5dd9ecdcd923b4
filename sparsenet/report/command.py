"""The `sparsenet report` command line (registered by cli.build_parser)."""
from __future__ import annotations

import os

__all__ = ["add_report_parser"]

DESCRIPTION = """what a set of run records says: accuracy against sparsity per method (mean and
spread over seeds), FLOPs and bytes, per-class accuracy change against dense with bootstrap
intervals, and pruning-identified exemplars (Hooker et al. 2019), written to OUT as report.md
with PNG figures, report.html (one file, figures embedded, opens offline) and report.json"""


def cmd_report(args):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the report draws its figures with matplotlib, which is not "
                         "installed: pip install 'sparsenet[plots]'") from None
    from ..compare import check_out_dir
    from . import analyse, write_report
    if args.samples < 100:
        raise ValueError(f"--samples must be at least 100 (bootstrap resamples), got {args.samples}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file, not a folder: the report's files go "
                         "into a folder")
    report, records = analyse(args.runs, reference=args.reference, samples=args.samples)
    check_out_dir(args.out)                       # made only once there is a report to write
    paths = write_report(report, args.out, records)
    for kind in ("markdown", "html", "json"):
        print(f"{kind:8s} {os.path.relpath(paths[kind])}")


def add_report_parser(sub, formatter):
    p = sub.add_parser("report", help="a report (markdown, HTML, JSON) from run records",
                       description=DESCRIPTION, formatter_class=formatter)
    p.add_argument("runs", nargs="+", metavar="RUNS",
                   help="run records (.json) or folders of them (searched recursively)")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--reference", default=None, metavar="LABEL",
                   help="the dense setting to compare against, when the records hold several "
                        "(e.g. 'dense[weight_decay=0.0005]')")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    p.set_defaults(func=cmd_report)
    return p
