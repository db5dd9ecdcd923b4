"""O(count) uniform samplers (sparse/sampling.py) and the patterns and growth built on them:
right counts, no repeats, nothing taken, uniform, and no memory in proportion to the grid."""
import tracemalloc

import numpy as np
import pytest

from sparsenet.sparse import CSR, random_empty_units, random_pattern
from sparsenet.sparse.sampling import (distinct_keys, distinct_per_row, empty_keys,
                                       empty_keys_per_group)


@pytest.mark.parametrize("pop, count", [(10, 0), (10, 3), (10, 10), (1000, 200), (10 ** 11, 500)])
def test_distinct_keys_are_distinct_sorted_in_range(pop, count):
    keys = distinct_keys(pop, count, np.random.default_rng(0))
    assert keys.dtype == np.int64 and keys.size == count
    assert (np.diff(keys) > 0).all() and (keys.size == 0 or (keys[0] >= 0 and keys[-1] < pop))


def frequencies(draw, n, trials=4000):
    rng = np.random.default_rng(1)
    hits = np.zeros(n)
    for _ in range(trials):
        np.add.at(hits, draw(rng), 1)
    return hits


def test_distinct_keys_are_uniform():
    hits = frequencies(lambda rng: distinct_keys(40, 4, rng), 40)      # the rejection path
    expected = 4000 * 4 / 40
    assert np.abs(hits - expected).max() < 5 * np.sqrt(expected)


def test_distinct_per_row_is_uniform_and_distinct():
    rng = np.random.default_rng(0)
    for width, count in ((1000, 30), (12, 9), (7, 7), (5, 0)):
        rows = distinct_per_row(50, width, count, rng)
        assert rows.shape == (50, count)
        assert (np.diff(rows, axis=1) > 0).all() and (rows.size == 0 or rows.max() < width)
    hits = frequencies(lambda rng: distinct_per_row(3, 40, 5, rng).ravel(), 40, trials=2000)
    expected = 2000 * 3 * 5 / 40
    assert np.abs(hits - expected).max() < 5 * np.sqrt(expected)


def test_empty_keys_never_take_a_taken_key_and_are_uniform():
    taken = np.array([0, 3, 4, 9, 17], np.int64)
    hits = frequencies(lambda rng: empty_keys(taken, 40, 3, rng), 40)
    assert hits[taken].sum() == 0
    free = np.setdiff1d(np.arange(40), taken)
    expected = 4000 * 3 / free.size
    assert np.abs(hits[free] - expected).max() < 5 * np.sqrt(expected)
    full = np.arange(35, dtype=np.int64)                   # mostly full: the listing path
    keys = empty_keys(full, 40, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(keys, np.arange(35, 40))
    with pytest.raises(ValueError, match="only 5 places are empty"):
        empty_keys(full, 40, 6, np.random.default_rng(0))


def test_empty_keys_per_group_fill_each_group_as_asked():
    rng = np.random.default_rng(0)
    taken = np.array([0, 1, 5, 8, 9, 10], np.int64)        # groups of 4: {0,1}, {5}, {8,9,10}
    keys = empty_keys_per_group(taken, 4, np.array([2, 3, 1]), rng)
    assert not np.isin(keys, taken).any() and np.unique(keys).size == keys.size
    np.testing.assert_array_equal(np.bincount(keys // 4, minlength=3), [2, 3, 1])
    with pytest.raises(ValueError, match="group 2"):
        empty_keys_per_group(taken, 4, np.array([0, 0, 2]), rng)


def test_a_huge_layer_is_sampled_in_memory_proportional_to_its_weights():
    """1e10 positions, 100,000 stored: a dense sampler would need 80 GB."""
    tracemalloc.start()
    w = random_pattern("csr", (100_000, 100_000), 1e-5, np.random.default_rng(0))
    rows, cols, _ = random_empty_units(w, 1000, np.random.default_rng(1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert w.nnz == 100_000 and rows.size == 1000
    assert peak < 40 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MiB"
    keys = w.coords()[0] * 100_000 + w.coords()[1]
    assert not np.isin(rows * 100_000 + cols, keys).any()


def test_constant_fan_in_pattern_on_a_wide_layer():
    w = random_pattern("csr", (2000, 300_000), 1e-4, np.random.default_rng(0), constant_fan_in=True)
    assert isinstance(w, CSR) and (w.row_lengths() == 30).all()
    rows, cols, _ = random_empty_units(w, np.full(2000, 2), np.random.default_rng(1))
    np.testing.assert_array_equal(np.bincount(rows, minlength=2000), 2)
