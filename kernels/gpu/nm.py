"""N:M kernels (gpu backend). The spec of each is in ``kernels.reference``.

Row r, group g, slot n holds W[r, g * M + idx[r, g, n]]. The forward product and SDDMM are
CSR's warp-per-row loops with the column computed from the slot (``nm_column``). The
transposed product gathers instead of scattering, so it needs no atomics: thread (j, c) for
the column c = g * M + o of W walks the rows and adds the slots of group g whose offset is
o. That reads every slot of the group once per offset (M times the stored work), the price
of a deterministic sum without a transposed index; for 2:4 it is twice a dense product's
reads of W, and the loads of G, shared by the warp, stay coalesced.
"""
from numba import cuda, float64

from ..cpu import args
from .launch import (TILE, WARP, contig, finish, out_buffer, row_column_launch, tile_dot, tile_flush,
                     zero_of)


@cuda.jit(device=True)
def nm_column(idx, M, r, g, n):
    """The column of W that slot (r, g, n) stores."""
    return g * M + idx[r, g, n]


@cuda.jit
def _spmm(values, idx, M, X, out, zero):
    j, r = cuda.grid(2)
    if r < out.shape[0] and j < out.shape[1]:
        acc = zero
        for g in range(values.shape[1]):
            for n in range(values.shape[2]):
                acc += values[r, g, n] * X[nm_column(idx, M, r, g, n), j]
        out[r, j] = acc


@cuda.jit
def _spmm_t(values, idx, M, G, out, zero):
    j, c = cuda.grid(2)
    if c < out.shape[0] and j < out.shape[1]:
        g, offset = c // M, c % M
        acc = zero
        for r in range(values.shape[0]):
            for n in range(values.shape[2]):
                if idx[r, g, n] == offset:
                    acc += values[r, g, n] * G[r, j]
        out[c, j] = acc


@cuda.jit
def _sddmm(idx, M, A, B, out_flat, zero):
    r = cuda.blockIdx.x                              # one warp per row
    lane = cuda.threadIdx.x
    partial = cuda.shared.array(TILE, float64)
    n_keep = idx.shape[2]
    per_row = idx.shape[1] * n_keep
    start, stop = r * per_row, (r + 1) * per_row     # the row's slots in out_flat
    for e0 in range(start, stop, WARP):
        for e in range(min(WARP, stop - e0)):
            q = e0 + e - start
            column = nm_column(idx, M, r, q // n_keep, q % n_keep)
            tile_dot(partial, e, lane, A, r, B, column, zero)
        cuda.syncthreads()
        tile_flush(partial, lane, out_flat, e0, stop)
        cuda.syncthreads()


def nm_spmm(values, idx, M, X, out):
    """out (n_rows, k) = W @ X for W in N:M storage, X (n_groups * M, k)."""
    n_rows, _, _, k = args.nm_spmm(values, idx, M, X, out)
    buf = out_buffer(out)
    if n_rows and k:
        grid, threads = row_column_launch(n_rows, k)
        _spmm[grid, threads](contig(values), contig(idx), int(M), contig(X), buf, zero_of(values))
    return finish(out, buf)


def nm_spmm_t(values, idx, M, G, out):
    """out (n_groups * M, k) = W.T @ G for W in N:M storage."""
    _, n_groups, _, k = args.nm_spmm_t(values, idx, M, G, out)
    buf = out_buffer(out)
    if n_groups and k:
        grid, threads = row_column_launch(n_groups * M, k)
        _spmm_t[grid, threads](contig(values), contig(idx), int(M), contig(G), buf, zero_of(values))
    return finish(out, buf)


def nm_sddmm(idx, M, A, B, out):
    """out (n_rows, n_groups, N): out[r, g, n] = dot(A[r], B[g * M + idx[r, g, n]])."""
    n_rows, n_groups, n_keep, _ = args.nm_sddmm(idx, M, A, B, out)
    buf = out_buffer(out)
    if n_rows and n_groups and n_keep:
        _sddmm[n_rows, WARP](contig(idx), int(M), contig(A), contig(B), buf.reshape(-1), zero_of(A))
    return finish(out, buf)
