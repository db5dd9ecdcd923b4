"""`sparsenet report RUNS... --out DIR`: what a set of run records says, as markdown with PNG
figures, one self-contained HTML file and report.json (every number, for checking).

    from sparsenet.report import build_report
    paths = build_report(["benchmarks/results/accuracy/report-lenet300"], "out/report")

records.py reads and checks the records, stats.py computes (bootstrap intervals, exemplars),
build.py assembles the numbers, figures.py and render.py write them.
"""
from __future__ import annotations

from .build import analyse
from .records import ReportError
from .render import write_report

__all__ = ["build_report", "analyse", "write_report", "ReportError"]


def build_report(paths, out_dir, reference=None, samples=None) -> dict:
    """Analyse the records under `paths` and write the report into `out_dir`; returns the
    written files' paths ({"markdown", "html", "json"})."""
    from .stats import BOOTSTRAP_SAMPLES
    report, records = analyse(paths, reference=reference, samples=samples or BOOTSTRAP_SAMPLES)
    return write_report(report, out_dir, records)
