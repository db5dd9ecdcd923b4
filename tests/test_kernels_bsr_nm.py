"""BSR and N:M kernels: cpu against reference, reference against dense NumPy."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sparsenet.kernels import cpu, reference
from test_kernels_common import KSET, assert_same, dtypes, ints, maybe_strided, seeds, tol

# 8 and 16: 4x8 register blocks; 4 and 12: 4x4 blocks; 1, 2, 3: one row at a time
block_sizes = st.sampled_from([1, 2, 3, 4, 8, 12, 16])
ks = st.sampled_from([1, 2, 5, 8])


def random_bsr(rng, n_brows, n_bcols, bs, density, dtype):
    """Random block pattern (empty block rows happen often) and its dense form."""
    mask = rng.random((n_brows, n_bcols)) < density
    dense = ints(rng, (n_brows * bs, n_bcols * bs), dtype)
    dense *= np.kron(mask, np.ones((bs, bs))).astype(dtype)
    indptr, indices, blocks = reference.bsr_from_dense(dense, bs, mask)
    return indptr, indices, blocks, dense, mask


bsr_cases = st.tuples(st.integers(0, 6), st.integers(1, 6), block_sizes,
                      st.sampled_from([0.0, 0.2, 0.5, 1.0]))


@KSET
@given(case=bsr_cases, k=ks, dtype=dtypes, seed=seeds, strided=st.booleans())
def test_bsr_spmm_and_spmm_t(case, k, dtype, seed, strided):
    n_brows, n_bcols, bs, density = case
    rng = np.random.default_rng(seed)
    indptr, indices, blocks, W, _ = random_bsr(rng, n_brows, n_bcols, bs, density, dtype)
    X = maybe_strided(rng, ints(rng, (n_bcols * bs, k), dtype), strided)
    G = maybe_strided(rng, ints(rng, (n_brows * bs, k), dtype), strided)
    colptr, rowind, perm = cpu.bsr_to_bsc(indptr, indices, n_bcols)
    for backend in (reference, cpu):
        y = backend.bsr_spmm(indptr, indices, blocks, X, np.full((n_brows * bs, k), np.nan, dtype))
        assert_same(y, W @ X)
        gx = backend.bsr_spmm_t(colptr, rowind, perm, blocks, G, np.full((n_bcols * bs, k), np.nan, dtype))
        assert_same(gx, W.T @ G)


@KSET
@given(case=bsr_cases, k=ks, dtype=dtypes, seed=seeds, strided=st.booleans())
def test_bsr_sddmm(case, k, dtype, seed, strided):
    n_brows, n_bcols, bs, density = case
    rng = np.random.default_rng(seed)
    indptr, indices, blocks, W, mask = random_bsr(rng, n_brows, n_bcols, bs, density, dtype)
    A = maybe_strided(rng, ints(rng, (n_brows * bs, k), dtype), strided)
    B = maybe_strided(rng, ints(rng, (n_bcols * bs, k), dtype), strided)
    full = A @ B.T
    _, _, want = reference.bsr_from_dense(full, bs, mask)
    for backend in (reference, cpu):
        got = backend.bsr_sddmm(indptr, indices, A, B, np.full(blocks.shape, np.nan, dtype))
        assert_same(got, want)


@KSET
@given(case=bsr_cases, dtype=dtypes, seed=seeds)
def test_bsr_conversions(case, dtype, seed):
    n_brows, n_bcols, bs, density = case
    rng = np.random.default_rng(seed)
    indptr, indices, blocks, W, mask = random_bsr(rng, n_brows, n_bcols, bs, density, dtype)
    got = cpu.bsr_from_dense(W, bs, mask)
    for a, b in zip(got, (indptr, indices, blocks)):
        assert_same(a, b)
    for backend in (reference, cpu):
        assert_same(backend.bsr_to_dense(indptr, indices, blocks, n_bcols, np.empty(W.shape, dtype)), W)
        for a, b in zip(backend.bsr_to_bsc(indptr, indices, n_bcols),
                        reference.csr_to_csc(indptr, indices, n_bcols)):
            assert_same(a, b)


def test_bsr_gaussian_block_32():
    rng = np.random.default_rng(3)
    mask = rng.random((3, 4)) < 0.5
    W = rng.standard_normal((96, 128)).astype(np.float32) * np.kron(mask, np.ones((32, 32)))
    indptr, indices, blocks = cpu.bsr_from_dense(W.astype(np.float32), 32, mask)
    X = rng.standard_normal((128, 16)).astype(np.float32)
    np.testing.assert_allclose(cpu.bsr_spmm(indptr, indices, blocks, X, np.empty((96, 16), np.float32)),
                               W @ X, **tol(np.float32))


# ---- N:M -------------------------------------------------------------------

nm_kinds = st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 1), (3, 3), (2, 16)])


def random_nm(rng, n_rows, n_groups, N, M, dtype):
    idx = np.zeros((n_rows, n_groups, N), dtype=np.uint8)
    for r in range(n_rows):
        for g in range(n_groups):
            idx[r, g] = np.sort(rng.choice(M, N, replace=False))
    values = ints(rng, (n_rows, n_groups, N), dtype)
    dense = np.zeros((n_rows, n_groups * M), dtype)
    for r in range(n_rows):
        for g in range(n_groups):
            dense[r, g * M + idx[r, g].astype(int)] = values[r, g]
    return values, idx, dense


@KSET
@given(n_rows=st.integers(0, 7), n_groups=st.integers(0, 5), kind=nm_kinds, k=ks, dtype=dtypes,
       seed=seeds, strided=st.booleans())
def test_nm_products(n_rows, n_groups, kind, k, dtype, seed, strided):
    N, M = kind
    rng = np.random.default_rng(seed)
    values, idx, W = random_nm(rng, n_rows, n_groups, N, M, dtype)
    X = maybe_strided(rng, ints(rng, (n_groups * M, k), dtype), strided)
    G = maybe_strided(rng, ints(rng, (n_rows, k), dtype), strided)
    for backend in (reference, cpu):
        assert_same(backend.nm_spmm(values, idx, M, X, np.full((n_rows, k), np.nan, dtype)), W @ X)
        assert_same(backend.nm_spmm_t(values, idx, M, G, np.full((n_groups * M, k), np.nan, dtype)), W.T @ G)
        want = np.take_along_axis((G @ X.T).reshape(n_rows, n_groups, M), idx.astype(np.intp), axis=2)
        assert_same(backend.nm_sddmm(idx, M, G, X, np.full(idx.shape, np.nan, dtype)), want)


@KSET
@given(n_rows=st.integers(0, 7), n_groups=st.integers(0, 5), kind=nm_kinds, dtype=dtypes, seed=seeds)
def test_nm_from_dense_keeps_largest_with_low_index_ties(n_rows, n_groups, kind, dtype, seed):
    N, M = kind
    rng = np.random.default_rng(seed)
    dense = ints(rng, (n_rows, n_groups * M), dtype, -2, 2)  # many ties in |.|
    for backend in (reference, cpu):
        values, idx = backend.nm_from_dense(dense, N, M)
        assert idx.dtype == np.uint8 and values.dtype == dtype
        for r in range(n_rows):
            for g in range(n_groups):
                group = dense[r, g * M:(g + 1) * M]
                order = sorted(range(M), key=lambda c: (-abs(group[c]), c))[:N]
                np.testing.assert_array_equal(idx[r, g], sorted(order))
                np.testing.assert_array_equal(values[r, g], group[sorted(order)])
        kept = backend.nm_to_dense(values, idx, M, np.empty(dense.shape, dtype))
        assert_same(kept, reference.nm_to_dense(values, idx, M, np.empty(dense.shape, dtype)))
        assert np.all((kept == dense) | (kept == 0))


def test_nm_to_dense_into_strided_out():
    rng = np.random.default_rng(4)
    values, idx, W = random_nm(rng, 3, 2, 2, 4, np.float64)
    for backend in (reference, cpu):
        out = np.empty((8, 3)).T
        assert backend.nm_to_dense(values, idx, 4, out) is out
        np.testing.assert_array_equal(out, W)
