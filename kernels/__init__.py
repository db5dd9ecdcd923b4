"""sparsenet.kernels: flat sparse kernels on raw arrays, one dispatch point.

- ``reference``: plain NumPy, slow, obviously right. It is the spec.
- ``cpu``: Numba kernels with the same names and signatures.
- ``gpu``: CUDA kernels written with Numba's CUDA target, launched on CuPy arrays
  (imported only when CuPy arrays arrive: it imports ``numba.cuda``).

Kernels take raw arrays and an explicit ``out`` and return ``out``; there are
no tensors, no autograd and no objects here. ``get_backend(*arrays)`` picks
the module to call for the arrays at hand.
"""

import importlib

import numpy as np

from . import cpu, reference
from .cpu import KERNELS, check_bsr, check_csr, check_nm

__all__ = ["get_backend", "cpu", "reference", "KERNELS", "check_csr", "check_bsr", "check_nm"]


def _is_cupy_array(a):
    # Looking at the type's module avoids importing CuPy for NumPy arrays.
    return type(a).__module__.split(".")[0] == "cupy"


def get_backend(*arrays):
    """The kernel module for these arrays: ``cpu`` for NumPy arrays, ``gpu``
    for CuPy arrays (if ``sparsenet.kernels.gpu`` provides the kernels).

    Mixing NumPy and CuPy arrays is an error (TypeError), and so is an array
    of any other type.
    """
    if not arrays:
        raise TypeError("get_backend: expected at least one array")
    on_gpu = [_is_cupy_array(a) for a in arrays]
    if any(on_gpu):
        if not all(on_gpu):
            kinds = ", ".join(type(a).__name__ for a in arrays)
            raise TypeError(f"arrays: expected all NumPy or all CuPy arrays, got a mix ({kinds})")
        return _gpu_backend()
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"arrays[{i}]: expected a numpy.ndarray or cupy.ndarray, got {type(a).__name__}")
    return cpu


def _gpu_backend():
    # Imported lazily: `import sparsenet.kernels` must never require CuPy.
    try:
        gpu = importlib.import_module(".gpu", __name__)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"CuPy arrays were given but the gpu backend cannot be imported: {exc}") from exc
    if not hasattr(gpu, "csr_spmm"):
        raise RuntimeError("CuPy arrays were given but sparsenet.kernels.gpu provides no kernels yet")
    return gpu
