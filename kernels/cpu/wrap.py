"""Tiny helpers for the Python side of the cpu kernels (contiguity handling).

Non-contiguous inputs are not an error: the Numba kernels are compiled for
C-contiguous arrays only (one compiled variant per dtype keeps compile time
down), so a strided view is copied once here. A non-contiguous ``out`` gets a
contiguous scratch buffer that is copied back after the kernel ran.
"""

import numpy as np


def contig(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def out_buffer(out):
    return out if out.flags.c_contiguous else np.empty(out.shape, dtype=out.dtype)


def finish(out, buf):
    """Copy the scratch buffer back into ``out`` if one was used; return out."""
    if buf is not out:
        out[...] = buf
    return out
