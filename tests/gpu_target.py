"""Where the gpu kernel tests run: on an NVIDIA GPU with CuPy arrays when there is one, else in
Numba's CUDA simulator on NumPy arrays (conftest.py turns it on before Numba is imported).

`dev(a)` puts a NumPy array where the gpu kernels read it, `host(a)` brings a result back.
Tests marked `needs_gpu` need the real device (CuPy and an engine on CUDA): skipped elsewhere.
"""
import numpy as np
import pytest
from numba import config

SIMULATOR = bool(config.ENABLE_CUDASIM)


def _cupy_with_a_device():
    if SIMULATOR:
        return None
    try:
        import cupy
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:
        return None


cupy = _cupy_with_a_device()
TARGET = "simulator" if SIMULATOR else "gpu" if cupy is not None else None

needs_target = pytest.mark.skipif(TARGET is None, reason="no GPU and the CUDA simulator is off")
needs_gpu = pytest.mark.skipif(cupy is None, reason="needs an NVIDIA GPU with CuPy")


def dev(a):
    """NumPy array -> the array the gpu kernels take here (itself in the simulator)."""
    return cupy.asarray(a) if cupy is not None and isinstance(a, np.ndarray) else a


def host(a):
    """A kernel result as a NumPy array."""
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy.asnumpy(a)
    return a


def kernels():
    """sparsenet.kernels.gpu (imports numba.cuda: only inside tests that run)."""
    from sparsenet.kernels import gpu
    return gpu
