"""N:M kernels (cpu backend). The spec of each is in ``kernels.reference``.

Row r, group g, slot n holds W[r, g * M + idx[r, g, n]]. The forward product
treats a row as a CSR row whose column indices are computed on the fly; the
transposed product is split by tiles of groups, so each thread owns the
output rows of its tiles and no two threads write the same row.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import args
from . import checks as c
from .micro import add_indexed_rows, add_row, dot, even_bounds
from .wrap import contig, finish, out_buffer

# Groups per transposed-product task: G[r] is read once per tile, and the
# tile's output rows (TILE_GROUPS * M * k values) stay in cache.
TILE_GROUPS = 16


@njit(parallel=True, cache=True)
def _spmm(values, idx, M, X, out, n_threads):
    n_rows, n_groups, n_keep = values.shape
    bounds = even_bounds(n_rows, n_threads)
    for t in prange(bounds.shape[0] - 1):
        cols = np.empty(n_groups * n_keep, dtype=np.int64)  # (n_groups * N,)
        for r in range(bounds[t], bounds[t + 1]):
            vals = values[r].reshape(n_groups * n_keep)
            offsets = idx[r].reshape(n_groups * n_keep)
            for q in range(n_groups * n_keep):
                cols[q] = (q // n_keep) * M + offsets[q]
            o = out[r]  # (k,)
            o[:] = 0
            add_indexed_rows(o, vals, X, cols, 0, n_groups * n_keep)
    return out


@njit(parallel=True, cache=True)
def _spmm_t(values, idx, M, G, out):
    # Tiles of groups: G[r] is loaded once per tile and feeds all its groups,
    # and the tile's output rows (TILE_GROUPS * M of them) stay in L1.
    # (A per-tile column index with eight-row gathers, as in csr_spmm_t, was
    # measured ~1.8x slower: the gathers lose this locality.)
    n_rows, n_groups, n_keep = values.shape
    n_tiles = (n_groups + TILE_GROUPS - 1) // TILE_GROUPS
    for tile in prange(n_tiles):
        g0 = tile * TILE_GROUPS
        g1 = min(g0 + TILE_GROUPS, n_groups)
        out[g0 * M:g1 * M] = 0
        for r in range(n_rows):
            g_row = G[r]  # (k,)
            for g in range(g0, g1):
                for n in range(n_keep):
                    add_row(out[g * M + idx[r, g, n]], values[r, g, n], g_row)
    return out


@njit(parallel=True, cache=True)
def _sddmm(idx, M, A, B, out, n_threads):
    n_rows, n_groups, n_keep = idx.shape
    bounds = even_bounds(n_rows, n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            a = A[r]  # (k,)
            for g in range(n_groups):
                for n in range(n_keep):
                    out[r, g, n] = dot(a, B[g * M + idx[r, g, n]])
    return out


def spmm_trusted(values, idx, M, X, out):
    """nm_spmm for idx known to be valid (the sparse types' path)."""
    _, _, _, k = args.nm_spmm(values, idx, M, X, out)
    buf = out_buffer(out)
    if k > 0:
        _spmm(contig(values), contig(idx), int(M), contig(X), buf, get_num_threads())
    return finish(out, buf)


def spmm_t_trusted(values, idx, M, G, out):
    """nm_spmm_t for idx known to be valid (the sparse types' path)."""
    _, _, _, k = args.nm_spmm_t(values, idx, M, G, out)
    buf = out_buffer(out)
    if k > 0:
        _spmm_t(contig(values), contig(idx), int(M), contig(G), buf)
    return finish(out, buf)


def sddmm_trusted(idx, M, A, B, out):
    """nm_sddmm for idx known to be valid (the sparse types' path)."""
    _, _, _, k = args.nm_sddmm(idx, M, A, B, out)
    buf = out_buffer(out)
    if k == 0:
        buf[...] = 0
    else:
        _sddmm(contig(idx), int(M), contig(A), contig(B), buf, get_num_threads())
    return finish(out, buf)


# ----- public entry points: every offset checked first ----------------------------------------

def nm_spmm(values, idx, M, X, out):
    """out (n_rows, k) = W @ X for W in N:M storage, X (n_groups * M, k)."""
    args.nm_spmm(values, idx, M, X, out)
    c.check_nm(values, idx, M)
    return spmm_trusted(values, idx, M, X, out)


def nm_spmm_t(values, idx, M, G, out):
    """out (n_groups * M, k) = W.T @ G for W in N:M storage."""
    args.nm_spmm_t(values, idx, M, G, out)
    c.check_nm(values, idx, M)
    return spmm_t_trusted(values, idx, M, G, out)


def nm_sddmm(idx, M, A, B, out):
    """out (n_rows, n_groups, N): out[r, g, n] = dot(A[r], B[g * M + idx[r, g, n]])."""
    args.nm_sddmm(idx, M, A, B, out)
    c.check_nm(None, idx, M)
    return sddmm_trusted(idx, M, A, B, out)
