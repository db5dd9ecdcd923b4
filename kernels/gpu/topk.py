"""Deterministic top-k selection (gpu backend). Spec: ``kernels.reference``.

Order: larger score first; among equal scores the lower index wins. Every function returns
the selected indices in ascending order.

The method is the cpu backend's, written as array operations (CuPy on a GPU, where each is
one or two library kernels): find the k-th largest value t of each row (``partition``), take
every entry > t, then the first entries == t, counted by a running sum, until k are taken.
The chosen positions come out of ``nonzero`` in row-major order: sorted, with no sort.

The chunked dense-gradient top-k (RigL's growth) multiplies a chunk of rows with cuBLAS,
marks the stored positions with a kernel (one thread per row of the chunk), and keeps a
running top-k across chunks exactly as the cpu backend does.
"""
import numpy as np
from numba import cuda

from ..cpu import args
from .launch import array_module, clamped_range, contig, flat_launch


def _select_last_axis(scores, k, index_dtype):
    """Per position of the leading axes, the last-axis indices of the k largest scores,
    ascending; ties to the lower index. Shape scores.shape[:-1] + (k,)."""
    xp = array_module(scores)
    n = scores.shape[-1]
    lead = scores.shape[:-1]
    if k == 0 or scores.size == 0:
        return xp.zeros(lead + (k,), dtype=index_dtype)
    kth = xp.partition(scores, n - k, axis=-1)[..., n - k:n - k + 1]   # (..., 1) k-th largest
    greater = scores > kth
    equal = scores == kth
    ties_wanted = k - greater.sum(axis=-1, keepdims=True)              # the rest of the k
    take = greater | (equal & (xp.cumsum(equal, axis=-1) <= ties_wanted))
    positions = xp.nonzero(take)[-1]                    # exactly k per row, ascending per row
    return positions.reshape(lead + (k,)).astype(index_dtype)


def topk_per_row(scores, k, out):
    """out (n_rows, k) int32: per row, the columns of the k largest scores, ascending.
    Ties: among equal scores the lower column wins. NaN is rejected."""
    args.topk_per_row(scores, k, out)
    out[...] = _select_last_axis(contig(scores), int(k), np.int32)
    return out


def topk_per_group(scores, N, out):
    """out (n_rows, n_groups, N) uint8: per group, the offsets of the N largest scores,
    ascending; ties: lower offset wins. Directly an N:M ``idx``."""
    args.topk_per_group(scores, N, out)
    out[...] = _select_last_axis(contig(scores), int(N), np.uint8)
    return out


def topk_flat(scores, k):
    """int64 indices of the k largest entries of a 1-D array, ascending; ties: lower index."""
    k = args.topk_flat(scores, k)
    return _select_last_axis(contig(scores), k, np.int64)


@cuda.jit
def _exclude_stored(chunk, indptr, indices, r0):
    """chunk[r - r0, c] = -1 at every stored (r, c) of the chunk's rows: below any |.|."""
    t = cuda.grid(1)
    if t < chunk.shape[0]:
        start, stop = clamped_range(indptr, r0 + t, indices.shape[0])
        for p in range(start, stop):
            chunk[t, indices[p]] = -1


def dense_grad_topk(G, X, exclude_indptr, exclude_indices, k_top, chunk_rows):
    """The k_top positions with the largest |(G @ X.T)[r, c]| outside the pattern
    (exclude_indptr, exclude_indices), chunk_rows rows at a time.

    Returns (rows int64, cols int64, scores) sorted by (row, col); ties: lower flat index
    r * n_cols + c wins. Memory: chunk_rows * n_cols + k_top.
    """
    n_rows, n_cols, k_top, chunk_rows = args.dense_grad_topk(
        G, X, exclude_indptr, exclude_indices, k_top, chunk_rows)
    xp = array_module(G)
    best_flat = xp.zeros(0, dtype=np.int64)
    best_score = xp.zeros(0, dtype=G.dtype)
    if k_top == 0:
        return best_flat, best_flat.copy(), best_score
    indptr, indices = contig(exclude_indptr), contig(exclude_indices)
    for r0 in range(0, n_rows, chunk_rows):
        r1 = min(r0 + chunk_rows, n_rows)
        chunk = G[r0:r1] @ X.T                       # (r1 - r0, n_cols), cuBLAS
        xp.abs(chunk, out=chunk)
        blocks, threads = flat_launch(r1 - r0)
        _exclude_stored[blocks, threads](chunk, indptr, indices, r0)
        flat_chunk = chunk.reshape(-1)
        pick = topk_flat(flat_chunk, min(k_top, flat_chunk.shape[0]))     # rejects NaN
        pick = pick[flat_chunk[pick] >= 0]
        # Earlier chunks hold lower flat indices, so the candidates stay in index order and
        # the selection's tie rule stays the global one.
        cand_flat = xp.concatenate([best_flat, pick + r0 * n_cols])
        cand_score = xp.concatenate([best_score, flat_chunk[pick]])
        keep = topk_flat(cand_score, min(k_top, cand_score.shape[0]))
        best_flat, best_score = cand_flat[keep], cand_score[keep]
    return best_flat // n_cols, best_flat % n_cols, best_score
