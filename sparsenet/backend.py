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


def _is_cupy_array(a) -> bool:
    # The type's module says it without importing CuPy for every NumPy array.
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """``numpy`` for NumPy arrays and scalars, ``cupy`` for CuPy arrays."""
    if not _is_cupy_array(a):
        return np
    return cupy_module() or __import__("cupy")    # a CuPy array exists, so CuPy imports


def device_of(a) -> str:
    return "cuda" if array_module(a) is not np else "cpu"


def to_device(a, device: str):
    """Copy an array to ``device`` ("cpu" or "cuda"); returns it unchanged when already there."""
    if device == "cpu":
        return a.get() if _is_cupy_array(a) else a if isinstance(a, np.ndarray) else np.asarray(a)
    if device == "cuda":
        cp = cupy_module()
        if cp is None:
            raise RuntimeError("device='cuda' needs CuPy and an NVIDIA GPU; neither was found "
                               "(install the 'gpu' extra on a machine with CUDA)")
        return a if _is_cupy_array(a) else cp.asarray(a)     # the same object when there
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def to_numpy(a) -> np.ndarray:
    return to_device(a, "cpu")


def gpu_name() -> str | None:
    """The name of GPU 0 (e.g. 'NVIDIA H200'), or None without one."""
    cp = cupy_module()
    if cp is None:
        return None
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
