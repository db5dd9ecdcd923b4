"""Where arrays live: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the one module that imports CuPy, and it does so lazily: `import sparsenet` never needs
CuPy. Everything else asks `array_module(a)` for the module that owns an array (``numpy`` or
``cupy``) and writes array code against it.
"""
from __future__ import annotations

import numpy as np

_cupy = None          # the cupy module once imported successfully
_cupy_checked = False


def cupy_module():
    """The cupy module, or None when CuPy or a CUDA device is unavailable."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # noqa: PLC0415 - optional dependency, imported on demand
            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # ImportError, or a CUDA driver error on a machine without a GPU
            _cupy = None
    return _cupy


def cuda_available() -> bool:
    return cupy_module() is not None


def array_module(a):
    """``numpy`` for NumPy arrays and scalars, ``cupy`` for CuPy arrays."""
    if isinstance(a, np.ndarray) or _cupy is None:
        return np
    return _cupy if isinstance(a, _cupy.ndarray) else np


def device_of(a) -> str:
    return "cuda" if array_module(a) is not np else "cpu"


def to_device(a, device: str):
    """Copy an array to ``device`` ("cpu" or "cuda"); returns it unchanged when already there."""
    if device == "cpu":
        if isinstance(a, np.ndarray):
            return a
        return a.get()
    if device == "cuda":
        cp = cupy_module()
        if cp is None:
            raise RuntimeError("device='cuda' needs CuPy and an NVIDIA GPU; neither was found "
                               "(install the 'gpu' extra on a machine with CUDA)")
        return cp.asarray(a)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def to_numpy(a) -> np.ndarray:
    return to_device(a, "cpu")
