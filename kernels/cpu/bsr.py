"""BSR kernels (cpu backend). The spec of each is in ``kernels.reference``.

A stored block (bs, bs) times its X panel (bs, k) is a small dense product
(``panel.block_times_panel``): the panel and the block row's bs output rows
stay in L1 while the block is applied, and every loaded X element feeds
several outputs; that reuse is what makes blocks faster than CSR at the same
density.
"""

from numba import get_num_threads, njit, prange

from . import args
from . import checks as c
from .csr import csr_to_csc
from .micro import dot, work_bounds
from .panel import block_times_panel
from .wrap import contig, finish, out_buffer


@njit(parallel=True, cache=True)
def _spmm(indptr, indices, blocks, X, out, n_threads):
    bs = blocks.shape[1]
    bounds = work_bounds(indptr, X.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        for br in range(bounds[t], bounds[t + 1]):
            rows = out[br * bs:(br + 1) * bs]  # (bs, k), stays in L1 for the whole block row
            rows[:] = 0
            for p in range(indptr[br], indptr[br + 1]):
                block_times_panel(rows, blocks[p], X, indices[p] * bs)
    return out


@njit(parallel=True, cache=True)
def _spmm_t(colptr, rowind, perm, blocks, G, out, n_threads):
    bs = blocks.shape[1]
    bounds = work_bounds(colptr, G.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        for bc in range(bounds[t], bounds[t + 1]):
            rows = out[bc * bs:(bc + 1) * bs]  # (bs, k)
            rows[:] = 0
            for q in range(colptr[bc], colptr[bc + 1]):
                block_times_panel(rows, blocks[perm[q]].T, G, rowind[q] * bs)
    return out


@njit(parallel=True, cache=True)
def _sddmm(indptr, indices, A, B, out, n_threads):
    bs = out.shape[1]
    bounds = work_bounds(indptr, A.shape[1] * bs, n_threads)
    for t in prange(bounds.shape[0] - 1):
        for br in range(bounds[t], bounds[t + 1]):
            for p in range(indptr[br], indptr[br + 1]):
                bc = indices[p]
                for i in range(bs):
                    a = A[br * bs + i]  # (k,)
                    for j in range(bs):
                        out[p, i, j] = dot(a, B[bc * bs + j])
    return out


def spmm_trusted(indptr, indices, blocks, X, out):
    """bsr_spmm for index arrays known to be valid (the sparse types' path)."""
    _, _, _, k = args.bsr_spmm(indptr, indices, blocks, X, out)
    buf = out_buffer(out)
    if k > 0:
        _spmm(contig(indptr), contig(indices), contig(blocks), contig(X), buf, get_num_threads())
    return finish(out, buf)


def bsr_to_bsc(indptr, indices, n_block_cols):
    """(colptr, rowind, perm) of the block pattern, as csr_to_csc on blocks."""
    return csr_to_csc(indptr, indices, n_block_cols)


def spmm_t_trusted(colptr, rowind, perm, blocks, G, out):
    """bsr_spmm_t for index arrays known to be valid."""
    _, _, _, k = args.bsr_spmm_t(colptr, rowind, perm, blocks, G, out)
    buf = out_buffer(out)
    if k > 0:
        _spmm_t(contig(colptr), contig(rowind), contig(perm), contig(blocks), contig(G), buf,
                get_num_threads())
    return finish(out, buf)


def sddmm_trusted(indptr, indices, A, B, out):
    """bsr_sddmm for index arrays known to be valid."""
    _, _, _, k = args.bsr_sddmm(indptr, indices, A, B, out)
    buf = out_buffer(out)
    if k == 0:
        buf[...] = 0
    else:
        _sddmm(contig(indptr), contig(indices), contig(A), contig(B), buf, get_num_threads())
    return finish(out, buf)


# ----- public entry points: every index checked first (O(nnzb)) -------------------------------

def bsr_spmm(indptr, indices, blocks, X, out):
    """out (n_block_rows * bs, k) = W @ X for W in BSR. Returns out."""
    _, n_bcols, _, _ = args.bsr_spmm(indptr, indices, blocks, X, out)
    c.check_csr(indptr, indices, n_bcols)
    return spmm_trusted(indptr, indices, blocks, X, out)


def bsr_spmm_t(colptr, rowind, perm, blocks, G, out):
    """out (n_block_cols * bs, k) = W.T @ G, reading blocks[perm[j]]."""
    n_brows, _, _, _ = args.bsr_spmm_t(colptr, rowind, perm, blocks, G, out)
    c.check_csr(colptr, rowind, n_brows)
    c.check_perm(perm, blocks.shape[0])
    return spmm_t_trusted(colptr, rowind, perm, blocks, G, out)


def bsr_sddmm(indptr, indices, A, B, out):
    """out (nnzb, bs, bs) = (A @ B.T) restricted to the stored blocks."""
    _, n_bcols, _, _ = args.bsr_sddmm(indptr, indices, A, B, out)
    c.check_csr(indptr, indices, n_bcols)
    return sddmm_trusted(indptr, indices, A, B, out)
