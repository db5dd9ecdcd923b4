"""Uniform random choices of positions in O(number chosen), never O(rows x cols).

A layer of 333,334 x 333,334 has 1.1e11 positions: a sampler that allocates one number per
position (a permutation, `rng.choice(n_rows * n_cols, replace=False)` at ordinary densities, or
a random score per position) cannot run there, although the 13 million positions it keeps fit
easily. These samplers draw candidate positions with replacement and reject the repeats and
the ones not allowed, so time and memory grow with the count drawn, not with the grid.

Why the result is uniform: the candidates are independent and uniform over the allowed
positions, so every set of distinct positions of a given size is equally likely to be the set
drawn; drawing more while too few, then keeping a uniformly random subset of the right size
when there are too many, keeps every subset of the final size equally likely.

Where the allowed positions are a large part of their range (more than a quarter), rejection
would redraw often, and the range is then at most about four times the count: the samplers
use a permutation of the range instead, which is exact and as cheap.
"""
from __future__ import annotations

import numpy as np

DENSE_FRACTION = 0.25       # above this share of allowed positions, permute the range instead


def sorted_unique(*arrays) -> np.ndarray:
    """The distinct values of the arrays, sorted: a sort and a comparison with the neighbour
    (faster here than np.unique's hash table on tens of millions of int64)."""
    values = np.sort(np.concatenate(arrays)) if len(arrays) > 1 else np.sort(arrays[0])
    if values.size < 2:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def keep_random_subset(keys, count, rng) -> np.ndarray:
    """A uniformly random `count` of the sorted `keys`, still sorted (drops the rest)."""
    if keys.size <= count:
        return keys
    keep = np.ones(keys.size, dtype=bool)
    keep[rng.choice(keys.size, size=keys.size - count, replace=False)] = False
    return keys[keep]


def distinct_keys(pop: int, count: int, rng) -> np.ndarray:
    """`count` distinct integers from [0, pop), uniformly at random, sorted (int64)."""
    if not 0 <= count <= pop:
        raise ValueError(f"cannot choose {count} distinct positions among {pop}")
    if count > DENSE_FRACTION * pop:
        return np.sort(rng.permutation(pop)[:count]).astype(np.int64)
    keys = sorted_unique(rng.integers(0, pop, size=count + count // 8 + 16, dtype=np.int64))
    while keys.size < count:
        keys = sorted_unique(keys, rng.integers(0, pop, size=2 * (count - keys.size) + 16,
                                                dtype=np.int64))
    return keep_random_subset(keys, count, rng)


def distinct_per_row(n_rows: int, width: int, count: int, rng) -> np.ndarray:
    """(n_rows, count) int64: in each row, `count` distinct columns of [0, width), uniformly at
    random, sorted. Each row draws a few more than `count` (enough for the expected repeats),
    keeps a uniformly random `count` of its distinct draws, and draws again only if it had too
    few; rows are drawn a chunk at a time, so scratch memory stays at about the output's."""
    if not 0 <= count <= width:
        raise ValueError(f"cannot choose {count} distinct columns among {width}")
    out = np.empty((n_rows, count), dtype=np.int64)
    chunk = max(1, (1 << 22) // max(count, 1))
    if count > DENSE_FRACTION * width:              # then width <= 4 count: permute each row
        for r0 in range(0, n_rows, chunk):
            r1 = min(r0 + chunk, n_rows)
            order = np.argsort(rng.random((r1 - r0, width)), axis=1)[:, :count]
            out[r0:r1] = np.sort(order, axis=1)
        return out
    extra = count // 4 + 8          # expected repeats are count^2 / (2 width) <= count / 8
    for r0 in range(0, n_rows, chunk):
        todo = np.arange(r0, min(r0 + chunk, n_rows))
        while todo.size:
            draw = np.sort(rng.integers(0, width, size=(todo.size, count + extra),
                                        dtype=np.int64), axis=1)
            repeat = np.zeros(draw.shape, dtype=bool)
            repeat[:, 1:] = draw[:, 1:] == draw[:, :-1]
            enough = (~repeat).sum(axis=1) >= count
            priority = rng.random((int(enough.sum()), draw.shape[1]))
            priority[repeat[enough]] = 2.0              # a repeat is never chosen
            pick = np.argsort(priority, axis=1)[:, :count]
            out[todo[enough]] = np.sort(np.take_along_axis(draw[enough], pick, axis=1), axis=1)
            todo = todo[~enough]
    return out


def empty_keys(taken: np.ndarray, pop: int, count: int, rng) -> np.ndarray:
    """`count` distinct keys of [0, pop) not in `taken` (sorted, unique int64), uniformly."""
    free = pop - taken.size
    if not 0 <= count <= free:
        raise ValueError(f"asked to grow {count} units but only {free} places are empty")
    if free <= pop / 2 and taken.size:          # mostly full: list the empty keys (<= 2 x nnz)
        empty = np.setdiff1d(np.arange(pop, dtype=np.int64), taken, assume_unique=True)
        return keep_random_subset(empty, count, rng)
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.size < count:
        # sorted, the lookups walk `taken` in order (random lookups into 13 million keys
        # were the slowest part of an update)
        draw = np.sort(rng.integers(0, pop, size=2 * (count - chosen.size) + 16, dtype=np.int64))
        at = np.searchsorted(taken, draw)
        hit = at < taken.size
        hit[hit] = taken[at[hit]] == draw[hit]
        chosen = sorted_unique(chosen, draw[~hit])
    return keep_random_subset(chosen, count, rng)


def empty_keys_per_group(taken: np.ndarray, group_width: int, counts: np.ndarray,
                         rng) -> np.ndarray:
    """Keys (group * group_width + offset) of counts[g] empty places in each group g, uniformly
    among that group's empty places. Groups are consecutive runs of `group_width` keys (a row,
    or an N:M group); `taken` holds the occupied keys, sorted and unique."""
    counts = np.asarray(counts, dtype=np.int64)
    groups = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    if groups.size == 0:
        return groups
    filled = np.bincount(taken // group_width, minlength=counts.size)
    short = np.flatnonzero(counts > group_width - filled)
    if short.size:
        g = int(short[0])
        raise ValueError(f"cannot grow {counts[g]} units in group {g}: it has only "
                         f"{group_width - filled[g]} empty places")
    chosen = np.zeros(0, dtype=np.int64)
    need = counts.copy()
    while groups.size:
        draw = np.sort(groups * group_width + rng.integers(0, group_width, size=groups.size))
        at = np.searchsorted(taken, draw)
        hit = at < taken.size
        hit[hit] = taken[at[hit]] == draw[hit]
        fresh = np.setdiff1d(sorted_unique(draw[~hit]), chosen, assume_unique=True)
        # keep at most need[g] of each group's fresh draws (a uniform choice among them)
        fresh = fresh[rng.permutation(fresh.size)]
        fresh_groups = fresh // group_width
        order = np.argsort(fresh_groups, kind="stable")
        fresh, fresh_groups = fresh[order], fresh_groups[order]
        rank = np.arange(fresh.size) - np.searchsorted(fresh_groups, fresh_groups)
        keep = rank < need[fresh_groups]
        chosen = sorted_unique(chosen, fresh[keep])
        need -= np.bincount(fresh_groups[keep], minlength=counts.size)
        groups = np.repeat(np.arange(counts.size, dtype=np.int64), need)
    return chosen
