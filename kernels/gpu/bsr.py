"""BSR kernels (gpu backend). The spec of each is in ``kernels.reference``.

A block row of bs output rows is bs ordinary rows that share their pointer range, so the
products are the CSR warp-per-row loop with one more inner loop over the bs columns of each
block: thread (j, R) computes out[R, j] for the output row R = br * bs + i. The bs threads
of one block row read the same blocks and the same rows of X, which then come from cache.
SDDMM is CSR's warp-per-row dot products over the bs * bs entries of each stored block.
"""
from numba import cuda, float64

from ..cpu import args
from .csr import csr_to_csc
from .launch import (TILE, WARP, clamped_range, contig, finish, out_buffer, row_column_launch,
                     tile_dot, tile_flush, zero_of)


@cuda.jit
def _spmm(indptr, indices, blocks, X, out, zero):
    j, row = cuda.grid(2)
    if row < out.shape[0] and j < out.shape[1]:
        bs = blocks.shape[1]
        br, i = row // bs, row % bs
        start, stop = clamped_range(indptr, br, indices.shape[0])
        acc = zero
        for p in range(start, stop):
            x0 = indices[p] * bs
            for col in range(bs):
                acc += blocks[p, i, col] * X[x0 + col, j]
        out[row, j] = acc


@cuda.jit
def _spmm_t(colptr, rowind, perm, blocks, G, out, zero):
    j, row = cuda.grid(2)                            # row = bc * bs + i of W.T
    if row < out.shape[0] and j < out.shape[1]:
        bs = blocks.shape[1]
        bc, i = row // bs, row % bs
        start, stop = clamped_range(colptr, bc, rowind.shape[0])
        acc = zero
        for q in range(start, stop):
            b, g0 = perm[q], rowind[q] * bs
            for col in range(bs):
                acc += blocks[b, col, i] * G[g0 + col, j]      # the block transposed
        out[row, j] = acc


@cuda.jit
def _sddmm(indptr, indices, A, B, out_flat, bs, zero):
    br = cuda.blockIdx.x                             # one warp per block row
    lane = cuda.threadIdx.x
    partial = cuda.shared.array(TILE, float64)
    first, last = clamped_range(indptr, br, indices.shape[0])
    area = bs * bs
    start, stop = first * area, last * area          # this block row's entries in out_flat
    for e0 in range(start, stop, WARP):
        for e in range(min(WARP, stop - e0)):
            p, inside = (e0 + e) // area, (e0 + e) % area
            tile_dot(partial, e, lane, A, br * bs + inside // bs, B,
                     indices[p] * bs + inside % bs, zero)
        cuda.syncthreads()
        tile_flush(partial, lane, out_flat, e0, stop)
        cuda.syncthreads()


def bsr_spmm(indptr, indices, blocks, X, out):
    """out (n_block_rows * bs, k) = W @ X for W in BSR. Returns out."""
    n_brows, _, bs, k = args.bsr_spmm(indptr, indices, blocks, X, out)
    buf = out_buffer(out)
    if n_brows and k:
        grid, threads = row_column_launch(n_brows * bs, k)
        _spmm[grid, threads](contig(indptr), contig(indices), contig(blocks), contig(X), buf,
                             zero_of(blocks))
    return finish(out, buf)


def bsr_to_bsc(indptr, indices, n_block_cols):
    """(colptr, rowind, perm) of the block pattern, as csr_to_csc on blocks."""
    return csr_to_csc(indptr, indices, n_block_cols)


def bsr_spmm_t(colptr, rowind, perm, blocks, G, out):
    """out (n_block_cols * bs, k) = W.T @ G, reading blocks[perm[j]]."""
    _, n_bcols, bs, k = args.bsr_spmm_t(colptr, rowind, perm, blocks, G, out)
    buf = out_buffer(out)
    if n_bcols and k:
        grid, threads = row_column_launch(n_bcols * bs, k)
        _spmm_t[grid, threads](contig(colptr), contig(rowind), contig(perm), contig(blocks),
                               contig(G), buf, zero_of(blocks))
    return finish(out, buf)


def bsr_sddmm(indptr, indices, A, B, out):
    """out (nnzb, bs, bs) = (A @ B.T) restricted to the stored blocks."""
    n_brows, _, bs, _ = args.bsr_sddmm(indptr, indices, A, B, out)
    buf = out_buffer(out)
    if n_brows and indices.shape[0]:
        _sddmm[n_brows, WARP](contig(indptr), contig(indices), contig(A), contig(B),
                              buf.reshape(-1), bs, zero_of(A))
    return finish(out, buf)
