"""Shared helpers of the benchmark scripts: timing, machine facts, writing records.

Timings are medians over repeats after a warm-up, and every speed claim is a ratio measured in
the same run: the machines here are shared and noisy, so one absolute time proves little.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# where --quick runs write: never over the committed records (the folder is git-ignored)
QUICK_RESULTS = os.path.join(RESULTS, "quick")


def results_dir(quick: bool = False) -> str:
    """The folder a run's records go to: results/, or results/quick/ for a --quick run."""
    return QUICK_RESULTS if quick else RESULTS


def median_time(fn, repeats=10, warmup=2) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_or_none():
    """PyTorch when installed (it is never a dependency), with the same thread count."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads())
    return torch


def threads() -> int:
    import numba
    return numba.get_num_threads()


def machine() -> dict:
    import numba
    import numpy as np
    import scipy
    facts = {"host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
             "numba_threads": threads(), "python": platform.python_version(),
             "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
             "date": datetime.datetime.now().isoformat(timespec="seconds")}
    torch = torch_or_none()
    facts["torch"] = torch.__version__ if torch else None
    return facts


def write_record(name: str, rows: list, table: str, extra: dict | None = None,
                 quick: bool = False) -> str:
    """Write <results>/<name>.json (facts + rows) and <results>/<name>.md (the table);
    <results> is results/, or results/quick/ for a quick run (see `results_dir`)."""
    folder = results_dir(quick)
    os.makedirs(folder, exist_ok=True)
    record = {"benchmark": name, "machine": machine(), "rows": rows, "quick": quick,
              **(extra or {})}
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(folder, f"{name}.md"), "w") as f:
        f.write(f"# {name}\n\nMachine: {record['machine']}\n\n{table}\n")
    return path


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


CONFIG_KEYS = ("lr", "weight_decay", "epochs", "val")      # TrainConfig fields a cell may set


def run_name(method, sparsity, settings, seed) -> str:
    """The record file name of one run: method, sparsity, every setting, seed."""
    extra = "".join(f"-{k}{v}" for k, v in sorted(settings.items()))
    return f"{method}-{sparsity:g}{extra}-s{seed}"


def split_settings(settings) -> tuple:
    """A cell's settings as (TrainConfig fields among CONFIG_KEYS, method options)."""
    return ({k: v for k, v in settings.items() if k in CONFIG_KEYS},
            {k: v for k, v in settings.items() if k not in CONFIG_KEYS})


def _train_and_write(job):
    """Worker: train one (TrainConfig fields, cell settings) and write its record to `path`;
    a setting that names a TrainConfig field (lr, epochs, ...) overrides the field."""
    fields, settings, path = job
    from sparsenet.train import TrainConfig, train_model
    config_fields, options = split_settings(settings)
    config = TrainConfig(progress=False, method_options=options, **{**fields, **config_fields})
    _, record = train_model(config, log=None)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    split = "val" if "val_accuracy" in record else "test"
    print(f"   {os.path.basename(path)}: {split} {100 * record[split + '_accuracy']:.2f} %  "
          f"density {record['density']:.4f}  {record['train_seconds']:.0f} s", flush=True)
    return path


def train_runs(jobs, processes=1):
    """Train [(TrainConfig fields, cell settings, record path)], `processes` at a time.

    Each worker is a fresh process on one thread (Numba and BLAS), so runs at once do not fight
    over the cores; with processes=1 the runs go one after another in this process.
    """
    if processes <= 1:
        for job in jobs:
            _train_and_write(job)
        return
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"                                   # inherited by the workers
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for _ in pool.imap_unordered(_train_and_write, jobs):
            pass
