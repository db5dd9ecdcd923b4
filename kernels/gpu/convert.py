"""Conversions between dense arrays and CSR / BSR / N:M storage (gpu backend).

They run when a topology is built or inspected, not every step. Finding the nonzeros and
gathering them is array work (``xp.nonzero``, fancy indexing: CuPy on a GPU); writing a sparse
matrix into a dense one is a scatter, done by kernels in which one thread owns a row (or a
block row, or an N:M group), so duplicate entries add up in storage order with no atomics.
"""
import numpy as np
from numba import cuda

from ..cpu import args
from .launch import array_module, clamped_range, contig, finish, flat_launch, out_buffer
from .topk import topk_per_group


@cuda.jit
def _csr_scatter(indptr, indices, values, out):
    r = cuda.grid(1)
    if r < out.shape[0]:
        start, stop = clamped_range(indptr, r, indices.shape[0])
        for p in range(start, stop):
            out[r, indices[p]] += values[p]


@cuda.jit
def _bsr_scatter(indptr, indices, blocks, out):
    row = cuda.grid(1)                               # one thread per dense row br * bs + i
    if row < out.shape[0]:
        bs = blocks.shape[1]
        br, i = row // bs, row % bs
        start, stop = clamped_range(indptr, br, indices.shape[0])
        for p in range(start, stop):
            c0 = indices[p] * bs
            for col in range(bs):
                out[row, c0 + col] += blocks[p, i, col]


@cuda.jit
def _nm_scatter(values, idx, M, out):
    t = cuda.grid(1)                                 # one thread per (row, group)
    n_groups = values.shape[1]
    if t < values.shape[0] * n_groups:
        r, g = t // n_groups, t % n_groups
        for n in range(values.shape[2]):
            out[r, g * M + idx[r, g, n]] += values[r, g, n]


def _indptr_from_counts(counts):
    xp = array_module(counts)
    indptr = xp.zeros(counts.shape[0] + 1, dtype=np.int64)
    indptr[1:] = xp.cumsum(counts)
    return indptr


def _launch_rows(kernel, n, *arrays):
    if n:
        blocks, threads = flat_launch(n)
        kernel[blocks, threads](*arrays)


def csr_from_dense(dense):
    """CSR (indptr int64, indices int32, values) of the nonzeros of ``dense``."""
    args.dense2d(dense)
    rows, cols = array_module(dense).nonzero(dense)      # row-major: cols sorted per row
    return (_indptr_from_counts((dense != 0).sum(axis=1)), cols.astype(np.int32),
            dense[rows, cols])


def csr_to_dense(indptr, indices, values, n_cols, out):
    """out (n_rows, n_cols): the dense matrix (duplicate entries summed)."""
    n_rows, _ = args.csr_to_dense(indptr, indices, values, n_cols, out)
    buf = out_buffer(out)
    buf[...] = 0
    _launch_rows(_csr_scatter, n_rows, contig(indptr), contig(indices), contig(values), buf)
    return finish(out, buf)


def bsr_from_dense(dense, bs, block_mask):
    """BSR (indptr, indices, blocks) keeping the blocks where block_mask is True."""
    bs = args.bsr_from_dense(dense, bs, block_mask)
    xp = array_module(dense)
    n_brows, n_bcols = block_mask.shape
    brows, bcols = xp.nonzero(block_mask)
    tiles = dense.reshape(n_brows, bs, n_bcols, bs).transpose(0, 2, 1, 3)   # a view
    blocks = xp.ascontiguousarray(tiles[brows, bcols])
    return _indptr_from_counts(block_mask.sum(axis=1)), bcols.astype(np.int32), blocks


def bsr_to_dense(indptr, indices, blocks, n_block_cols, out):
    """out (n_block_rows * bs, n_block_cols * bs): the dense matrix (duplicates summed)."""
    n_brows, _, bs = args.bsr_to_dense(indptr, indices, blocks, n_block_cols, out)
    buf = out_buffer(out)
    buf[...] = 0
    _launch_rows(_bsr_scatter, n_brows * bs, contig(indptr), contig(indices), contig(blocks), buf)
    return finish(out, buf)


def nm_from_dense(dense, N, M):
    """N:M (values, idx) keeping the N largest |dense| per group of M columns
    (ties: lower column wins), offsets ascending within each group."""
    N, M = args.nm_from_dense(dense, N, M)
    xp = array_module(dense)
    n_rows, n_cols = dense.shape
    groups = dense.reshape(n_rows, n_cols // M, M)
    idx = topk_per_group(xp.abs(groups), N, xp.empty((n_rows, n_cols // M, N), np.uint8))
    values = xp.take_along_axis(groups, idx.astype(np.int64), axis=2)
    return values, idx


def nm_to_dense(values, idx, M, out):
    """out (n_rows, n_groups * M): the dense matrix of N:M storage."""
    n_rows, n_groups = args.nm_to_dense(values, idx, M, out)
    buf = out_buffer(out)
    buf[...] = 0
    _launch_rows(_nm_scatter, n_rows * n_groups, contig(values), contig(idx), int(M), buf)
    return finish(out, buf)
