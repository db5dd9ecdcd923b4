"""Deterministic top-k selection (cpu backend). Spec: ``kernels.reference``.

Order: larger score first; among equal scores the lower index wins. Every
function returns the selected indices in ascending order.

Method (O(n) per row, no sort): find the k-th largest value t with a
partition, take every entry > t, then the first (lowest-index) entries == t
until k are taken. A single left-to-right pass does both and emits the
indices already sorted. Tiny rows (N:M groups) use ranks instead, which
needs no scratch array.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from . import args
from . import checks as c
from .wrap import contig

# At or below this row length the O(n^2) rank method beats a partition.
RANK_METHOD_MAX = 16


@njit(cache=True)
def _select_row(row, k, out_row):
    n = row.shape[0]
    if k == 0:
        return
    if n <= RANK_METHOD_MAX:
        w = 0
        for c in range(n):
            rank = 0  # entries ranked before c: larger, or equal with lower index
            for d in range(n):
                if row[d] > row[c] or (row[d] == row[c] and d < c):
                    rank += 1
            if rank < k:
                out_row[w] = c
                w += 1
        return
    kth = np.partition(row, n - k)[n - k]  # the k-th largest value
    n_greater = 0
    for c in range(n):
        if row[c] > kth:
            n_greater += 1
    equal_left = k - n_greater
    w = 0
    for c in range(n):
        if row[c] > kth:
            out_row[w] = c
            w += 1
        elif row[c] == kth and equal_left > 0:
            out_row[w] = c
            w += 1
            equal_left -= 1


@njit(parallel=True, cache=True)
def _select_rows(scores, k, out):
    # scores (n, m), out (n, k)
    for r in prange(scores.shape[0]):
        _select_row(scores[r], k, out[r])
    return out


def topk_per_row(scores, k, out):
    """out (n_rows, k) int32: per row, the columns of the k largest scores,
    ascending. Ties: among equal scores the lower column wins. NaN is rejected."""
    args.topk_per_row(scores, k, out)
    if out.flags.c_contiguous:
        _select_rows(contig(scores), int(k), out)
    else:
        out[...] = _select_rows(contig(scores), int(k), np.empty(out.shape, out.dtype))
    return out


def topk_per_group(scores, N, out):
    """out (n_rows, n_groups, N) uint8: per group, the offsets of the N largest
    scores, ascending; ties: lower offset wins. Directly an N:M ``idx``."""
    args.topk_per_group(scores, N, out)
    n_rows, n_groups, M = scores.shape
    flat_scores = contig(scores).reshape(n_rows * n_groups, M)
    flat_out = np.empty((n_rows * n_groups, int(N)), dtype=np.uint8)
    _select_rows(flat_scores, int(N), flat_out)
    out[...] = flat_out.reshape(out.shape)
    return out


def topk_flat(scores, k):
    """int64 indices of the k largest entries of a 1-D array, ascending;
    ties: lower index wins."""
    k = args.topk_flat(scores, k)
    n = scores.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(scores, n - k)[n - k]
    chosen = scores > kth
    ties = np.flatnonzero(scores == kth)[:k - int(np.count_nonzero(chosen))]
    chosen[ties] = True
    return np.flatnonzero(chosen).astype(np.int64)


def dense_grad_topk(G, X, exclude_indptr, exclude_indices, k_top, chunk_rows):
    """The k_top positions with the largest |(G @ X.T)[r, c]| outside the
    pattern (exclude_indptr, exclude_indices), chunk_rows rows at a time.

    Returns (rows int64, cols int64, scores) sorted by (row, col); ties: lower
    flat index r * n_cols + c wins. Memory: chunk_rows * n_cols + k_top.
    """
    n_rows, n_cols, k_top, chunk_rows = args.dense_grad_topk(
        G, X, exclude_indptr, exclude_indices, k_top, chunk_rows)
    c.check_csr(exclude_indptr, exclude_indices, n_cols)
    best_flat = np.zeros(0, dtype=np.int64)
    best_score = np.zeros(0, dtype=G.dtype)
    if k_top == 0:
        return best_flat, best_flat.copy(), best_score
    for r0 in range(0, n_rows, chunk_rows):
        r1 = min(r0 + chunk_rows, n_rows)
        chunk = G[r0:r1] @ X.T  # (r1 - r0, n_cols), BLAS
        np.abs(chunk, out=chunk)
        p0, p1 = exclude_indptr[r0], exclude_indptr[r1]
        local_rows = np.repeat(np.arange(r1 - r0), np.diff(exclude_indptr[r0:r1 + 1]))
        chunk[local_rows, exclude_indices[p0:p1]] = -1  # below every |.|: never chosen
        flat_chunk = chunk.reshape(-1)
        pick = topk_flat(flat_chunk, min(k_top, flat_chunk.shape[0]))
        pick = pick[flat_chunk[pick] >= 0]
        # Earlier chunks hold lower flat indices, so the candidates stay in
        # index order and topk_flat's tie rule stays the global one.
        cand_flat = np.concatenate([best_flat, pick + r0 * n_cols])
        cand_score = np.concatenate([best_score, flat_chunk[pick]])
        keep = topk_flat(cand_score, min(k_top, cand_score.shape[0]))
        best_flat, best_score = cand_flat[keep], cand_score[keep]
    return best_flat // n_cols, best_flat % n_cols, best_score
