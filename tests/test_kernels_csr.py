"""CSR kernels: cpu against reference, reference against dense NumPy/scipy."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from sparsenet.kernels import cpu, reference
from test_kernels_common import (KSET, assert_same, dtypes, ints, maybe_strided, random_csr, seeds,
                                 tol)

shapes = st.tuples(st.integers(0, 24), st.integers(1, 24))
densities = st.sampled_from([0.0, "one", 0.1, 0.4, 1.0])
ks = st.sampled_from([1, 2, 3, 8, 13])


@KSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds, strided=st.booleans())
def test_csr_spmm(shape, density, k, dtype, seed, strided):
    rng = np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    X = maybe_strided(rng, ints(rng, (shape[1], k), dtype), strided)
    want = W @ X
    got_ref = reference.csr_spmm(indptr, indices, values, X, np.empty((shape[0], k), dtype))
    got_cpu = cpu.csr_spmm(indptr, indices, values, X, np.full((shape[0], k), np.nan, dtype))
    assert_same(got_ref, want)
    assert_same(got_cpu, want)


@KSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds, strided=st.booleans())
def test_csr_spmm_t(shape, density, k, dtype, seed, strided):
    rng = np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    colptr, rowind, perm = cpu.csr_to_csc(indptr, indices, shape[1])
    G = maybe_strided(rng, ints(rng, (shape[0], k), dtype), strided)
    want = W.T @ G
    assert_same(reference.csr_spmm_t(colptr, rowind, perm, values, G, np.empty((shape[1], k), dtype)), want)
    assert_same(cpu.csr_spmm_t(colptr, rowind, perm, values, G, np.full((shape[1], k), np.nan, dtype)), want)


@KSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds, strided=st.booleans())
def test_csr_sddmm(shape, density, k, dtype, seed, strided):
    rng = np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    A = maybe_strided(rng, ints(rng, (shape[0], k), dtype), strided)
    B = maybe_strided(rng, ints(rng, (shape[1], k), dtype), strided)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    want = (A @ B.T)[rows, indices]
    nnz = indices.shape[0]
    assert_same(reference.csr_sddmm(indptr, indices, A, B, np.empty(nnz, dtype)), want)
    assert_same(cpu.csr_sddmm(indptr, indices, A, B, np.full(nnz, np.nan, dtype)), want)


@KSET
@given(shape=shapes, density=densities, seed=seeds)
def test_csr_to_csc_matches_scipy(shape, density, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, np.float64)
    want = sp.csr_array(W).tocsc()
    want.sort_indices()
    for backend in (reference, cpu):
        colptr, rowind, perm = backend.csr_to_csc(indptr, indices, shape[1])
        assert colptr.dtype == np.int64 and rowind.dtype == np.int32 and perm.dtype == np.int64
        np.testing.assert_array_equal(colptr, want.indptr)
        np.testing.assert_array_equal(rowind, want.indices)
        np.testing.assert_array_equal(values[perm], want.data)


@KSET
@given(shape=shapes, density=densities, dtype=dtypes, seed=seeds)
def test_csr_dense_round_trip(shape, density, dtype, seed):
    rng = np.random.default_rng(seed)
    _, _, _, W = random_csr(rng, *shape, density, dtype)
    want = sp.csr_array(W)
    for backend in (reference, cpu):
        indptr, indices, values = backend.csr_from_dense(W)
        np.testing.assert_array_equal(indptr, want.indptr)
        np.testing.assert_array_equal(indices, want.indices)
        assert indptr.dtype == np.int64 and indices.dtype == np.int32 and values.dtype == dtype
        assert_same(backend.csr_to_dense(indptr, indices, values, shape[1], np.empty(shape, dtype)), W)


def test_csr_to_dense_sums_duplicates():
    indptr = np.array([0, 3], np.int64)
    indices = np.array([1, 1, 0], np.int32)
    values = np.array([1.0, 2.0, 5.0])
    for backend in (reference, cpu):
        np.testing.assert_array_equal(backend.csr_to_dense(indptr, indices, values, 2, np.empty((1, 2))),
                                      [[5.0, 3.0]])


@KSET
@given(density=st.sampled_from([0.05, 0.3]), k=st.sampled_from([1, 7, 64]), dtype=dtypes, seed=seeds)
def test_csr_products_gaussian(density, k, dtype, seed):
    # Real-valued data: cpu sums in another order, so compare with a tolerance.
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((37, 45)) * (rng.random((37, 45)) < density)).astype(dtype)
    X = rng.standard_normal((45, k)).astype(dtype)
    G = rng.standard_normal((37, k)).astype(dtype)
    indptr, indices, values = cpu.csr_from_dense(W)
    colptr, rowind, perm = cpu.csr_to_csc(indptr, indices, 45)
    np.testing.assert_allclose(cpu.csr_spmm(indptr, indices, values, X, np.empty((37, k), dtype)),
                               W @ X, **tol(dtype))
    np.testing.assert_allclose(cpu.csr_spmm_t(colptr, rowind, perm, values, G, np.empty((45, k), dtype)),
                               W.T @ G, **tol(dtype))
    rows = np.repeat(np.arange(37), np.diff(indptr))
    np.testing.assert_allclose(cpu.csr_sddmm(indptr, indices, G, X, np.empty(len(values), dtype)),
                               (G @ X.T)[rows, indices], **tol(dtype))


def test_large_rows_use_every_thread_and_stay_deterministic():
    # Big enough that work_bounds splits the rows over threads; the result
    # must be identical from call to call (fixed summation order).
    rng = np.random.default_rng(1)
    W = (rng.standard_normal((300, 400)) * (rng.random((300, 400)) < 0.3)).astype(np.float32)
    X = rng.standard_normal((400, 32)).astype(np.float32)
    indptr, indices, values = cpu.csr_from_dense(W)
    first = cpu.csr_spmm(indptr, indices, values, X, np.empty((300, 32), np.float32))
    second = cpu.csr_spmm(indptr, indices, values, X, np.empty((300, 32), np.float32))
    assert_same(first, second)
    np.testing.assert_allclose(first, W @ X, rtol=1e-4, atol=1e-4)


def test_non_contiguous_out_is_filled():
    rng = np.random.default_rng(2)
    indptr, indices, values, W = random_csr(rng, 5, 6, 0.5, np.float64)
    X = ints(rng, (6, 3), np.float64)
    for backend in (reference, cpu):
        out = np.zeros((3, 5)).T  # Fortran-ordered (5, 3)
        result = backend.csr_spmm(indptr, indices, values, X, out)
        assert result is out
        np.testing.assert_array_equal(out, W @ X)
