"""CSR kernels (gpu backend). The spec of each is in ``kernels.reference``.

Two ways to map a CSR product onto threads (tutorial 12 times both):

- thread per row: thread r walks row r's stored entries and, for each column j of X, sums
  values[p] * X[indices[p], j]. It is the CPU kernel's loop moved to the GPU: neighbouring
  threads read different rows of X, so a warp's 32 loads of X touch 32 places in memory.
- warp per row: the lanes of a warp take 32 neighbouring columns j of the same row r. Each
  step reads one (index, value) pair, shared by the whole warp, and one 32-wide piece of a row
  of X: a single coalesced load. This is the default whenever X has more than one column.

The transposed product is the same warp-per-row loop over the CSC permutation (a gather, no
atomics), and SDDMM gives each CSR row one warp that computes 32 dot products per round,
their partial sums passed through shared memory (``launch.tile_dot``).
Every output element is written by one thread in a fixed order: results are deterministic.
"""
import numpy as np
from numba import cuda, float64

from ..cpu import args, checks
from .launch import (TILE, WARP, array_module, clamped_range, contig, finish, flat_launch,
                     out_buffer, row_column_launch, tile_dot, tile_flush, zero_of)


@cuda.jit(device=True)
def epilogue(acc, bias, r, relu, zero):
    """The layer's bias and ReLU, applied to out[r, j] in the register that summed it (the
    reference's out * (out > 0): a negative sum becomes -0.0, a NaN stays NaN)."""
    if bias.shape[0]:
        acc += bias[r]
    if relu and not acc > 0:
        acc = acc * zero
    return acc


@cuda.jit
def _spmm_thread_per_row(indptr, indices, values, X, out, zero, bias, relu):
    r = cuda.grid(1)
    if r < out.shape[0]:
        start, stop = clamped_range(indptr, r, indices.shape[0])
        for j in range(out.shape[1]):
            acc = zero
            for p in range(start, stop):
                acc += values[p] * X[indices[p], j]
            out[r, j] = epilogue(acc, bias, r, relu, zero)


@cuda.jit
def _spmm_warp_per_row(indptr, indices, values, X, out, zero, bias, relu):
    j, r = cuda.grid(2)                              # j: a column of X (the lanes), r: a row
    if r < out.shape[0] and j < out.shape[1]:
        start, stop = clamped_range(indptr, r, indices.shape[0])
        acc = zero
        for p in range(start, stop):
            acc += values[p] * X[indices[p], j]
        out[r, j] = epilogue(acc, bias, r, relu, zero)


@cuda.jit
def _spmm_t_warp_per_column(colptr, rowind, perm, values, G, out, zero):
    j, c = cuda.grid(2)                              # c: a column of W = a row of out
    if c < out.shape[0] and j < out.shape[1]:
        start, stop = clamped_range(colptr, c, rowind.shape[0])
        acc = zero
        for q in range(start, stop):
            acc += values[perm[q]] * G[rowind[q], j]
        out[c, j] = acc


@cuda.jit
def _sddmm_warp_per_row(indptr, indices, A, B, out, zero):
    r = cuda.blockIdx.x                              # one warp (block of 32) per row
    lane = cuda.threadIdx.x
    partial = cuda.shared.array(TILE, float64)
    start, stop = clamped_range(indptr, r, indices.shape[0])
    for p0 in range(start, stop, WARP):              # 32 entries of the row per round
        for e in range(min(WARP, stop - p0)):
            tile_dot(partial, e, lane, A, r, B, indices[p0 + e], zero)
        cuda.syncthreads()
        tile_flush(partial, lane, out, p0, stop)
        cuda.syncthreads()                           # the tile is refilled next round


@cuda.jit
def _sddmm_csc_warp_per_column(colptr, rowind, perm, G, X, out, zero):
    c = cuda.blockIdx.x                              # one warp per column of W
    lane = cuda.threadIdx.x
    partial = cuda.shared.array(TILE, float64)
    start, stop = clamped_range(colptr, c, rowind.shape[0])
    for q0 in range(start, stop, WARP):
        for e in range(min(WARP, stop - q0)):
            tile_dot(partial, e, lane, G, rowind[q0 + e], X, c, zero)
        cuda.syncthreads()
        if q0 + lane < stop:                         # tile_flush, written through perm
            total = 0.0
            for other in range(WARP):
                total += partial[lane, other]
            out[perm[q0 + lane]] = total
        cuda.syncthreads()


@cuda.jit
def _row_of_entry(indptr, rows):
    r = cuda.grid(1)
    if r < indptr.shape[0] - 1:
        start, stop = clamped_range(indptr, r, rows.shape[0])
        for p in range(start, stop):
            rows[p] = r


def row_of_entry(indptr, nnz):
    """int32 (nnz,): the row of every stored entry (an index helper for conversions)."""
    xp = array_module(indptr)
    rows = xp.empty(nnz, dtype=np.int32)
    n_rows = indptr.shape[0] - 1
    if n_rows > 0 and nnz > 0:
        blocks, threads = flat_launch(n_rows)
        _row_of_entry[blocks, threads](indptr, rows)
    return rows


SPMM_STRATEGIES = {"thread_per_row": _spmm_thread_per_row, "warp_per_row": _spmm_warp_per_row}


def _bias_for(bias, n_rows, values):
    """The kernels' bias argument: `bias` checked ((n_rows,), values' dtype), or an empty
    array on the same device (the kernels test its length)."""
    if bias is None:
        return array_module(values).zeros(0, dtype=values.dtype)
    checks.float_array("bias", bias, ndim=1)
    checks.same_dtype("bias", bias, values.dtype, "values")
    checks.shape("bias", bias, (n_rows,), "one entry per output row")
    return contig(bias)


def csr_spmm_with(strategy, indptr, indices, values, X, out, bias=None, relu=False):
    """csr_spmm with a chosen thread mapping: "thread_per_row" or "warp_per_row"."""
    n_rows, _, k = args.csr_spmm(indptr, indices, values, X, out)
    if strategy not in SPMM_STRATEGIES:
        raise ValueError(f"strategy: expected one of {sorted(SPMM_STRATEGIES)}, got {strategy!r}")
    bias = _bias_for(bias, n_rows, values)
    buf = out_buffer(out)
    if n_rows and k:
        ip, ix, v, X = contig(indptr), contig(indices), contig(values), contig(X)
        if strategy == "thread_per_row":
            blocks, threads = flat_launch(n_rows)
        else:
            blocks, threads = row_column_launch(n_rows, k)
        SPMM_STRATEGIES[strategy][blocks, threads](ip, ix, v, X, buf, zero_of(values), bias,
                                                   bool(relu))
    return finish(out, buf)


def csr_spmm(indptr, indices, values, X, out, bias=None, relu=False):
    """out (n_rows, k) = W @ X for W in CSR, X (n_cols, k); then + bias[:, None] when a bias
    (n_rows,) is given, then ReLU when relu is true, all in one pass. Returns out.

    k = 1 (a matrix-vector product) uses a thread per row: a warp per row would leave 31 of
    its 32 lanes idle."""
    k = X.shape[1] if getattr(X, "ndim", 0) == 2 else 0
    return csr_spmm_with("thread_per_row" if k == 1 else "warp_per_row",
                         indptr, indices, values, X, out, bias, relu)


def csr_to_csc(indptr, indices, n_cols):
    """(colptr int64, rowind int32, perm int64): the CSC form of the pattern, CSC slot j
    holding values[perm[j]]; rows ascending within each column (duplicates in CSR order)."""
    n_rows, n_cols, nnz = args.csr_to_csc(indptr, indices, n_cols)
    xp = array_module(indptr)
    colptr = xp.zeros(n_cols + 1, dtype=np.int64)
    if nnz == 0:
        return colptr, xp.zeros(0, dtype=np.int32), xp.zeros(0, dtype=np.int64)
    # Sorting by (column, CSR position) keeps rows ascending inside a column, since CSR
    # positions grow with the row; the keys are unique, so any sort gives this one order.
    keys = indices.astype(np.int64) * nnz + xp.arange(nnz, dtype=np.int64)
    perm = xp.argsort(keys).astype(np.int64)
    rowind = row_of_entry(contig(indptr), nnz)[perm]
    colptr[1:] = xp.cumsum(xp.bincount(indices, minlength=n_cols))
    return colptr, rowind, perm


def csr_spmm_t(colptr, rowind, perm, values, G, out):
    """out (n_cols, k) = W.T @ G, G (n_rows, k), reading values[perm[j]]."""
    _, n_cols, k = args.csr_spmm_t(colptr, rowind, perm, values, G, out)
    buf = out_buffer(out)
    if n_cols and k:
        blocks, threads = row_column_launch(n_cols, k)
        _spmm_t_warp_per_column[blocks, threads](contig(colptr), contig(rowind), contig(perm),
                                                 contig(values), contig(G), buf, zero_of(values))
    return finish(out, buf)


def csr_sddmm(indptr, indices, A, B, out):
    """out (nnz,): out[p] = dot(A[row(p)], B[indices[p]]), the gradient G @ X.T at the
    stored positions only."""
    n_rows, _, _ = args.csr_sddmm(indptr, indices, A, B, out)
    buf = out_buffer(out)
    if n_rows and indices.shape[0]:
        _sddmm_warp_per_row[n_rows, WARP](contig(indptr), contig(indices), contig(A), contig(B),
                                          buf, zero_of(A))
    return finish(out, buf)




def csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out):
    """Both gradients of a sparse layer from its CSC pattern (csr_to_csc): gx_out (n_cols, k)
    = W.T @ G, and gv_out (nnz,) in CSR order with gv_out[perm[j]] = dot(G[rowind[j]],
    X[col(j)]). Two kernels over the same CSC pattern. Returns (gx_out, gv_out)."""
    n_cols, nnz = checks.csr_pattern(colptr, rowind, "colptr", "rowind")
    k = G.shape[1] if getattr(G, "ndim", 0) == 2 else 0
    checks.float_array("X", X, ndim=2)
    checks.same_dtype("X", X, values.dtype, "values")
    checks.shape("X", X, (n_cols, k), f"one row per column of W ({n_cols}) and G's k ({k})")
    checks.float_array("gv_out", gv_out, ndim=1)
    checks.same_dtype("gv_out", gv_out, values.dtype, "values")
    checks.shape("gv_out", gv_out, (nnz,), "one entry per stored value")
    csr_spmm_t(colptr, rowind, perm, values, G, gx_out)
    buf = out_buffer(gv_out)
    if n_cols and nnz:
        _sddmm_csc_warp_per_column[n_cols, WARP](contig(colptr), contig(rowind), contig(perm),
                                                 contig(G), contig(X), buf, zero_of(G))
    return gx_out, finish(gv_out, buf)
