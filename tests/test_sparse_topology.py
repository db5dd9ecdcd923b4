"""The topology interface: `update` (drop and grow), constraint groups, random patterns and
growth selection (dense-gradient and random), for every format."""
from __future__ import annotations

import numpy as np
import pytest

from sparsenet.sparse import NM, Block, dense_grad_topk, random_empty_units, random_pattern

OPTIONS = {"csr": {}, "masked": {}, "block": {"block_size": 2}, "nm": {"n": 2, "m": 4}}


def weight(fmt, rng, shape=(6, 8), density=0.5, **extra):
    W = random_pattern(fmt, shape, density, rng, np.float64, **OPTIONS[fmt], **extra)
    values = rng.standard_normal(W.values.size) * W.mask().ravel() if fmt == "masked" else \
        rng.standard_normal(W.values.size)
    return W.with_values(values)


def unit_mask(W):
    rows, cols = W.unit_coords()
    out = np.zeros(W.unit_grid, dtype=bool)
    out[rows, cols] = True
    return out


def balanced_edit(W, rng):
    """Drop one unit in every other constraint group (or 2 overall) and grow as many, in the
    same groups, at empty places."""
    groups = W.unit_groups()
    drop = np.zeros(W.n_units, dtype=bool)
    for g in np.unique(groups)[::2]:
        drop[np.flatnonzero(groups == g)[0]] = True
    empty_rows, empty_cols = np.nonzero(~unit_mask(W))
    empty_groups = W.group_of(empty_rows, empty_cols)
    grow = []
    for g in groups[drop]:
        grow.append(np.flatnonzero(empty_groups == g)[-1])
    if W.n_groups == 1:
        grow = rng.choice(empty_rows.size, size=int(drop.sum()), replace=False)
    grow = np.array(grow, dtype=np.int64)
    return drop, empty_rows[grow], empty_cols[grow]


@pytest.mark.parametrize("fmt", list(OPTIONS))
def test_update_moves_values_with_their_positions(fmt, rng):
    W = weight(fmt, rng)
    old_values, old_dense = W.values.copy(), W.to_dense()
    drop, grow_rows, grow_cols = balanced_edit(W, rng)
    unit = int(np.prod(W.unit_shape))
    grow_values = np.arange(1, grow_rows.size * unit + 1, dtype=np.float64).reshape(
        grow_rows.size, *W.unit_shape) * 10
    new, new_from_old = W.update(drop, grow_rows, grow_cols, grow_values)
    np.testing.assert_array_equal(W.values, old_values)                # the old object is intact
    np.testing.assert_array_equal(W.to_dense(), old_dense)
    assert new_from_old.dtype == np.int64 and new_from_old.shape == new.values.shape
    survived = new_from_old >= 0
    np.testing.assert_array_equal(new.values[survived], old_values[new_from_old[survived]])
    expected = unit_mask(W)
    rows, cols = W.unit_coords()
    expected[rows[drop], cols[drop]] = False
    expected[grow_rows, grow_cols] = True
    np.testing.assert_array_equal(unit_mask(new), expected)
    # the grown units hold grow_values, element by element
    new_dense = new.to_dense()
    bs = W.unit_shape[0] if W.unit_shape else 1
    for j, (r, c) in enumerate(zip(grow_rows, grow_cols)):
        np.testing.assert_array_equal(new_dense[r * bs:(r + 1) * bs, c * bs:(c + 1) * bs],
                                      grow_values[j].reshape(bs, bs))
    if fmt == "masked":       # dense positions: -1 exactly where something was dropped or grown
        changed = (W.mask() ^ new.mask()).ravel()
        np.testing.assert_array_equal(new_from_old == -1, changed)
        np.testing.assert_array_equal(new_from_old[~changed], np.flatnonzero(~changed))
        assert (new.values[~new.mask().ravel()] == 0).all()
    else:
        assert new.nnz == W.nnz - (int(drop.sum()) - grow_rows.size) * unit
        assert (~survived).sum() == grow_rows.size * unit


@pytest.mark.parametrize("fmt", list(OPTIONS))
def test_grown_units_default_to_zero(fmt, rng):
    W = weight(fmt, rng)
    drop, grow_rows, grow_cols = balanced_edit(W, rng)
    new, new_from_old = W.update(drop, grow_rows, grow_cols)
    assert (new.values[new_from_old == -1] == 0).all()


@pytest.mark.parametrize("fmt", list(OPTIONS))
def test_a_failed_update_changes_nothing(fmt, rng):
    W = weight(fmt, rng)
    before = (W.values.copy(), W.mask().copy())
    rows, cols = W.unit_coords()
    no_drop = np.zeros(W.n_units, dtype=bool)
    with pytest.raises(ValueError, match="already stored"):
        W.update(no_drop, rows[:1], cols[:1])
    empty_rows, empty_cols = np.nonzero(~unit_mask(W))
    with pytest.raises(ValueError, match="more than once"):
        W.update(no_drop, empty_rows[[0, 0]], empty_cols[[0, 0]])
    with pytest.raises(ValueError, match="grow_rows must lie"):
        W.update(no_drop, np.array([W.unit_grid[0]]), np.array([0]))
    with pytest.raises(TypeError, match="drop must be a boolean"):
        W.update(no_drop.astype(int), empty_rows[:0], empty_cols[:0])
    with pytest.raises(ValueError, match="grow_values must have shape"):
        W.update(no_drop, empty_rows[:1], empty_cols[:1], np.zeros((2, *W.unit_shape)))
    with pytest.raises(TypeError, match="grow_values has dtype"):
        W.update(no_drop, empty_rows[:1], empty_cols[:1], np.zeros((1, *W.unit_shape), np.float32))
    np.testing.assert_array_equal(W.values, before[0])
    np.testing.assert_array_equal(W.mask(), before[1])


def test_a_dropped_unit_may_be_grown_back_as_a_new_one(rng):
    W = weight("csr", rng)
    drop = np.zeros(W.nnz, dtype=bool)
    drop[3] = True
    rows, cols = W.coords()
    new, new_from_old = W.update(drop, rows[3:4], cols[3:4])
    np.testing.assert_array_equal(new.mask(), W.mask())
    assert new_from_old[3] == -1 and new.values[3] == 0


def test_nm_rule_holds_after_update(rng):
    W = weight("nm", rng)
    drop = np.zeros(W.nnz, dtype=bool)
    drop[0] = True                                 # row 0, group 0 loses one weight ...
    free_in_group_1 = 4 + np.setdiff1d(np.arange(4), W.idx[0, 1])[0]
    with pytest.raises(ValueError, match="balance within each group"):
        W.update(drop, np.array([0]), np.array([free_in_group_1]))   # ... group 1 gains one
    free = np.setdiff1d(np.arange(4), W.idx[0, 0])[0]
    new, _ = W.update(drop, np.array([0]), np.array([free]))
    assert isinstance(new, NM) and new.nnz == W.nnz
    assert W.unit_groups().tolist() == np.repeat(np.arange(12), 2).tolist()


@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_constant_fan_in_holds_after_update(fmt, rng):
    W = weight(fmt, rng, density=0.25, constant_fan_in=True)
    assert W.n_groups == 6
    np.testing.assert_array_equal(W.unit_groups(), np.repeat(np.arange(6), 2))
    drop = np.zeros(W.nnz, dtype=bool)
    drop[0] = True                                              # a weight of row 0
    empty_rows, empty_cols = np.nonzero(~W.mask())
    in_row_1 = np.flatnonzero(empty_rows == 1)[0]
    with pytest.raises(ValueError, match="constant fan-in"):
        W.update(drop, empty_rows[[in_row_1]], empty_cols[[in_row_1]])
    in_row_0 = np.flatnonzero(empty_rows == 0)[0]
    new, _ = W.update(drop, empty_rows[[in_row_0]], empty_cols[[in_row_0]])
    assert (new.mask().sum(axis=1) == 2).all()


@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_constant_fan_in_allows_empty_rows_the_ablated_units(fmt, rng):
    # rows of 0 or K: emptying row 0 and giving its 2 weights to one other row each of ...
    W = weight(fmt, rng, density=0.25, constant_fan_in=True)     # 6 rows of 2
    rows, _ = W.unit_coords()
    drop = rows == 0                                             # ablate row 0
    with pytest.raises(ValueError, match="constant fan-in"):     # 2 extra weights in row 1: 4 != 2
        empty_rows, empty_cols = np.nonzero(~W.mask())
        pick = np.flatnonzero(empty_rows == 1)[:2]
        W.update(drop, empty_rows[pick], empty_cols[pick])
    new, _ = W.update(drop, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert new.constant_fan_in and new.mask().sum(axis=1).tolist() == [0, 2, 2, 2, 2, 2]
    # ... and every active row growing by one at once keeps the rule: K goes from 2 to 3
    empty_rows, empty_cols = np.nonzero(~new.mask())
    pick = [np.flatnonzero(empty_rows == r)[0] for r in range(1, 6)]
    grown, _ = new.update(np.zeros(new.nnz, bool), empty_rows[pick], empty_cols[pick])
    assert grown.mask().sum(axis=1).tolist() == [0, 3, 3, 3, 3, 3]


def test_random_pattern_counts_and_twins(rng):
    csr = random_pattern("csr", (10, 20), 0.3, np.random.default_rng(5))
    masked = random_pattern("masked", (10, 20), 0.3, np.random.default_rng(5))
    assert csr.nnz == 60 and masked.nnz == 60
    np.testing.assert_array_equal(csr.mask(), masked.mask())          # one seed, one mask
    fan = random_pattern("csr", (10, 20), 0.3, rng, constant_fan_in=True)
    assert (fan.row_lengths() == 6).all()
    block = random_pattern("block", (8, 12), 0.5, rng, block_size=4)
    assert block.n_units == 3
    nm = random_pattern("nm", (3, 8), None, rng, n=1, m=4)
    assert (nm.mask().reshape(3, 2, 4).sum(axis=-1) == 1).all()
    with pytest.raises(ValueError, match="format must be one of"):
        random_pattern("coo", (3, 3), 0.5, rng)


def brute_force_growth(W, G, X, k, dropped=None):
    """Top-k |G @ X.T| (block: L2 norm) among empty units; ties to the lower flat index."""
    dense = np.abs(G @ X.T)
    if isinstance(W, Block):
        bs = W.block_size
        dense = np.sqrt((dense.reshape(W.unit_grid[0], bs, W.unit_grid[1], bs) ** 2).sum(axis=(1, 3)))
    rows, cols = W.unit_coords()
    keep = np.ones(rows.size, bool) if dropped is None else ~dropped
    dense[rows[keep], cols[keep]] = -np.inf
    flat = dense.ravel()
    chosen = np.sort(np.argsort(-flat, kind="stable")[:k])
    return chosen // W.unit_grid[1], chosen % W.unit_grid[1]


@pytest.mark.parametrize("fmt", list(OPTIONS))
@pytest.mark.parametrize("chunk_rows", [1, 2, 256])
def test_dense_grad_topk_matches_brute_force(fmt, chunk_rows, rng):
    W = weight(fmt, rng, shape=(8, 12), density=0.5)
    G, X = rng.standard_normal((8, 5)), rng.standard_normal((12, 5))
    rows, cols, scores = dense_grad_topk(W, G, X, 3, chunk_rows=chunk_rows)
    exp_rows, exp_cols = brute_force_growth(W, G, X, 3)
    np.testing.assert_array_equal(rows, exp_rows)
    np.testing.assert_array_equal(cols, exp_cols)
    dropped = np.zeros(W.n_units, dtype=bool)
    dropped[:2] = True
    rows, cols, _ = dense_grad_topk(W, G, X, 3, dropped=dropped, chunk_rows=chunk_rows)
    exp_rows, exp_cols = brute_force_growth(W, G, X, 3, dropped)
    np.testing.assert_array_equal(rows, exp_rows)
    np.testing.assert_array_equal(cols, exp_cols)


def test_ties_are_broken_the_same_way_by_csr_and_masked(rng):
    """A zero gradient everywhere (dead inputs) is one big tie: both must pick the same."""
    pattern = random_pattern("csr", (6, 8), 0.5, rng)
    csr, masked = pattern, pattern.to_masked()
    G, X = np.zeros((6, 3)), np.zeros((8, 3))
    a = dense_grad_topk(csr, G, X, 5)
    b = dense_grad_topk(masked, G, X, 5)
    for u, v in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("fmt, extra", [("nm", {}), ("csr", {"constant_fan_in": True})])
def test_growth_per_group_respects_the_counts(fmt, extra, rng):
    W = weight(fmt, rng, shape=(6, 8), density=0.25 if extra else 0.5, **extra)
    counts = np.zeros(W.n_groups, dtype=np.int64)
    counts[::2] = 1
    G, X = rng.standard_normal((6, 4)), rng.standard_normal((8, 4))
    rows, cols, _ = dense_grad_topk(W, G, X, counts, chunk_rows=2)
    np.testing.assert_array_equal(np.bincount(W.group_of(rows, cols), minlength=W.n_groups), counts)
    assert not W.mask()[rows, cols].any()
    dense = np.abs(G @ X.T)                      # each pick is its group's best empty position
    empty_rows, empty_cols = np.nonzero(~W.mask())
    empty_groups = W.group_of(empty_rows, empty_cols)
    for r, c in zip(rows, cols):
        same = empty_groups == W.group_of(np.array([r]), np.array([c]))[0]
        assert dense[r, c] == dense[empty_rows[same], empty_cols[same]].max()
    with pytest.raises(ValueError, match="one count per group"):
        dense_grad_topk(W, G, X, counts[:-1])
    too_many = np.full(W.n_groups, 10)
    with pytest.raises(ValueError, match="only . empty places"):
        dense_grad_topk(W, G, X, too_many)


def test_random_growth_is_uniform_over_empty_units_and_reproducible(rng):
    W = weight("csr", rng, shape=(6, 8))
    a = random_empty_units(W, 5, np.random.default_rng(3), chunk_rows=2)
    b = random_empty_units(W.to_masked(), 5, np.random.default_rng(3), chunk_rows=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not W.mask()[a[0], a[1]].any() and len(set(zip(a[0], a[1]))) == 5
    hits = np.zeros(W.shape)
    draws = np.random.default_rng(4)
    for _ in range(300):
        r, c, _ = random_empty_units(W, 1, draws)
        hits[r, c] += 1
    assert hits[W.mask()].sum() == 0
    assert hits[~W.mask()].min() > 0            # 24 empty places, 300 draws: each one is hit


def test_unit_scores_and_groups(rng):
    B = weight("block", rng, shape=(4, 4), density=0.5)
    scores = B.unit_scores(np.ones(B.nnz))
    np.testing.assert_allclose(scores, 2.0)                         # ||ones(2, 2)|| = 2
    np.testing.assert_array_equal(B.unit_groups(), 0)
    M = weight("masked", rng)
    per_position = np.arange(M.values.size, dtype=np.float64)
    np.testing.assert_array_equal(M.unit_scores(per_position), np.flatnonzero(M.mask()))
    C = weight("csr", rng)
    with pytest.raises(ValueError, match="elem_scores must have shape"):
        C.unit_scores(np.ones(C.nnz + 1))
