"""Argument checks shared by every kernel backend (reference, cpu and gpu).

The checks only look at ``.shape``, ``.dtype``, ``.ndim`` and a few single
elements, so they cost O(1) per call: the kernels are called every training
step and a check that reads every index would cost as much as a small kernel.
The O(nnz) structural checks live in ``check_csr``/``check_bsr``/``check_nm``,
meant to be called once when a topology is built or changed.

Error style (project rule): a bad dtype is a TypeError, a bad shape or value a
ValueError, and both name the argument and what was expected.

Device arrays (CuPy, or anything with ``__cuda_array_interface__``) pass the
same checks, except that the O(1) checks never read their elements: reading
one element of a device array waits for every queued kernel, which would
serialize a training step. The gpu kernels instead clamp every pointer range
they read, so a bad ``indptr`` cannot make them read out of bounds.
"""

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDPTR_DTYPE = np.dtype(np.int64)
INDEX_DTYPE = np.dtype(np.int32)
NM_INDEX_DTYPE = np.dtype(np.uint8)


def on_device(arr):
    """True for a GPU array (CuPy, Numba device arrays): it exposes the CUDA array interface."""
    return not isinstance(arr, np.ndarray) and hasattr(arr, "__cuda_array_interface__")


def array(name, arr, ndim=None):
    """Require an ndarray or a device array (optionally of a given ndim)."""
    if not isinstance(arr, np.ndarray) and not on_device(arr):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(arr).__name__}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def float_array(name, arr, ndim=None):
    """Require a float32 or float64 ndarray; return its dtype."""
    array(name, arr, ndim)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {arr.dtype}")
    return arr.dtype


def same_dtype(name, arr, dtype, source):
    """Require ``arr.dtype == dtype``; ``source`` says where dtype came from."""
    if arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of {source}), got {arr.dtype}"
            " (no silent casts: convert explicitly)"
        )


def int_array(name, arr, dtype, ndim=1):
    """Require an integer ndarray of exactly ``dtype``."""
    array(name, arr, ndim)
    if arr.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
    return arr


def shape(name, arr, expected, why):
    """Require ``arr.shape == expected``; ``why`` names the shapes it came from."""
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)} ({why}), got {arr.shape}")


def positive_int(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def out_array(out, expected_shape, dtype, why, inputs=()):
    """Check ``out``: ndarray, dtype, shape, writeable, not overlapping inputs."""
    array("out", out)
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"out: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    shape("out", out, expected_shape, why)
    if not getattr(out.flags, "writeable", True):      # CuPy arrays are always writeable
        raise ValueError("out: expected a writeable array")
    for other_name, other in inputs:
        # Both compare address ranges only: O(1).
        if _may_share_memory(out, other):
            raise ValueError(f"out: must not overlap the input {other_name}")


def _byte_range(arr):
    """[first, last) byte addresses a device array may touch."""
    iface = arr.__cuda_array_interface__
    start = iface["data"][0]
    if arr.size == 0:
        return start, start
    itemsize = np.dtype(iface["typestr"]).itemsize
    strides = iface.get("strides")
    if strides is None:                                   # C-contiguous
        return start, start + arr.size * itemsize
    low = sum(s * (n - 1) for s, n in zip(strides, arr.shape) if s < 0)
    high = sum(s * (n - 1) for s, n in zip(strides, arr.shape) if s > 0)
    return start + low, start + high + itemsize


def _may_share_memory(a, b):
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.may_share_memory(a, b)
    if on_device(a) and on_device(b):
        (a0, a1), (b0, b1) = _byte_range(a), _byte_range(b)
        return a0 < b1 and b0 < a1
    return False                              # host and device memory never overlap


def csr_pattern(indptr, indices, name="indptr", index_name="indices"):
    """O(1) checks of a CSR (or CSC) pattern; returns (n_rows, nnz)."""
    int_array(name, indptr, INDPTR_DTYPE)
    int_array(index_name, indices, INDEX_DTYPE)
    if indptr.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one entry (n_rows + 1), got shape {indptr.shape}")
    nnz = indices.shape[0]
    if on_device(indptr):          # reading an element would wait for the device (see top)
        return indptr.shape[0] - 1, nnz
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(
            f"{name}: expected {name}[0] == 0 and {name}[-1] == {index_name}.shape[0] == {nnz},"
            f" got {name}[0] == {indptr[0]}, {name}[-1] == {indptr[-1]}"
        )
    return indptr.shape[0] - 1, nnz


def csc_perm(perm, nnz):
    int_array("perm", perm, INDPTR_DTYPE)
    shape("perm", perm, (nnz,), "one entry per stored value, from csr_to_csc")


def nm_pattern(idx, M, values=None):
    """O(1) checks of N:M storage; returns (n_rows, n_groups, N)."""
    M = positive_int("M", M)
    if M > 256:
        raise ValueError(f"M: expected M <= 256 (offsets are stored as uint8), got {M}")
    int_array("idx", idx, NM_INDEX_DTYPE, ndim=3)
    if idx.shape[2] > M:
        raise ValueError(f"idx: expected N = idx.shape[2] <= M = {M}, got idx.shape {idx.shape}")
    if values is not None:
        float_array("values", values, ndim=3)
        shape("values", values, idx.shape, "the shape of idx, (n_rows, n_groups, N)")
    return idx.shape


def bsr_blocks(blocks, nnzb):
    """Blocks of a BSR matrix: (nnzb, bs, bs) float; returns bs."""
    float_array("blocks", blocks, ndim=3)
    bs = blocks.shape[1]
    if blocks.shape[0] != nnzb or blocks.shape[2] != bs or bs < 1:
        raise ValueError(
            f"blocks: expected shape (nnzb, bs, bs) with nnzb = {nnzb} (the length of indices)"
            f" and square bs >= 1, got {blocks.shape}"
        )
    return bs


def rows_multiple(name, arr, bs, what):
    if arr.shape[0] % bs != 0:
        raise ValueError(f"{name}: expected shape[0] to be a multiple of {what} = {bs}, got shape {arr.shape}")


def no_nan(name, arr):
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN, which has no place in a top-k order")


# ---- O(nnz) structural checks, for when a topology is built ----------------

def check_csr(indptr, indices, n_cols):
    """Full check of a CSR pattern: monotone indptr, 0 <= indices < n_cols.

    The cpu kernels trust their index arrays (checking them each call would
    cost as much as the product itself); call this when a topology changes.
    """
    n_cols = positive_int("n_cols", n_cols, minimum=0)
    csr_pattern(indptr, indices)
    if np.any(np.diff(indptr) < 0):
        raise ValueError("indptr: expected a non-decreasing array")
    if indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(
            f"indices: expected values in [0, n_cols = {n_cols}), got range"
            f" [{indices.min()}, {indices.max()}]"
        )


def check_perm(perm, nnz, unique=False):
    """Full check of a CSC permutation: every entry a position in [0, nnz), and with
    `unique` each position once (a kernel that writes through perm from several threads needs
    that: two threads writing one position would race)."""
    csc_perm(perm, nnz)
    if perm.size and (perm.min() < 0 or perm.max() >= nnz):
        raise ValueError(f"perm: expected positions in [0, nnz = {nnz}), got range"
                         f" [{perm.min()}, {perm.max()}]")
    if unique and np.bincount(perm, minlength=nnz).max(initial=0) > 1:
        raise ValueError("perm: expected a permutation (each position once), got a repeat")


def check_bsr(indptr, indices, blocks, n_block_cols):
    """Full check of a BSR pattern (block-column indices < n_block_cols)."""
    check_csr(indptr, indices, n_block_cols)
    bsr_blocks(blocks, indices.shape[0])


def check_nm(values, idx, M):
    """Full check of N:M storage: offsets in [0, M), strictly increasing per group
    (values may be None: the SDDMM has only the pattern)."""
    nm_pattern(idx, M, values)
    if idx.size and int(idx.max()) >= M:
        raise ValueError(f"idx: expected in-group offsets in [0, M = {M}), got max {int(idx.max())}")
    if idx.shape[2] > 1 and np.any(np.diff(idx.astype(np.int16), axis=2) <= 0):
        raise ValueError("idx: expected strictly increasing offsets within each group")
