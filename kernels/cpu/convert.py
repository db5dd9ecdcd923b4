"""Conversions between dense arrays and CSR / BSR / N:M storage (cpu backend).

These run when a topology is built or inspected, not every step, so they are
vectorized NumPy where that is already fast and small serial Numba loops
where NumPy would need a slow scatter (np.add.at).
"""

import numpy as np
from numba import njit

from . import args
from .topk import topk_per_group
from .wrap import contig, finish, out_buffer


@njit(cache=True)
def _csr_to_dense(indptr, indices, values, out):
    out[:] = 0
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] += values[p]
    return out


@njit(cache=True)
def _bsr_to_dense(indptr, indices, blocks, out):
    bs = blocks.shape[1]
    out[:] = 0
    for br in range(indptr.shape[0] - 1):
        for p in range(indptr[br], indptr[br + 1]):
            c0 = indices[p] * bs
            for i in range(bs):
                for j in range(bs):
                    out[br * bs + i, c0 + j] += blocks[p, i, j]
    return out


def _indptr_from_rows(rows, n_rows):
    """indptr (n_rows + 1,) int64 from the (sorted) row of every entry."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def csr_from_dense(dense):
    """CSR (indptr int64, indices int32, values) of the nonzeros of ``dense``."""
    args.dense2d(dense)
    rows, cols = np.nonzero(dense)  # row-major order: rows sorted, cols sorted per row
    return _indptr_from_rows(rows, dense.shape[0]), cols.astype(np.int32), dense[rows, cols]


def csr_to_dense(indptr, indices, values, n_cols, out):
    """out (n_rows, n_cols): the dense matrix (duplicate entries summed)."""
    args.csr_to_dense(indptr, indices, values, n_cols, out)
    buf = out_buffer(out)
    _csr_to_dense(contig(indptr), contig(indices), contig(values), buf)
    return finish(out, buf)


def bsr_from_dense(dense, bs, block_mask):
    """BSR (indptr, indices, blocks) keeping the blocks where block_mask is True."""
    bs = args.bsr_from_dense(dense, bs, block_mask)
    n_brows, n_bcols = block_mask.shape
    brows, bcols = np.nonzero(block_mask)
    # (n_brows, n_bcols, bs, bs) view of the blocks; fancy indexing copies the kept ones
    tiles = dense.reshape(n_brows, bs, n_bcols, bs).transpose(0, 2, 1, 3)
    blocks = np.ascontiguousarray(tiles[brows, bcols])
    return _indptr_from_rows(brows, n_brows), bcols.astype(np.int32), blocks


def bsr_to_dense(indptr, indices, blocks, n_block_cols, out):
    """out (n_block_rows * bs, n_block_cols * bs): the dense matrix (duplicates summed)."""
    args.bsr_to_dense(indptr, indices, blocks, n_block_cols, out)
    buf = out_buffer(out)
    _bsr_to_dense(contig(indptr), contig(indices), contig(blocks), buf)
    return finish(out, buf)


def nm_from_dense(dense, N, M):
    """N:M (values, idx) keeping the N largest |dense| per group of M columns
    (ties: lower column wins), offsets ascending within each group."""
    N, M = args.nm_from_dense(dense, N, M)
    n_rows, n_cols = dense.shape
    groups = dense.reshape(n_rows, n_cols // M, M)
    idx = topk_per_group(np.abs(groups), N, np.empty((n_rows, n_cols // M, N), np.uint8))
    values = np.take_along_axis(groups, idx.astype(np.intp), axis=2)
    return values, idx


def nm_to_dense(values, idx, M, out):
    """out (n_rows, n_groups * M): the dense matrix of N:M storage."""
    n_rows, n_groups = args.nm_to_dense(values, idx, M, out)
    buf = out_buffer(out)
    buf[...] = 0
    # Offsets are distinct within a valid group, so a plain scatter is exact.
    groups = buf.reshape(n_rows, n_groups, M)  # view of buf
    np.put_along_axis(groups, idx.astype(np.intp), values, axis=2)
    return finish(out, buf)
