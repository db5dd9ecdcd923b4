"""Shared fixtures: a seeded generator, fast mode, and a fixed library seed for every test.

The gradient-check helper lives in `tests/gradcheck.py` (import it with
`from gradcheck import gradcheck`); this directory is put on `sys.path` so that works however
pytest was started.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

os.environ.setdefault("MPLBACKEND", "Agg")   # plots in tests never need a display


def _cuda_device_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:                 # no CuPy, or no driver / device
        return False


# Without a GPU the gpu kernels run in Numba's CUDA simulator (tests/gpu_target.py). The switch
# is read when Numba is first imported, so it is set here, before sparsenet imports Numba.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _cuda_device_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import sparsenet  # noqa: E402
from gradcheck import gradcheck as _gradcheck  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_library():
    """Every test starts from the same library random state, whatever ran before it."""
    sparsenet.manual_seed(0)
    yield


@pytest.fixture
def rng():
    """A fresh NumPy generator with a fixed seed."""
    return np.random.default_rng(0)


@pytest.fixture
def fast_mode(monkeypatch):
    """SPARSENET_FAST=1 for this test: small data, at most two epochs."""
    monkeypatch.setenv("SPARSENET_FAST", "1")


@pytest.fixture
def gradcheck():
    """The central-difference gradient check of `tests/gradcheck.py`, as a fixture."""
    return _gradcheck


@pytest.fixture
def one_thread():
    """Kernels and BLAS on one thread for the test (`pytestmark = pytest.mark.usefixtures(
    "one_thread")`): tests that multiply tiny matrices many times would, on a loaded 2-core
    machine, spend far more handing them to threads than on the work. Results do not depend
    on it."""
    import contextlib

    import numba
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except ImportError:                    # threadpoolctl is optional
        limits = contextlib.nullcontext()
    with limits:
        yield
    numba.set_num_threads(threads)
