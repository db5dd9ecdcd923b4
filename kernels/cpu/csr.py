"""CSR kernels (cpu backend). The spec of each is in ``kernels.reference``.

Parallel strategy: every kernel splits its output rows into one contiguous
range per thread (``work_bounds``) so each output element is written by one
thread, in one fixed order: results do not depend on the thread count.
The transposed product walks W by columns through the CSC permutation, which
turns a scatter (atomics) into a gather.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import args
from .micro import add_indexed_rows, add_permuted_rows, dot, gather_dot, work_bounds
from .wrap import contig, finish, out_buffer


@njit(parallel=True, cache=True)
def _spmm(indptr, indices, values, X, out, n_threads):
    bounds = work_bounds(indptr, X.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            o = out[r]  # (k,)
            o[:] = 0
            add_indexed_rows(o, values, X, indices, indptr[r], indptr[r + 1])
    return out


@njit(parallel=True, cache=True)
def _spmv(indptr, indices, values, x, out, n_threads):
    # k = 1: a gathered dot product per row; no k-loop to vectorize.
    bounds = work_bounds(indptr, 1, n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            out[r] = gather_dot(values, x, indices, indptr[r], indptr[r + 1])
    return out


@njit(parallel=True, cache=True)
def _spmm_t(colptr, rowind, perm, values, G, out, n_threads):
    bounds = work_bounds(colptr, G.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        for c in range(bounds[t], bounds[t + 1]):
            o = out[c]  # (k,)
            o[:] = 0
            add_permuted_rows(o, values, perm, G, rowind, colptr[c], colptr[c + 1])
    return out


@njit(parallel=True, cache=True)
def _sddmm(indptr, indices, A, B, out, n_threads):
    bounds = work_bounds(indptr, A.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            a = A[r]  # (k,), reused for every entry of the row
            for p in range(indptr[r], indptr[r + 1]):
                out[p] = dot(a, B[indices[p]])
    return out


@njit(cache=True)
def _to_csc(indptr, indices, n_cols):
    # Counting sort by column; visiting entries in CSR order keeps rows
    # ascending within each column (and duplicates in CSR order).
    nnz = indices.shape[0]
    colptr = np.zeros(n_cols + 1, dtype=np.int64)
    for p in range(nnz):
        colptr[indices[p] + 1] += 1
    for c in range(n_cols):
        colptr[c + 1] += colptr[c]
    fill = colptr[:-1].copy()  # next free CSC slot per column
    rowind = np.empty(nnz, dtype=np.int32)
    perm = np.empty(nnz, dtype=np.int64)
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            j = fill[indices[p]]
            rowind[j] = r
            perm[j] = p
            fill[indices[p]] += 1
    return colptr, rowind, perm


def csr_spmm(indptr, indices, values, X, out):
    """out (n_rows, k) = W @ X for W in CSR, X (n_cols, k). Returns out."""
    _, _, k = args.csr_spmm(indptr, indices, values, X, out)
    buf = out_buffer(out)
    ip, ix, v, X = contig(indptr), contig(indices), contig(values), contig(X)
    if k == 1:
        _spmv(ip, ix, v, X.reshape(-1), buf.reshape(-1), get_num_threads())
    elif k > 1:
        _spmm(ip, ix, v, X, buf, get_num_threads())
    return finish(out, buf)


def csr_to_csc(indptr, indices, n_cols):
    """(colptr int64, rowind int32, perm int64): the CSC form of the pattern,
    CSC slot j holding values[perm[j]]; rows ascending within each column."""
    args.csr_to_csc(indptr, indices, n_cols)
    return _to_csc(contig(indptr), contig(indices), int(n_cols))


def csr_spmm_t(colptr, rowind, perm, values, G, out):
    """out (n_cols, k) = W.T @ G, G (n_rows, k), reading values[perm[j]]."""
    _, _, k = args.csr_spmm_t(colptr, rowind, perm, values, G, out)
    buf = out_buffer(out)
    if k > 0:
        _spmm_t(contig(colptr), contig(rowind), contig(perm), contig(values), contig(G), buf, get_num_threads())
    return finish(out, buf)


def csr_sddmm(indptr, indices, A, B, out):
    """out (nnz,): out[p] = dot(A[row(p)], B[indices[p]]), the gradient
    G @ X.T at the stored positions only."""
    _, _, k = args.csr_sddmm(indptr, indices, A, B, out)
    buf = out_buffer(out)
    if k == 0:
        buf[...] = 0
    else:
        _sddmm(contig(indptr), contig(indices), contig(A), contig(B), buf, get_num_threads())
    return finish(out, buf)
