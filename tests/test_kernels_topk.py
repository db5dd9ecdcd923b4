"""Top-k selection and RigL's dense_grad_topk: exact agreement, tie rules."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsenet.kernels import cpu, reference
from test_kernels_common import KSET, dtypes, ints, random_pattern_dense, seeds


def brute_topk(scores_1d, k):
    """Larger score first, lower index on ties; returned ascending."""
    order = sorted(range(len(scores_1d)), key=lambda i: (-scores_1d[i], i))
    return sorted(order[:k])


@KSET
@given(n_rows=st.integers(0, 6), n_cols=st.integers(1, 40), data=st.data(), dtype=dtypes, seed=seeds)
def test_topk_per_row(n_rows, n_cols, data, dtype, seed):
    # n_cols up to 40 covers both the rank method (<= 16) and the partition path.
    k = data.draw(st.integers(0, n_cols), label="k")
    rng = np.random.default_rng(seed)
    scores = ints(rng, (n_rows, n_cols), dtype, -2, 2)  # plenty of ties
    want = np.array([brute_topk(row, k) for row in scores], dtype=np.int32).reshape(n_rows, k)
    for backend in (reference, cpu):
        got = backend.topk_per_row(scores, k, np.full((n_rows, k), -1, np.int32))
        np.testing.assert_array_equal(got, want)


@KSET
@given(n_rows=st.integers(0, 5), n_groups=st.integers(0, 5), M=st.sampled_from([1, 4, 8, 20, 33]),
       data=st.data(), dtype=dtypes, seed=seeds)
def test_topk_per_group(n_rows, n_groups, M, data, dtype, seed):
    N = data.draw(st.integers(0, M), label="N")
    rng = np.random.default_rng(seed)
    scores = ints(rng, (n_rows, n_groups, M), dtype, -1, 1)
    want = np.array([[brute_topk(grp, N) for grp in row] for row in scores], dtype=np.uint8)
    want = want.reshape(n_rows, n_groups, N)
    for backend in (reference, cpu):
        got = backend.topk_per_group(scores, N, np.zeros((n_rows, n_groups, N), np.uint8))
        np.testing.assert_array_equal(got, want)


@KSET
@given(n=st.integers(1, 300), data=st.data(), dtype=dtypes, seed=seeds)
def test_topk_flat(n, data, dtype, seed):
    k = data.draw(st.integers(0, n), label="k")
    scores = ints(np.random.default_rng(seed), n, dtype, -3, 3)
    for backend in (reference, cpu):
        got = backend.topk_flat(scores, k)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, brute_topk(scores, k))


def test_tie_rule_prefers_lower_index_and_signed_zero_ties():
    scores = np.array([[1.0, 5.0, 5.0, -0.0, 5.0, 0.0]])
    for backend in (reference, cpu):
        np.testing.assert_array_equal(backend.topk_per_row(scores, 2, np.empty((1, 2), np.int32)), [[1, 2]])
        np.testing.assert_array_equal(backend.topk_flat(scores[0], 5), [0, 1, 2, 3, 4])


def test_topk_rejects_nan():
    scores = np.array([[1.0, np.nan]])
    for backend in (reference, cpu):
        with pytest.raises(ValueError, match="scores"):
            backend.topk_per_row(scores, 1, np.empty((1, 1), np.int32))


def brute_grad_topk(G, X, W_mask, k_top):
    scores = np.abs(G @ X.T)
    flat = [i for i in range(scores.size) if not W_mask.flat[i]]
    chosen = sorted(sorted(flat, key=lambda i: (-scores.flat[i], i))[:k_top])
    chosen = np.array(chosen, dtype=np.int64)
    n_cols = scores.shape[1]
    return chosen // n_cols, chosen % n_cols, scores.flat[chosen]


@KSET
@given(n_rows=st.integers(1, 9), n_cols=st.integers(1, 9), k=st.sampled_from([1, 3]),
       density=st.sampled_from([0.0, 0.3, 0.9]), chunk=st.sampled_from([1, 2, 3, 50]),
       data=st.data(), dtype=dtypes, seed=seeds)
def test_dense_grad_topk_matches_brute_force(n_rows, n_cols, k, density, chunk, data, dtype, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, _, W = random_pattern_dense(rng, n_rows, n_cols, density, dtype)
    mask = np.zeros((n_rows, n_cols), bool)
    mask[np.repeat(np.arange(n_rows), np.diff(indptr)), indices] = True
    k_top = data.draw(st.integers(0, int((~mask).sum())), label="k_top")
    G = ints(rng, (n_rows, k), dtype, -2, 2)  # small integers: exact, with many ties
    X = ints(rng, (n_cols, k), dtype, -2, 2)
    want = brute_grad_topk(G, X, mask, k_top)
    for backend in (reference, cpu):
        rows, cols, scores = backend.dense_grad_topk(G, X, indptr, indices, k_top, chunk)
        assert rows.dtype == np.int64 and cols.dtype == np.int64 and scores.dtype == dtype
        np.testing.assert_array_equal(rows, want[0])
        np.testing.assert_array_equal(cols, want[1])
        np.testing.assert_array_equal(scores, want[2])


def test_dense_grad_topk_rejects_k_top_beyond_free_positions():
    G = np.ones((2, 1))
    X = np.ones((2, 1))
    indptr = np.array([0, 1, 1], np.int64)
    indices = np.array([0], np.int32)
    for backend in (reference, cpu):
        with pytest.raises(ValueError, match="k_top"):
            backend.dense_grad_topk(G, X, indptr, indices, 4, 1)
