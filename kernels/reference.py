"""Reference kernels: plain NumPy, slow, obviously right. THIS IS THE SPEC.

Conventions (shared by every backend):
- W has shape (n_rows, n_cols) = (out_features, in_features); activations are
  feature-major, X (n_cols, k) with k the batch size, so Y = W @ X is (n_rows, k).
- CSR: indptr int64 (n_rows + 1,), indices int32 (nnz,), values float (nnz,).
  Duplicate entries are summed, like scipy does.
- BSR: the same with block rows/columns and blocks (nnzb, bs, bs).
- N:M: values and idx (n_rows, n_groups, N); idx uint8 in-group offsets.
- Every kernel with an ``out`` argument overwrites ``out`` and returns it.
- Top-k order: larger score first; among equal scores the lower index wins.
- Index arrays must be valid (indices in range, indptr non-decreasing, N:M
  offsets strictly increasing in [0, M)). The reference checks them on every
  call; the cpu kernels trust them for speed (see check_csr / check_nm).
"""

import sys

import numpy as np

from .cpu import args
from .cpu.checks import check_csr, check_nm

trusted = sys.modules[__name__]     # the reference checks everything: its trusted path is itself


def _row_of_entry(indptr):
    """Row number of every stored entry, (nnz,)."""
    return np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))


# ---- CSR -------------------------------------------------------------------

def csr_spmm(indptr, indices, values, X, out, bias=None, relu=False):
    """out (n_rows, k) = W @ X for W in CSR and X (n_cols, k); then out += bias[:, None]
    when a bias (n_rows,) is given, then ReLU (out * (out > 0)) when relu is true."""
    n_rows, _, _ = args.csr_spmm(indptr, indices, values, X, out)
    check_csr(indptr, indices, X.shape[0])
    bias = args.bias_for(bias, n_rows, values.dtype) if bias is not None else None
    for r in range(n_rows):
        acc = np.zeros(X.shape[1], dtype=X.dtype)
        for p in range(indptr[r], indptr[r + 1]):
            acc += values[p] * X[indices[p]]
        out[r] = acc
    if bias is not None:
        out += bias[:, None]
    if relu:
        out *= out > 0
    return out


def csr_to_csc(indptr, indices, n_cols):
    """CSC structure of a CSR pattern: (colptr int64, rowind int32, perm int64).

    CSC position j holds values[perm[j]]. Within a column, entries are sorted
    by row, and equal (row, col) entries keep their CSR order.
    """
    args.csr_to_csc(indptr, indices, n_cols)
    rows = _row_of_entry(indptr)
    entries = sorted(range(indices.shape[0]), key=lambda p: (indices[p], rows[p], p))
    perm = np.array(entries, dtype=np.int64)
    counts = np.bincount(indices, minlength=n_cols)
    colptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return colptr, rows[perm].astype(np.int32), perm


def csr_spmm_t(colptr, rowind, perm, values, G, out):
    """out (n_cols, k) = W.T @ G, G (n_rows, k), via the CSC permutation."""
    _, n_cols, _ = args.csr_spmm_t(colptr, rowind, perm, values, G, out)
    check_csr(colptr, rowind, G.shape[0])
    for col in range(n_cols):
        acc = np.zeros(G.shape[1], dtype=G.dtype)
        for j in range(colptr[col], colptr[col + 1]):
            acc += values[perm[j]] * G[rowind[j]]
        out[col] = acc
    return out


def csr_sddmm(indptr, indices, A, B, out):
    """out (nnz,): out[p] = dot(A[row(p)], B[indices[p]]) = (A @ B.T) at the pattern."""
    args.csr_sddmm(indptr, indices, A, B, out)
    check_csr(indptr, indices, B.shape[0])
    rows = _row_of_entry(indptr)
    for p in range(indices.shape[0]):
        out[p] = np.dot(A[rows[p]], B[indices[p]])
    return out


def csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out):
    """Both gradients of a sparse layer from its CSC pattern (csr_to_csc):
    gx_out (n_cols, k) = W.T @ G, and gv_out (nnz,) in CSR order with
    gv_out[perm[j]] = dot(G[rowind[j]], X[col(j)]). Returns (gx_out, gv_out)."""
    _, n_cols, _ = args.csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X, gx_out, gv_out)
    check_csr(colptr, rowind, G.shape[0])
    csr_spmm_t(colptr, rowind, perm, values, G, gx_out)
    cols = _row_of_entry(colptr)                     # the column of every CSC slot
    for j in range(rowind.shape[0]):
        gv_out[perm[j]] = np.dot(G[rowind[j]], X[cols[j]])
    return gx_out, gv_out


# ---- BSR -------------------------------------------------------------------

def bsr_spmm(indptr, indices, blocks, X, out):
    """out (n_block_rows * bs, k) = W @ X for W in BSR."""
    n_brows, n_bcols, bs, _ = args.bsr_spmm(indptr, indices, blocks, X, out)
    check_csr(indptr, indices, n_bcols)
    out[...] = 0
    for br in range(n_brows):
        for p in range(indptr[br], indptr[br + 1]):
            bc = indices[p]
            out[br * bs:(br + 1) * bs] += blocks[p] @ X[bc * bs:(bc + 1) * bs]
    return out


def bsr_to_bsc(indptr, indices, n_block_cols):
    """Block version of csr_to_csc: (colptr, rowind, perm) over blocks."""
    return csr_to_csc(indptr, indices, n_block_cols)


def bsr_spmm_t(colptr, rowind, perm, blocks, G, out):
    """out (n_block_cols * bs, k) = W.T @ G for W in BSR (via its BSC permutation)."""
    n_brows, n_bcols, bs, _ = args.bsr_spmm_t(colptr, rowind, perm, blocks, G, out)
    check_csr(colptr, rowind, n_brows)
    out[...] = 0
    for bc in range(n_bcols):
        for j in range(colptr[bc], colptr[bc + 1]):
            br = rowind[j]
            out[bc * bs:(bc + 1) * bs] += blocks[perm[j]].T @ G[br * bs:(br + 1) * bs]
    return out


def bsr_sddmm(indptr, indices, A, B, out):
    """out (nnzb, bs, bs) = (A @ B.T) restricted to the stored blocks."""
    _, n_bcols, bs, _ = args.bsr_sddmm(indptr, indices, A, B, out)
    check_csr(indptr, indices, n_bcols)
    rows = _row_of_entry(indptr)
    for p in range(indices.shape[0]):
        br, bc = rows[p], indices[p]
        out[p] = A[br * bs:(br + 1) * bs] @ B[bc * bs:(bc + 1) * bs].T
    return out


# ---- N:M -------------------------------------------------------------------

def nm_spmm(values, idx, M, X, out):
    """out (n_rows, k) = W @ X for W in N:M storage, X (n_groups * M, k)."""
    args.nm_spmm(values, idx, M, X, out)
    W = nm_to_dense(values, idx, M, np.zeros((values.shape[0], X.shape[0]), values.dtype))
    out[...] = W @ X
    return out


def nm_spmm_t(values, idx, M, G, out):
    """out (n_groups * M, k) = W.T @ G for W in N:M storage."""
    args.nm_spmm_t(values, idx, M, G, out)
    W = nm_to_dense(values, idx, M, np.zeros((values.shape[0], out.shape[0]), values.dtype))
    out[...] = W.T @ G
    return out


def nm_sddmm(idx, M, A, B, out):
    """out (n_rows, n_groups, N): out[r, g, n] = dot(A[r], B[g * M + idx[r, g, n]])."""
    n_rows, n_groups, n_keep, _ = args.nm_sddmm(idx, M, A, B, out)
    check_nm(out, idx, M)
    for r in range(n_rows):
        for g in range(n_groups):
            for n in range(n_keep):
                out[r, g, n] = np.dot(A[r], B[g * M + idx[r, g, n]])
    return out


# ---- conversions -----------------------------------------------------------

def csr_from_dense(dense):
    """CSR (indptr, indices, values) of the nonzeros of a 2-D float array."""
    args.dense2d(dense)
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(rows, minlength=dense.shape[0]))
    return indptr, cols.astype(np.int32), dense[rows, cols]


def csr_to_dense(indptr, indices, values, n_cols, out):
    """out (n_rows, n_cols): the dense matrix (duplicate entries summed)."""
    args.csr_to_dense(indptr, indices, values, n_cols, out)
    out[...] = 0
    np.add.at(out, (_row_of_entry(indptr), indices), values)
    return out


def bsr_from_dense(dense, bs, block_mask):
    """BSR (indptr, indices, blocks) keeping the blocks where block_mask is True
    (stored even when they are all zero)."""
    args.bsr_from_dense(dense, bs, block_mask)
    brows, bcols = np.nonzero(block_mask)
    indptr = np.zeros(block_mask.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(brows, minlength=block_mask.shape[0]))
    blocks = np.empty((brows.shape[0], bs, bs), dtype=dense.dtype)
    for p, (br, bc) in enumerate(zip(brows, bcols)):
        blocks[p] = dense[br * bs:(br + 1) * bs, bc * bs:(bc + 1) * bs]
    return indptr, bcols.astype(np.int32), blocks


def bsr_to_dense(indptr, indices, blocks, n_block_cols, out):
    """out (n_block_rows * bs, n_block_cols * bs): the dense matrix (duplicates summed)."""
    _, _, bs = args.bsr_to_dense(indptr, indices, blocks, n_block_cols, out)
    out[...] = 0
    rows = _row_of_entry(indptr)
    for p in range(indices.shape[0]):
        br, bc = rows[p], indices[p]
        out[br * bs:(br + 1) * bs, bc * bs:(bc + 1) * bs] += blocks[p]
    return out


def nm_from_dense(dense, N, M):
    """N:M (values, idx) keeping the N largest |dense| per group of M columns
    (ties: lower column wins), offsets ascending within each group."""
    N, M = args.nm_from_dense(dense, N, M)
    n_rows, n_cols = dense.shape
    groups = dense.reshape(n_rows, n_cols // M, M)
    idx = topk_per_group(np.abs(groups), N, np.empty((n_rows, n_cols // M, N), np.uint8))
    values = np.take_along_axis(groups, idx.astype(np.int64), axis=2)
    return values, idx


def nm_to_dense(values, idx, M, out):
    """out (n_rows, n_groups * M): the dense matrix of N:M storage."""
    n_rows, n_groups = args.nm_to_dense(values, idx, M, out)
    out[...] = 0
    for r in range(n_rows):
        for g in range(n_groups):
            for n in range(idx.shape[2]):
                out[r, g * M + idx[r, g, n]] += values[r, g, n]
    return out


# ---- top-k -----------------------------------------------------------------

def _topk_sorted(scores_1d, k):
    """Indices of the k largest, ties to the lower index, returned ascending."""
    order = np.argsort(-scores_1d, kind="stable")  # stable: equal scores keep index order
    return np.sort(order[:k])


def topk_per_row(scores, k, out):
    """out (n_rows, k) int32: per row, the columns of the k largest scores,
    sorted ascending. Tie rule: among equal scores the lower column wins.
    NaN scores are rejected. int32 so that out.ravel() is a CSR indices array."""
    args.topk_per_row(scores, k, out)
    for r in range(scores.shape[0]):
        out[r] = _topk_sorted(scores[r], k)
    return out


def topk_per_group(scores, N, out):
    """out (n_rows, n_groups, N) uint8: per group of M = scores.shape[2], the
    offsets of the N largest scores, ascending; ties: lower offset wins.
    The result is directly an N:M ``idx`` array."""
    args.topk_per_group(scores, N, out)
    for r in range(scores.shape[0]):
        for g in range(scores.shape[1]):
            out[r, g] = _topk_sorted(scores[r, g], N)
    return out


def topk_flat(scores, k):
    """int64 indices of the k largest entries of a 1-D array, ascending;
    ties: lower index wins."""
    k = args.topk_flat(scores, k)
    return _topk_sorted(scores, k).astype(np.int64)


def dense_grad_topk(G, X, exclude_indptr, exclude_indices, k_top, chunk_rows):
    """The k_top positions (r, c) with the largest |(G @ X.T)[r, c]| that are NOT
    in the CSR pattern (exclude_indptr, exclude_indices): RigL's growth rule.

    Computed chunk_rows rows of the dense gradient at a time with a running
    top-k, so memory stays at chunk_rows * n_cols + k_top. Returns
    (rows int64, cols int64, scores) sorted by (row, col); ties: lower flat
    index r * n_cols + c wins.
    """
    n_rows, n_cols, k_top, chunk_rows = args.dense_grad_topk(
        G, X, exclude_indptr, exclude_indices, k_top, chunk_rows)
    best_flat = np.zeros(0, dtype=np.int64)
    best_score = np.zeros(0, dtype=G.dtype)
    for r0 in range(0, n_rows, chunk_rows):
        r1 = min(r0 + chunk_rows, n_rows)
        chunk = np.abs(G[r0:r1] @ X.T)  # (r1 - r0, n_cols)
        free = np.ones(chunk.shape, dtype=bool)
        for r in range(r0, r1):
            free[r - r0, exclude_indices[exclude_indptr[r]:exclude_indptr[r + 1]]] = False
        flat = np.flatnonzero(free) + r0 * n_cols
        # Candidates stay in flat-index order, so a stable sort breaks ties by index.
        cand_flat = np.concatenate([best_flat, flat])
        cand_score = np.concatenate([best_score, chunk[free]])
        keep = _topk_sorted(cand_score, min(k_top, cand_score.shape[0]))
        best_flat, best_score = cand_flat[keep], cand_score[keep]
    return best_flat // n_cols, best_flat % n_cols, best_score


# ---- convolution -----------------------------------------------------------

def im2col(x, kh, kw, stride, padding, out):
    """out (B, C*kh*kw, H_out*W_out): patch columns of x (B, C, H, W), zero padded.
    Row index c*kh*kw + i*kw + j, column index oh*W_out + ow."""
    kh, kw, stride, padding, h_out, w_out = args.im2col(x, kh, kw, stride, padding, out)
    B, C = x.shape[:2]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    for oh in range(h_out):
        for ow in range(w_out):
            patch = padded[:, :, oh * stride:oh * stride + kh, ow * stride:ow * stride + kw]
            out[:, :, oh * w_out + ow] = patch.reshape(B, C * kh * kw)
    return out


def col2im(cols, C, H, W, kh, kw, stride, padding, out):
    """out (B, C, H, W): the adjoint of im2col; overlapping patches accumulate."""
    kh, kw, stride, padding, h_out, w_out = args.col2im(cols, C, H, W, kh, kw, stride, padding, out)
    B = cols.shape[0]
    padded = np.zeros((B, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for oh in range(h_out):
        for ow in range(w_out):
            patch = cols[:, :, oh * w_out + ow].reshape(B, C, kh, kw)
            padded[:, :, oh * stride:oh * stride + kh, ow * stride:ow * stride + kw] += patch
    out[...] = padded[:, :, padding:padding + H, padding:padding + W]
    return out


# ---- fused elementwise steps of a training step ----------------------------------------------

def relu_backward(grad, activation, out, row_sums):
    """out = grad * (activation > 0): the gradient through a ReLU whose output was
    `activation` (both (n_rows, k)); row_sums (n_rows,) = out.sum(axis=1), the bias gradient
    of the layer below the ReLU. Returns out."""
    args.relu_backward(grad, activation, out, row_sums)
    np.multiply(grad, activation > 0, out=out)
    row_sums[...] = out.sum(axis=1)
    return out


# ---- optimizer updates on values -------------------------------------------

def sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov):
    """One SGD step in place, PyTorch's rule: g = grad + weight_decay * param;
    buf = momentum * buf + g (when momentum > 0); param -= lr * (g + momentum * buf if
    nesterov else buf). `momentum_buf` is ignored (may be empty) when momentum is 0."""
    args.sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov)
    dtype = param.dtype.type
    g = grad + dtype(weight_decay) * param if weight_decay else grad.copy()
    if momentum:
        momentum_buf *= dtype(momentum)
        momentum_buf += g
        g = g + dtype(momentum) * momentum_buf if nesterov else momentum_buf
    param -= dtype(lr) * g
    return param


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step in place (Kingma & Ba 2015, bias-corrected; step counts from 1):
    decoupled (AdamW): param *= 1 - lr * weight_decay; else g = grad + weight_decay * param.
    m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
    param -= lr / (1 - beta1^step) * m / (sqrt(v / (1 - beta2^step)) + eps)."""
    args.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step)
    dtype = param.dtype.type
    g = grad
    if weight_decay and decoupled:
        param *= dtype(1 - lr * weight_decay)
    elif weight_decay:
        g = grad + dtype(weight_decay) * param
    m *= dtype(beta1)
    m += dtype(1 - beta1) * g
    v *= dtype(beta2)
    v += dtype(1 - beta2) * g * g
    v_hat = v / dtype(1 - beta2 ** step)
    param -= dtype(lr * (1 / (1 - beta1 ** step))) * m / (np.sqrt(v_hat) + dtype(eps))
    return param
