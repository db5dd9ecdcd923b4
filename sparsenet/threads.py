"""One thread policy: the BLAS pool and the Numba pool never fight over the cores.

Why it is needed. OpenBLAS (behind NumPy's matrix products) and Numba (behind the sparse kernels)
each keep a pool of worker threads, and each pool's workers spin for a while after a call,
waiting for the next one. A training step alternates the two (a sparse layer, then a dense one,
then the sparse backward...), so with both pools sized to the machine their spinning workers
take the cores from each other: on 2 cores, SET on mlp:784-1000-1000-1000-10 ran at 5,200
samples/s with both pools at 2 threads and at 20,000 with BLAS on one thread.

The rule. One pool owns the cores for a run, the other runs on the calling thread alone:
- a model whose weight products run mostly in the sparse kernels (CSR, Block, N:M layers) gives
  the cores to Numba, and BLAS works single-threaded on what is left (the small dense layers);
- a model whose products run mostly in BLAS (dense layers, and the masked-dense format, which
  computes densely) gives the cores to BLAS, and Numba runs on one thread.
"Mostly" is counted in multiply-adds per sample. The number of cores is `threads` (`--threads N`
on the command line), by default the cores this process may run on.

BLAS pools are set at run time with threadpoolctl (the well-kept library for exactly this);
Numba's with `numba.set_num_threads`, which can lower its pool below the size it started with
(NUMBA_NUM_THREADS, the machine's cores by default) but not raise it above.
"""
from __future__ import annotations

import os

import numba
from threadpoolctl import threadpool_info, threadpool_limits

_applied = {"threads": None, "owner": None, "reason": "not applied yet (the libraries' defaults)"}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), which a container may set below
    os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                   # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def check_threads(threads) -> int:
    """`threads` as an int in [1, Numba's pool size], or the available cores when None."""
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return max(1, min(available_cores(), limit))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if threads > limit:
        raise ValueError(f"threads={threads} is more than Numba's pool of {limit} threads "
                         f"(started from NUMBA_NUM_THREADS or the machine's {os.cpu_count()} "
                         f"cores); ask for at most {limit}")
    return threads


def blas_threads() -> int | None:
    """Threads of the BLAS pool NumPy uses (None when threadpoolctl finds no BLAS)."""
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return pools[0]["num_threads"] if pools else None


def kernel_share(model, positions=None) -> float:
    """Fraction of the model's multiply-adds per sample that run in the sparse kernels.

    positions: {layer name: output positions per sample} (`metrics.layer_positions`), which
    convolutions need; left out, every layer counts once (right for fully connected models).
    """
    from . import metrics
    from .nn.sparse_layers import _SparseLayer
    kernels = blas = 0
    for name, module in model.named_modules():
        counts = metrics.weight_counts(module)
        if counts is None:
            continue
        times = (positions or {}).get(name, 1)
        if isinstance(module, _SparseLayer) and module.format != "masked":
            kernels += counts[0] * times         # stored weights only
        else:
            blas += counts[1] * times            # dense and masked layers compute every weight
    return kernels / (kernels + blas) if kernels + blas else 0.0


def set_threads(threads=None, owner="numba") -> dict:
    """Give `threads` cores to one pool ("numba" or "blas") and one thread to the other."""
    if owner not in ("numba", "blas"):
        raise ValueError(f"owner must be 'numba' or 'blas', got {owner!r}")
    n = check_threads(threads)
    numba.set_num_threads(n if owner == "numba" else 1)
    threadpool_limits(limits=n if owner == "blas" else 1, user_api="blas")
    _applied.update(threads=n, owner=owner)
    return current()


def apply_policy(model, threads=None, positions=None) -> dict:
    """The policy of the module docstring for `model`; returns what was set (for records)."""
    share = kernel_share(model, positions)
    owner = "numba" if share > 0.5 else "blas"
    set_threads(threads, owner)
    _applied["reason"] = (f"{100 * share:.0f} % of the multiply-adds run in the sparse kernels: "
                          f"{'Numba' if owner == 'numba' else 'BLAS'} gets the cores")
    return current()


def current() -> dict:
    """What the pools are set to now, and why."""
    return {"threads": _applied["threads"], "owner": _applied["owner"],
            "numba_threads": numba.get_num_threads(), "blas_threads": blas_threads(),
            "numba_threading_layer": numba.config.THREADING_LAYER,
            "cores_available": available_cores(), "reason": _applied["reason"]}
