"""CSR kernels (cpu backend). The spec of each is in ``kernels.reference``.

Parallel strategy: every kernel splits its output rows into one contiguous
range per thread (``work_bounds``) so each output element is written by one
thread, in one fixed order: results do not depend on the thread count.
The transposed product walks W by columns through the CSC permutation, which
turns a scatter (atomics) into a gather.

Memory: a product gathers whole rows of a dense operand (X in W @ X) in random
order. When that operand is too large for the caches (``is_far``: 333,334
rows of 128 float32 are 170 MB), every gathered row comes from memory, and
memory bandwidth, not arithmetic, sets the speed: the kernels then prefetch
the rows they will need PREFETCH_AHEAD entries later, and the backward pass
(``csr_spmm_t_sddmm``) walks the pattern once in column order for both of its
products, so it gathers each gradient row once where the two separate products
would gather two operands' rows.

Public functions (``csr_spmm`` ...) check every index before use (O(nnz), so
no input can make them read outside their arrays); ``trusted`` (trusted.py)
has the same functions without that pass, for the sparse types, which
validate their read-only index arrays once when they are built.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import args
from . import checks as c
from .micro import (PREFETCH_AHEAD, add_indexed_rows, add_indexed_rows_far, add_rows8, dot,
                    gather_dot, is_far, prefetch_row, work_bounds)
from .wrap import contig, finish, out_buffer


@njit(cache=True)
def _epilogue(o, b, relu):
    """o += b, then (if relu) ReLU computed as x * (x > 0), exactly what the unfused operations
    give (NaN stays NaN)."""
    for j in range(o.shape[0]):
        v = o[j] + b
        o[j] = v if (v > 0 or not relu) else v * 0


@njit(parallel=True, cache=True)
def _spmm(indptr, indices, values, X, out, bias, has_bias, relu, far, n_threads):
    bounds = work_bounds(indptr, X.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        r0, r1 = bounds[t], bounds[t + 1]
        for r in range(r0, r1):
            o = out[r]  # (k,)
            o[:] = 0
            if far:
                add_indexed_rows_far(o, values, X, indices, indptr[r], indptr[r + 1], indptr[r1])
            else:
                add_indexed_rows(o, values, X, indices, indptr[r], indptr[r + 1])
            if has_bias or relu:
                _epilogue(o, bias[r] if has_bias else values.dtype.type(0), relu)
    return out


@njit(parallel=True, cache=True)
def _spmv(indptr, indices, values, x, out, bias, has_bias, relu, n_threads):
    # k = 1: a gathered dot product per row; no k-loop to vectorize.
    bounds = work_bounds(indptr, 1, n_threads)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            v = gather_dot(values, x, indices, indptr[r], indptr[r + 1])
            if has_bias:
                v += bias[r]
            if relu and not v > 0:
                v = v * 0
            out[r] = v
    return out


@njit(parallel=True, cache=True)
def _spmm_t(colptr, rowind, perm, values, G, out, scratch, far, n_threads):
    # Each thread first gathers its columns' values into CSC order (scratch), so the product
    # then reads them in order.
    bounds = work_bounds(colptr, G.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        c0, c1 = bounds[t], bounds[t + 1]
        for q in range(colptr[c0], colptr[c1]):
            scratch[q] = values[perm[q]]
        for col in range(c0, c1):
            o = out[col]
            o[:] = 0
            if far:
                add_indexed_rows_far(o, scratch, G, rowind, colptr[col], colptr[col + 1],
                                     colptr[c1])
            else:
                add_indexed_rows(o, scratch, G, rowind, colptr[col], colptr[col + 1])
    return out


@njit(parallel=True, cache=True)
def _sddmm(indptr, indices, A, B, out, far, n_threads):
    bounds = work_bounds(indptr, A.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        r0, r1 = bounds[t], bounds[t + 1]
        last = indptr[r1] - 1
        for r in range(r0, r1):
            a = A[r]  # (k,), reused for every entry of the row
            for p in range(indptr[r], indptr[r + 1]):
                if far:
                    prefetch_row(B, indices[min(p + PREFETCH_AHEAD, last)])
                out[p] = dot(a, B[indices[p]])
    return out


@njit(parallel=True, cache=True)
def _spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx, gv, scratch, far, n_threads):
    # One walk over the CSC pattern: for column c, every gathered gradient row G[r] serves both
    # gx[c] += w[r, c] * G[r] (the transposed product) and dot(G[r], X[c]) (the weight
    # gradient, written back to CSR order through perm), while X[c] and gx[c] stay in cache.
    bounds = work_bounds(colptr, G.shape[1], n_threads)
    for t in prange(bounds.shape[0] - 1):
        c0, c1 = bounds[t], bounds[t + 1]
        q0, q1 = colptr[c0], colptr[c1]
        for q in range(q0, q1):
            scratch[q] = values[perm[q]]
        for col in range(c0, c1):
            x = X[col]
            o = gx[col]
            o[:] = 0
            q, stop = colptr[col], colptr[col + 1]
            while q + 8 <= stop:
                if far:
                    for d in range(8):
                        prefetch_row(G, rowind[min(q + PREFETCH_AHEAD + d, q1 - 1)])
                for d in range(8):
                    gv[perm[q + d]] = dot(G[rowind[q + d]], x)
                add_rows8(o, scratch[q], G[rowind[q]], scratch[q + 1], G[rowind[q + 1]],
                          scratch[q + 2], G[rowind[q + 2]], scratch[q + 3], G[rowind[q + 3]],
                          scratch[q + 4], G[rowind[q + 4]], scratch[q + 5], G[rowind[q + 5]],
                          scratch[q + 6], G[rowind[q + 6]], scratch[q + 7], G[rowind[q + 7]])
                q += 8
            for p in range(q, stop):
                gv[perm[p]] = dot(G[rowind[p]], x)
            add_indexed_rows(o, scratch, G, rowind, q, stop)
    return gx


@njit(cache=True)
def _to_csc(indptr, indices, n_cols):
    # Counting sort by column; visiting entries in CSR order keeps rows
    # ascending within each column (and duplicates in CSR order).
    nnz = indices.shape[0]
    colptr = np.zeros(n_cols + 1, dtype=np.int64)
    for p in range(nnz):
        colptr[indices[p] + 1] += 1
    for col in range(n_cols):
        colptr[col + 1] += colptr[col]
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


# ----- trusted entry points: argument shapes checked in O(1), indices trusted ---------------

def spmm_trusted(indptr, indices, values, X, out, bias=None, relu=False):
    """csr_spmm for index arrays that are known to be valid (see the module docstring)."""
    _, _, k = args.csr_spmm(indptr, indices, values, X, out)
    bias_arr = args.bias_for(bias, out.shape[0], values.dtype)
    buf = out_buffer(out)
    ip, ix, v, X = contig(indptr), contig(indices), contig(values), contig(X)
    if k == 1:
        _spmv(ip, ix, v, X.reshape(-1), buf.reshape(-1), bias_arr, bias is not None, bool(relu),
              get_num_threads())
    elif k > 1:
        _spmm(ip, ix, v, X, buf, bias_arr, bias is not None, bool(relu), is_far(X),
              get_num_threads())
    return finish(out, buf)


def spmm_t_trusted(colptr, rowind, perm, values, G, out):
    """csr_spmm_t for index arrays that are known to be valid."""
    _, _, k = args.csr_spmm_t(colptr, rowind, perm, values, G, out)
    buf = out_buffer(out)
    if k > 0:
        G = contig(G)
        scratch = np.empty(values.shape[0], dtype=values.dtype)
        _spmm_t(contig(colptr), contig(rowind), contig(perm), contig(values), G, buf, scratch,
                is_far(G), get_num_threads())
    else:
        buf[...] = 0
    return finish(out, buf)


def sddmm_trusted(indptr, indices, A, B, out):
    """csr_sddmm for index arrays that are known to be valid."""
    _, _, k = args.csr_sddmm(indptr, indices, A, B, out)
    buf = out_buffer(out)
    if k == 0:
        buf[...] = 0
    else:
        B = contig(B)
        _sddmm(contig(indptr), contig(indices), contig(A), B, buf, is_far(B), get_num_threads())
    return finish(out, buf)


def spmm_t_sddmm_trusted(colptr, rowind, perm, values, G, X, gx_out, gv_out):
    """csr_spmm_t_sddmm for index arrays that are known to be valid."""
    _, _, k = args.csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out)
    gx, gv = out_buffer(gx_out), out_buffer(gv_out)
    if k == 0:
        gx[...], gv[...] = 0, 0
    else:
        G = contig(G)
        scratch = np.empty(values.shape[0], dtype=values.dtype)
        _spmm_t_sddmm(contig(colptr), contig(rowind), contig(perm), contig(values), G, contig(X),
                      gx, gv, scratch, is_far(G), get_num_threads())
    return finish(gx_out, gx), finish(gv_out, gv)


# ----- public entry points: every index checked first ----------------------------------------

def csr_spmm(indptr, indices, values, X, out, bias=None, relu=False):
    """out (n_rows, k) = W @ X for W in CSR, X (n_cols, k); then + bias[:, None] and ReLU
    when asked (fused: no extra pass over out). Returns out."""
    args.csr_spmm(indptr, indices, values, X, out)
    c.check_csr(indptr, indices, X.shape[0])
    return spmm_trusted(indptr, indices, values, X, out, bias, relu)


def csr_to_csc(indptr, indices, n_cols):
    """(colptr int64, rowind int32, perm int64): the CSC form of the pattern,
    CSC slot j holding values[perm[j]]; rows ascending within each column."""
    args.csr_to_csc(indptr, indices, n_cols)
    return _to_csc(contig(indptr), contig(indices), int(n_cols))


def csr_spmm_t(colptr, rowind, perm, values, G, out):
    """out (n_cols, k) = W.T @ G, G (n_rows, k), reading values[perm[j]]."""
    args.csr_spmm_t(colptr, rowind, perm, values, G, out)
    c.check_csr(colptr, rowind, G.shape[0])
    c.check_perm(perm, values.shape[0])
    return spmm_t_trusted(colptr, rowind, perm, values, G, out)


def csr_sddmm(indptr, indices, A, B, out):
    """out (nnz,): out[p] = dot(A[row(p)], B[indices[p]]), the gradient
    G @ X.T at the stored positions only."""
    args.csr_sddmm(indptr, indices, A, B, out)
    c.check_csr(indptr, indices, B.shape[0])
    return sddmm_trusted(indptr, indices, A, B, out)


def csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out):
    """Both gradients of a sparse layer in one pass over its CSC pattern (from csr_to_csc):
    gx_out (n_cols, k) = W.T @ G, and gv_out (nnz,) in CSR order with gv_out[p] =
    dot(G[row(p)], X[col(p)]), G (n_rows, k), X (n_cols, k). Returns (gx_out, gv_out)."""
    args.csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out)
    c.check_csr(colptr, rowind, G.shape[0])
    c.check_perm(perm, values.shape[0], unique=True)
    return spmm_t_sddmm_trusted(colptr, rowind, perm, values, G, X, gx_out, gv_out)
