"""Per-kernel argument contracts, shared by the reference and cpu backends.

Each function here checks the arguments of the kernel of the same name and
returns the sizes the kernel needs. Keeping one copy means both backends
reject exactly the same inputs with exactly the same messages.
"""

import numpy as np

from . import checks as c


def _k_of(name, arr, dtype, source):
    c.float_array(name, arr, ndim=2)
    c.same_dtype(name, arr, dtype, source)
    return arr.shape


# ---- CSR -------------------------------------------------------------------

def csr_values(indptr, indices, values):
    n_rows, nnz = c.csr_pattern(indptr, indices)
    dtype = c.float_array("values", values, ndim=1)
    c.shape("values", values, (nnz,), "one value per entry of indices")
    return n_rows, nnz, dtype


def bias_for(bias, n_rows, dtype):
    """The kernels' bias argument: `bias` checked ((n_rows,), dtype), or an empty placeholder."""
    if bias is None:
        return np.zeros(0, dtype=dtype)
    c.float_array("bias", bias, ndim=1)
    c.same_dtype("bias", bias, dtype, "values")
    c.shape("bias", bias, (n_rows,), "one entry per output row")
    return bias if bias.flags.c_contiguous else np.ascontiguousarray(bias)


def csr_spmm(indptr, indices, values, X, out):
    n_rows, _, dtype = csr_values(indptr, indices, values)
    n_cols, k = _k_of("X", X, dtype, "values")
    c.out_array(out, (n_rows, k), dtype, f"W with {n_rows} rows @ X of shape {X.shape}", [("X", X)])
    return n_rows, n_cols, k


def csr_to_csc(indptr, indices, n_cols):
    # Runs when a topology changes and is O(nnz) anyway: check every index,
    # since an out-of-range one would make the cpu version write out of bounds.
    n_cols = c.positive_int("n_cols", n_cols, minimum=0)
    c.check_csr(indptr, indices, n_cols)
    return indptr.shape[0] - 1, n_cols, indices.shape[0]


def csr_spmm_t(colptr, rowind, perm, values, G, out):
    n_cols, nnz = c.csr_pattern(colptr, rowind, "colptr", "rowind")
    c.csc_perm(perm, nnz)
    dtype = c.float_array("values", values, ndim=1)
    c.shape("values", values, (nnz,), "one value per entry of rowind")
    n_rows, k = _k_of("G", G, dtype, "values")
    c.out_array(out, (n_cols, k), dtype, f"W.T with {n_cols} rows @ G of shape {G.shape}", [("G", G)])
    return n_rows, n_cols, k


def csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out):
    n_cols, nnz = c.csr_pattern(colptr, rowind, "colptr", "rowind")
    c.csc_perm(perm, nnz)
    dtype = c.float_array("values", values, ndim=1)
    c.shape("values", values, (nnz,), "one value per entry of rowind")
    n_rows, k = _k_of("G", G, dtype, "values")
    _k_of("X", X, dtype, "values")
    c.shape("X", X, (n_cols, k), f"one row per column of W ({n_cols}) and G's k ({k})")
    for name, out, shape, why in (("gx_out", gx_out, (n_cols, k), "W.T @ G"),
                                  ("gv_out", gv_out, (nnz,), "one entry per stored value")):
        c.array(name, out)
        if out.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype}, got {out.dtype}")
        c.shape(name, out, shape, why)
        if not out.flags.writeable:
            raise ValueError(f"{name}: expected a writeable array")
        for other_name, other in (("G", G), ("X", X), ("values", values)):
            if c._may_share_memory(out, other):
                raise ValueError(f"{name}: must not overlap the input {other_name}")
    if c._may_share_memory(gx_out, gv_out):
        raise ValueError("gx_out: must not overlap gv_out")
    return n_rows, n_cols, k


def csr_sddmm(indptr, indices, A, B, out):
    n_rows, nnz = c.csr_pattern(indptr, indices)
    dtype = c.float_array("A", A, ndim=2)
    if A.shape[0] != n_rows:
        raise ValueError(f"A: expected shape ({n_rows}, k) (one row per CSR row), got {A.shape}")
    n_cols, k = _k_of("B", B, dtype, "A")
    if k != A.shape[1]:
        raise ValueError(f"B: expected shape (n_cols, {A.shape[1]}) to match A of shape {A.shape}, got {B.shape}")
    c.out_array(out, (nnz,), dtype, "one entry per stored position", [("A", A), ("B", B)])
    return n_rows, n_cols, k


# ---- BSR -------------------------------------------------------------------

def bsr_spmm(indptr, indices, blocks, X, out):
    n_brows, nnzb = c.csr_pattern(indptr, indices)
    bs = c.bsr_blocks(blocks, nnzb)
    n_cols, k = _k_of("X", X, blocks.dtype, "blocks")
    c.rows_multiple("X", X, bs, "the block size")
    c.out_array(out, (n_brows * bs, k), blocks.dtype,
                f"W with {n_brows} block rows of size {bs} @ X of shape {X.shape}", [("X", X)])
    return n_brows, n_cols // bs, bs, k


def bsr_spmm_t(colptr, rowind, perm, blocks, G, out):
    n_bcols, nnzb = c.csr_pattern(colptr, rowind, "colptr", "rowind")
    c.csc_perm(perm, nnzb)
    bs = c.bsr_blocks(blocks, nnzb)
    n_rows, k = _k_of("G", G, blocks.dtype, "blocks")
    c.rows_multiple("G", G, bs, "the block size")
    c.out_array(out, (n_bcols * bs, k), blocks.dtype,
                f"W.T with {n_bcols} block rows of size {bs} @ G of shape {G.shape}", [("G", G)])
    return n_rows // bs, n_bcols, bs, k


def bsr_sddmm(indptr, indices, A, B, out):
    n_brows, nnzb = c.csr_pattern(indptr, indices)
    dtype = c.float_array("A", A, ndim=2)
    c.float_array("out", out, ndim=3)
    c.same_dtype("out", out, dtype, "A")
    bs = out.shape[1]
    c.shape("out", out, (nnzb, bs, bs), f"(nnzb, bs, bs) with nnzb = {nnzb}, bs = out.shape[1]")
    if bs < 1:
        raise ValueError(f"out: expected a block size out.shape[1] >= 1, got {out.shape}")
    c.shape("A", A, (n_brows * bs, A.shape[1]), f"{n_brows} block rows of size {bs}")
    n_cols, k = _k_of("B", B, dtype, "A")
    c.rows_multiple("B", B, bs, "the block size")
    if k != A.shape[1]:
        raise ValueError(f"B: expected shape (n_cols, {A.shape[1]}) to match A of shape {A.shape}, got {B.shape}")
    c.out_array(out, out.shape, dtype, "", [("A", A), ("B", B)])
    return n_brows, n_cols // bs, bs, k


# ---- N:M -------------------------------------------------------------------

def nm_spmm(values, idx, M, X, out):
    n_rows, n_groups, n_keep = c.nm_pattern(idx, M, values)
    _, k = _k_of("X", X, values.dtype, "values")
    c.shape("X", X, (n_groups * M, k), f"n_groups * M = {n_groups} * {M} rows for values of shape {values.shape}")
    c.out_array(out, (n_rows, k), values.dtype, f"W with {n_rows} rows @ X of shape {X.shape}", [("X", X)])
    return n_rows, n_groups, n_keep, k


def nm_spmm_t(values, idx, M, G, out):
    n_rows, n_groups, n_keep = c.nm_pattern(idx, M, values)
    _, k = _k_of("G", G, values.dtype, "values")
    c.shape("G", G, (n_rows, k), f"one row per row of values of shape {values.shape}")
    c.out_array(out, (n_groups * M, k), values.dtype,
                f"W.T with {n_groups * M} rows @ G of shape {G.shape}", [("G", G)])
    return n_rows, n_groups, n_keep, k


def nm_sddmm(idx, M, A, B, out):
    n_rows, n_groups, n_keep = c.nm_pattern(idx, M)
    dtype = c.float_array("A", A, ndim=2)
    k = A.shape[1]
    c.shape("A", A, (n_rows, k), f"one row per row of idx of shape {idx.shape}")
    _k_of("B", B, dtype, "A")
    c.shape("B", B, (n_groups * M, k), f"n_groups * M rows and k matching A of shape {A.shape}")
    c.out_array(out, idx.shape, dtype, "the shape of idx", [("A", A), ("B", B)])
    return n_rows, n_groups, n_keep, k


# ---- conversions -----------------------------------------------------------

def dense2d(dense):
    return c.float_array("dense", dense, ndim=2)


def csr_to_dense(indptr, indices, values, n_cols, out):
    n_rows, _, dtype = csr_values(indptr, indices, values)
    n_cols = c.positive_int("n_cols", n_cols, minimum=0)
    c.check_csr(indptr, indices, n_cols)  # not a hot path: check every index
    c.out_array(out, (n_rows, n_cols), dtype, f"{n_rows} CSR rows and n_cols = {n_cols}")
    return n_rows, n_cols


def bsr_to_dense(indptr, indices, blocks, n_block_cols, out):
    n_brows, nnzb = c.csr_pattern(indptr, indices)
    bs = c.bsr_blocks(blocks, nnzb)
    n_bcols = c.positive_int("n_block_cols", n_block_cols, minimum=0)
    c.check_csr(indptr, indices, n_bcols)  # not a hot path: check every index
    c.out_array(out, (n_brows * bs, n_bcols * bs), blocks.dtype,
                f"{n_brows} x {n_bcols} blocks of size {bs}")
    return n_brows, n_bcols, bs


def nm_to_dense(values, idx, M, out):
    n_rows, n_groups, _ = c.nm_pattern(idx, M, values)
    c.check_nm(values, idx, M)  # not a hot path: check every offset
    c.out_array(out, (n_rows, n_groups * M), values.dtype, f"values of shape {values.shape} and M = {M}")
    return n_rows, n_groups


def bsr_from_dense(dense, bs, block_mask):
    dense2d(dense)
    bs = c.positive_int("bs", bs)
    if dense.shape[0] % bs or dense.shape[1] % bs:
        raise ValueError(f"dense: expected both dimensions to be multiples of bs = {bs}, got {dense.shape}")
    c.array("block_mask", block_mask, ndim=2)
    if block_mask.dtype != bool:
        raise TypeError(f"block_mask: expected dtype bool, got {block_mask.dtype}")
    c.shape("block_mask", block_mask, (dense.shape[0] // bs, dense.shape[1] // bs),
            f"dense of shape {dense.shape} in blocks of {bs}")
    return bs


def nm_from_dense(dense, N, M):
    dense2d(dense)
    M = c.positive_int("M", M)
    N = c.positive_int("N", N)
    if M > 256 or N > M:
        raise ValueError(f"N, M: expected 1 <= N <= M <= 256, got N = {N}, M = {M}")
    if dense.shape[1] % M:
        raise ValueError(f"dense: expected n_cols to be a multiple of M = {M}, got shape {dense.shape}")
    return N, M


# ---- top-k -----------------------------------------------------------------

def topk_per_row(scores, k, out):
    dtype = c.float_array("scores", scores, ndim=2)
    k = c.positive_int("k", k, minimum=0)
    if k > scores.shape[1]:
        raise ValueError(f"k: expected k <= n_cols = {scores.shape[1]} of scores {scores.shape}, got {k}")
    c.out_array(out, (scores.shape[0], k), c.INDEX_DTYPE, f"scores of shape {scores.shape} and k = {k}")
    c.no_nan("scores", scores)
    return dtype


def topk_per_group(scores, N, out):
    c.float_array("scores", scores, ndim=3)
    N = c.positive_int("N", N, minimum=0)
    if scores.shape[2] > 256 or N > scores.shape[2]:
        raise ValueError(f"N: expected N <= M = scores.shape[2] <= 256, got N = {N}, scores {scores.shape}")
    c.out_array(out, scores.shape[:2] + (N,), c.NM_INDEX_DTYPE, f"scores of shape {scores.shape} and N = {N}")
    c.no_nan("scores", scores)


def topk_flat(scores, k):
    c.float_array("scores", scores, ndim=1)
    k = c.positive_int("k", k, minimum=0)
    if k > scores.shape[0]:
        raise ValueError(f"k: expected k <= scores.shape[0] = {scores.shape[0]}, got {k}")
    c.no_nan("scores", scores)
    return k


def dense_grad_topk(G, X, exclude_indptr, exclude_indices, k_top, chunk_rows):
    dtype = c.float_array("G", G, ndim=2)
    n_cols, k = _k_of("X", X, dtype, "G")
    if k != G.shape[1]:
        raise ValueError(f"X: expected shape (n_cols, {G.shape[1]}) to match G of shape {G.shape}, got {X.shape}")
    n_rows, nnz = c.csr_pattern(exclude_indptr, exclude_indices, "exclude_indptr", "exclude_indices")
    if n_rows != G.shape[0]:
        raise ValueError(f"exclude_indptr: expected shape ({G.shape[0] + 1},) for G of shape {G.shape},"
                         f" got {exclude_indptr.shape}")
    k_top = c.positive_int("k_top", k_top, minimum=0)
    chunk_rows = c.positive_int("chunk_rows", chunk_rows)
    if k_top > n_rows * n_cols - nnz:
        raise ValueError(f"k_top: expected at most {n_rows * n_cols - nnz} free positions, got {k_top}")
    return n_rows, n_cols, k_top, chunk_rows


# ---- convolution -----------------------------------------------------------

def conv_geometry(H, W, kh, kw, stride, padding):
    kh, kw = c.positive_int("kh", kh), c.positive_int("kw", kw)
    stride = c.positive_int("stride", stride)
    padding = c.positive_int("padding", padding, minimum=0)
    h_out = (H + 2 * padding - kh) // stride + 1
    w_out = (W + 2 * padding - kw) // stride + 1
    if H + 2 * padding < kh or W + 2 * padding < kw:
        raise ValueError(f"kh, kw: the kernel ({kh}, {kw}) is larger than the padded image"
                         f" ({H + 2 * padding}, {W + 2 * padding})")
    return kh, kw, stride, padding, h_out, w_out


def im2col(x, kh, kw, stride, padding, out):
    dtype = c.float_array("x", x, ndim=4)
    B, C, H, W = x.shape
    kh, kw, stride, padding, h_out, w_out = conv_geometry(H, W, kh, kw, stride, padding)
    c.out_array(out, (B, C * kh * kw, h_out * w_out), dtype,
                f"x of shape {x.shape}, kernel ({kh}, {kw}), stride {stride}, padding {padding}", [("x", x)])
    return kh, kw, stride, padding, h_out, w_out


def col2im(cols, C, H, W, kh, kw, stride, padding, out):
    dtype = c.float_array("cols", cols, ndim=3)
    C, H, W = c.positive_int("C", C), c.positive_int("H", H), c.positive_int("W", W)
    kh, kw, stride, padding, h_out, w_out = conv_geometry(H, W, kh, kw, stride, padding)
    B = cols.shape[0]
    c.shape("cols", cols, (B, C * kh * kw, h_out * w_out),
            f"C = {C}, (H, W) = ({H}, {W}), kernel ({kh}, {kw}), stride {stride}, padding {padding}")
    c.out_array(out, (B, C, H, W), dtype, f"cols of shape {cols.shape}", [("cols", cols)])
    return kh, kw, stride, padding, h_out, w_out


# ---- fused elementwise steps and optimizer updates ----------------------------

def _writeable(name, arr):
    if not getattr(arr.flags, "writeable", True):        # CuPy arrays have no such flag
        raise ValueError(f"{name}: expected a writeable array (it is written in place)")


def relu_backward(grad, activation, out, row_sums):
    dtype = c.float_array("grad", grad, ndim=2)
    c.float_array("activation", activation, ndim=2)
    c.same_dtype("activation", activation, dtype, "grad")
    c.shape("activation", activation, grad.shape, "the shape of grad")
    c.out_array(out, grad.shape, dtype, "the shape of grad")
    c.float_array("row_sums", row_sums, ndim=1)
    c.same_dtype("row_sums", row_sums, dtype, "grad")
    c.shape("row_sums", row_sums, grad.shape[:1], "one entry per row of grad")
    _writeable("row_sums", row_sums)


def _number(name, value, low=None, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected a number >= {low}, got {value}")
    if high is not None and value >= high:
        raise ValueError(f"{name}: expected a number < {high}, got {value}")


def _param_and_grad(param, grad):
    dtype = c.float_array("param", param, ndim=1)
    c.float_array("grad", grad, ndim=1)
    c.same_dtype("grad", grad, dtype, "param")
    c.shape("grad", grad, param.shape, "the shape of param")
    _writeable("param", param)
    return dtype


def _state(name, arr, param):
    c.float_array(name, arr, ndim=1)
    c.same_dtype(name, arr, param.dtype, "param")
    c.shape(name, arr, param.shape, "the shape of param")
    _writeable(name, arr)
    if c._may_share_memory(arr, param):
        raise ValueError(f"{name}: must not overlap param")


def sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov):
    _param_and_grad(param, grad)
    _number("lr", lr, 0)
    _number("momentum", momentum, 0, 1)
    _number("weight_decay", weight_decay, 0)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__}")
    if momentum:
        _state("momentum_buf", momentum_buf, param)
    elif nesterov:
        raise ValueError("nesterov: needs momentum > 0")


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    _param_and_grad(param, grad)
    _state("m", m, param)
    _state("v", v, param)
    if c._may_share_memory(m, v):
        raise ValueError("m: must not overlap v")
    _number("lr", lr, 0)
    _number("beta1", beta1, 0, 1)
    _number("beta2", beta2, 0, 1)
    _number("eps", eps, 0)
    _number("weight_decay", weight_decay, 0)
    if not isinstance(decoupled, (bool, np.bool_)):
        raise TypeError(f"decoupled: expected a bool, got {type(decoupled).__name__}")
    c.positive_int("step", step)
