"""Topology edits shared by the formats: merging a drop and a grow, random patterns, growth.

- `merge_pattern` / `gather_values`: the bookkeeping behind every format's `update`: which old
  value each new value came from (so optimizer state follows its weight).
- `random_pattern`: a uniformly random pattern at a density, per format (the initial topology).
- `topk_empty_units`: the best empty units by some score computed a chunk of rows at a time, so
  growth never holds a dense matrix: `dense_grad_topk` (RigL: largest |gradient|) and
  `random_empty_units` (SET: uniformly random) are two scores on it.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .base import check_index_array, check_shape, units_for_density
from .sampling import distinct_keys, distinct_per_row, empty_keys, empty_keys_per_group


def check_update_args(drop, grow_rows, grow_cols, n_units, grid):
    """Validate `update` arguments; returns grow rows and cols as int64 arrays."""
    if not isinstance(drop, np.ndarray) or drop.dtype != np.bool_:
        raise TypeError(f"drop must be a boolean array over the {n_units} stored units, got "
                        f"{getattr(drop, 'dtype', type(drop).__name__)}")
    if drop.shape != (n_units,):
        raise ValueError(f"drop must have shape ({n_units},), got {drop.shape}")
    grow_rows = check_index_array(grow_rows, "grow_rows").astype(np.int64)
    grow_cols = check_index_array(grow_cols, "grow_cols").astype(np.int64)
    if grow_rows.shape != grow_cols.shape:
        raise ValueError(f"grow_rows and grow_cols must have the same length, got "
                         f"{grow_rows.shape} and {grow_cols.shape}")
    for arr, size, name in ((grow_rows, grid[0], "grow_rows"), (grow_cols, grid[1], "grow_cols")):
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(f"{name} must lie in [0, {size}), got values in "
                             f"[{arr.min()}, {arr.max()}]")
    return grow_rows, grow_cols


def merge_pattern(old_keys, drop, grow_keys, width):
    """The new sorted unit keys after dropping and growing, and where each came from.

    old_keys: sorted int64 keys (row * width + col) of the stored units; drop: bool per unit;
    grow_keys: keys to add, which must be unique and empty once the drop is done (a unit dropped
    in this same update may be grown again: it comes back as a new unit).
    Returns (new_keys, source): source[i] is the old unit position of new unit i, or -1 - j for
    the j-th grown unit. Merging two sorted lists keeps this O(nnz) instead of a full sort.
    """
    kept_pos = np.flatnonzero(~drop)
    kept_keys = old_keys[kept_pos]
    order = np.argsort(grow_keys, kind="stable")
    grow_sorted = grow_keys[order]
    if grow_sorted.size > 1 and (np.diff(grow_sorted) == 0).any():
        row, col = divmod(int(grow_sorted[np.flatnonzero(np.diff(grow_sorted) == 0)[0]]), width)
        raise ValueError(f"grow_rows/grow_cols name the same position ({row}, {col}) more than once")
    at = np.searchsorted(kept_keys, grow_sorted)
    taken = at < kept_keys.size
    taken[taken] = kept_keys[at[taken]] == grow_sorted[taken]
    if taken.any():
        row, col = divmod(int(grow_sorted[taken][0]), width)
        raise ValueError(f"cannot grow at {int(taken.sum())} position(s) that are already stored "
                         f"(and not dropped), e.g. ({row}, {col})")
    n_new = kept_keys.size + grow_sorted.size
    grow_at = at + np.arange(grow_sorted.size)       # where each grown key lands in the merge
    is_grow = np.zeros(n_new, dtype=bool)
    is_grow[grow_at] = True
    new_keys = np.empty(n_new, dtype=np.int64)
    new_keys[grow_at] = grow_sorted
    new_keys[~is_grow] = kept_keys
    source = np.empty(n_new, dtype=np.int64)
    source[grow_at] = -1 - order
    source[~is_grow] = kept_pos
    return new_keys, source


def gather_values(old_values, source, grow_values, unit_size=1):
    """New flat values and element-level new_from_old from a unit-level `source` (see above)."""
    src = np.repeat(source * unit_size, unit_size) + np.tile(np.arange(unit_size), source.size)
    grown = np.repeat(source < 0, unit_size)
    src[grown] = -1
    new_values = np.empty(src.size, dtype=old_values.dtype)
    new_values[~grown] = old_values[src[~grown]]
    if grown.any():
        which = -1 - source[source < 0]                          # grown unit j, in new order
        new_values[grown] = grow_values.reshape(-1, unit_size)[which].ravel()
    return new_values, src


def check_grow_values(grow_values, n_grow, unit_shape, dtype):
    """Starting values of grown units: zeros by default, else an array (n_grow, *unit_shape)."""
    shape = (n_grow, *unit_shape)
    if grow_values is None:
        return np.zeros(shape, dtype=dtype)
    if not isinstance(grow_values, np.ndarray):
        raise TypeError(f"grow_values must be a NumPy array or None, got {type(grow_values).__name__}")
    if grow_values.dtype != dtype:
        raise TypeError(f"grow_values has dtype {grow_values.dtype}, the weights are {dtype}")
    if grow_values.shape != shape:
        raise ValueError(f"grow_values must have shape {shape}, got {grow_values.shape}")
    return grow_values


# ----- random patterns (the initial topology of a sparse layer) -----------------------------
def random_pattern(format, shape, density, rng, dtype=np.float32, block_size=16, n=2, m=4,
                   constant_fan_in=False):
    """A uniformly random pattern with zero values: exactly round(density * units) units, or
    per row with constant fan-in, or n random slots of every group of m for NM.

    CSR and Masked draw the same random numbers, so one seed gives both the same mask.
    """
    from .block import Block, check_block_size
    from .csr import CSR
    from .masked import Masked
    from .nm import NM, check_nm
    n_rows, n_cols = check_shape(shape)
    if format == "nm":
        n, m = check_nm(n, m, n_cols)
        if density is not None and abs(density - n / m) > 1e-12:
            raise ValueError(f"density {density} does not match the N:M rule n/m = {n}/{m}")
        idx = np.empty((n_rows, n_cols // m, n), dtype=np.uint8)
        for r0 in range(0, n_rows, 256):                 # row chunks bound the scratch memory
            noise = rng.random((min(256, n_rows - r0), n_cols // m, m))
            idx[r0:r0 + 256] = np.sort(np.argsort(noise, axis=-1)[..., :n], axis=-1)
        return NM(np.zeros(idx.size, dtype=dtype), idx, m)
    if format == "block":
        bs = check_block_size(block_size, (n_rows, n_cols))
        grid_rows, grid_cols = n_rows // bs, n_cols // bs
        keys = distinct_keys(grid_rows * grid_cols,
                             units_for_density(density, grid_rows * grid_cols), rng)
        counts = np.bincount(keys // grid_cols, minlength=grid_rows)
        return Block(np.concatenate([[0], np.cumsum(counts)]), (keys % grid_cols).astype(np.int32),
                     np.zeros(keys.size * bs * bs, dtype), (n_rows, n_cols), bs)
    if format not in ("csr", "masked"):
        raise ValueError(f"format must be one of 'csr', 'block', 'nm', 'masked', got {format!r}")
    if constant_fan_in:
        per_row = units_for_density(density, n_cols)
        cols = distinct_per_row(n_rows, n_cols, per_row, rng).reshape(-1)
        counts = np.full(n_rows, per_row, dtype=np.int64)
    else:
        keys = distinct_keys(n_rows * n_cols, units_for_density(density, n_rows * n_cols), rng)
        cols, counts = keys % n_cols, np.bincount(keys // n_cols, minlength=n_rows)
    if format == "masked":
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
        return Masked._from_coo(rows, cols, np.zeros(rows.size, dtype), (n_rows, n_cols),
                                constant_fan_in=constant_fan_in)
    # the keys come sorted by (row, column): the CSR arrays directly, no sort, O(nnz)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return CSR(indptr, cols.astype(np.int32), np.zeros(cols.size, dtype), (n_rows, n_cols),
               constant_fan_in)


# ----- growth: the best empty units, a chunk of rows at a time -----------------------------
def _top_k(scores, k):
    """Positions of the k largest scores, ascending; among equal scores the lower position wins
    (the kernels' tie rule, so every path picks the same units)."""
    if k >= scores.size:
        return np.arange(scores.size)
    kth = np.partition(scores, scores.size - k)[scores.size - k]         # the k-th largest
    above = np.flatnonzero(scores > kth)
    ties = np.flatnonzero(scores == kth)[:k - above.size]
    return np.sort(np.concatenate([above, ties]))


def _top_per_group(scores, free, counts):
    """Mask of the counts[g] best free units of every group: scores and free are
    (rows, groups per row, group width), counts (rows, groups per row). Ties: lower column."""
    order = np.argsort(np.where(free, -scores, np.inf), axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[-1]), order.shape), axis=-1)
    short = free.sum(axis=-1) < counts
    if short.any():
        r, g = np.argwhere(short)[0]
        raise ValueError(f"cannot grow {counts[r, g]} units in group {g} of row {r} of this chunk: "
                         f"it has only {free[r, g].sum()} empty places")
    return (rank < counts[..., None]) & free


def check_grow_counts(weight, k):
    """k: an int (best k anywhere) or an int array with one count per constraint group."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return int(k)
    k = check_index_array(k, "k")
    if k.shape != (weight.n_groups,):
        raise ValueError(f"k must be an int or have one count per group, shape "
                         f"({weight.n_groups},), got {k.shape}")
    if k.size and k.min() < 0:
        raise ValueError("k must hold counts >= 0")
    return int(k[0]) if weight.n_groups == 1 else k.astype(np.int64)


def occupied_units(weight, dropped=None):
    """(rows, cols) of the units that stay stored (row-major): all of them minus `dropped`."""
    rows, cols = weight.unit_coords()
    if dropped is None:
        return rows, cols
    if not isinstance(dropped, np.ndarray) or dropped.dtype != np.bool_ or \
            dropped.shape != (weight.n_units,):
        raise TypeError(f"dropped must be a boolean array of shape ({weight.n_units},)")
    return rows[~dropped], cols[~dropped]


def topk_empty_units(weight, score_rows, k, dropped=None, chunk_rows=256):
    """The k best empty units of `weight` by a score computed `chunk_rows` unit rows at a time.

    score_rows(r0, r1) -> (r1 - r0, n_unit_cols) scores of unit rows r0..r1. Units in `dropped`
    (bool per stored unit) count as empty. `k`: an int, or one count per constraint group;
    groups are equal runs of consecutive columns inside a row (a row, or an N:M group), so
    each chunk settles its own groups. Returns (rows, cols, scores) of the chosen units,
    sorted by (row, col). Memory: one chunk plus the chosen units.
    """
    k = check_grow_counts(weight, k)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    grid_rows, grid_cols = weight.unit_grid
    per_row = weight.n_groups // grid_rows                          # groups in one row
    occ_rows, occ_cols = occupied_units(weight, dropped)
    keys, scores = [np.zeros(0, np.int64)], [np.zeros(0)]           # chosen so far
    for r0 in range(0, grid_rows, chunk_rows):
        r1 = min(r0 + chunk_rows, grid_rows)
        chunk = score_rows(r0, r1)                                   # (r1 - r0, grid_cols)
        if np.isnan(chunk).any():
            raise ValueError("growth scores contain NaN")
        free = np.ones(chunk.shape, dtype=bool)
        lo, hi = np.searchsorted(occ_rows, [r0, r1])
        free[occ_rows[lo:hi] - r0, occ_cols[lo:hi]] = False
        if isinstance(k, int):       # a running top-k: earlier chunks hold the lower keys
            flat = np.flatnonzero(free)
            cand_keys = np.concatenate([keys[0], flat + r0 * grid_cols])
            cand_scores = np.concatenate([scores[0], chunk.ravel()[flat]])
            pick = _top_k(cand_scores, k)
            keys, scores = [cand_keys[pick]], [cand_scores[pick]]
        else:
            shape = (r1 - r0, per_row, grid_cols // per_row)
            counts = k[r0 * per_row:r1 * per_row].reshape(shape[:2])
            flat = np.flatnonzero(_top_per_group(chunk.reshape(shape), free.reshape(shape), counts))
            keys.append(flat + r0 * grid_cols)
            scores.append(chunk.ravel()[flat])
    keys, scores = np.concatenate(keys), np.concatenate(scores)
    wanted = k if isinstance(k, int) else int(k.sum())
    if keys.size != wanted:
        raise ValueError(f"asked to grow {wanted} units but only {keys.size} places are empty")
    return keys // grid_cols, keys % grid_cols, scores


def dense_grad_topk(weight, G, X, k, dropped=None, chunk_rows=256):
    """RigL's growth rule: the empty units where |dL/dW| = |G @ X.T| is largest (per block:
    its L2 norm), G (n_rows, batch) and X (n_cols, batch) feature-major, never forming the
    whole dense gradient. CSR with a single k runs the kernel; the rest share one chunked path
    with the same tie rule, so CSR and Masked choose the same positions. On a GPU the products
    run there; the chosen units come back to the host, where the topology is edited."""
    from .base import kernels_for
    if weight.format == "csr" and isinstance(check_grow_counts(weight, k), int):
        rows, cols = occupied_units(weight, dropped)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=weight.shape[0]))])
        k = check_grow_counts(weight, k)
        xp = backend.array_module(G)                     # the pattern goes where G and X are
        out = kernels_for(G, X).dense_grad_topk(G, X, xp.asarray(indptr.astype(np.int64)),
                                                xp.asarray(cols.astype(np.int32)), k, chunk_rows)
        out = tuple(backend.to_numpy(a) for a in out)
        if out[0].size != k:
            raise ValueError(f"asked to grow {k} units but only {out[0].size} positions are empty")
        return out
    bs = weight.block_size if weight.format == "block" else 1

    def score_rows(r0, r1):
        dense = backend.to_numpy(abs(G[r0 * bs:r1 * bs] @ X.T))   # (rows of the chunk, n_cols)
        if bs == 1:
            return dense
        tiles = dense.reshape(r1 - r0, bs, -1, bs)
        return np.sqrt((tiles * tiles).sum(axis=(1, 3)))

    return topk_empty_units(weight, score_rows, k, dropped, max(1, chunk_rows // bs))


def random_empty_units(weight, k, rng, dropped=None, chunk_rows=256):
    """SET's growth rule: k empty units chosen uniformly at random (per constraint group if k
    is an array), in O(nnz + k) time and memory (sampling.py: rejection of occupied places),
    so it runs on layers whose grid of positions would never fit in memory. Units in `dropped`
    count as empty. Returns (rows, cols, scores) like `dense_grad_topk`, sorted by (row, col);
    the scores are zeros (a random choice has none). `chunk_rows` is accepted for the common
    signature of growth rules and not needed here."""
    k = check_grow_counts(weight, k)
    grid_rows, grid_cols = weight.unit_grid
    rows, cols = occupied_units(weight, dropped)
    taken = np.sort(rows * grid_cols + cols)
    if isinstance(k, int):
        keys = empty_keys(taken, grid_rows * grid_cols, k, rng)
    else:
        group_width = grid_cols * grid_rows // weight.n_groups
        keys = empty_keys_per_group(taken, group_width, k, rng)
    return keys // grid_cols, keys % grid_cols, np.zeros(keys.size)
