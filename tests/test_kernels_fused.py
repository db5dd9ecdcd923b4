"""Fused kernels: the product with bias and ReLU, both backward products in one pass, the
ReLU backward with the bias gradient, the optimizer updates; and the far-operand (prefetching)
paths of the CSR kernels. Each against `kernels.reference` and against the unfused operations.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsenet.kernels import cpu, reference
from sparsenet.kernels.cpu import micro
from test_kernels_common import KSET, assert_same, dtypes, ints, random_csr, seeds

shapes = st.tuples(st.integers(0, 20), st.integers(1, 20))
densities = st.sampled_from([0.0, "one", 0.1, 0.5, 1.0])
ks = st.sampled_from([1, 2, 5, 8, 16])


@pytest.fixture(params=[False, True], ids=["near", "far"])
def far(request, monkeypatch):
    """Run each test twice: as usual, and with every operand treated as too large for the
    caches (the prefetching paths)."""
    if request.param:
        monkeypatch.setattr(micro, "FAR_BYTES", -1)
    return request.param


@KSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds,
       with_bias=st.booleans(), relu=st.booleans())
def test_spmm_bias_relu(shape, density, k, dtype, seed, with_bias, relu):
    rng = np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    X = ints(rng, (shape[1], k), dtype)
    bias = ints(rng, shape[0], dtype) if with_bias else None
    want = W @ X + (bias[:, None] if with_bias else 0)
    if relu:
        want = want * (want > 0)
    for backend in (reference, cpu):
        got = backend.csr_spmm(indptr, indices, values, X, np.full((shape[0], k), np.nan, dtype),
                               bias, relu)
        assert_same(got, want.astype(dtype))


@KSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds)
def test_spmm_t_sddmm_is_both_products(shape, density, k, dtype, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    colptr, rowind, perm = cpu.csr_to_csc(indptr, indices, shape[1])
    G, X = ints(rng, (shape[0], k), dtype), ints(rng, (shape[1], k), dtype)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    nnz = indices.size
    for backend in (reference, cpu):
        gx, gv = backend.csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X,
                                          np.full((shape[1], k), np.nan, dtype),
                                          np.full(nnz, np.nan, dtype))
        assert_same(gx, W.T @ G)
        assert_same(gv, (G @ X.T)[rows, indices])


def test_far_paths_match_the_reference(far):
    """Prefetching changes where rows are loaded from, never the numbers."""
    rng = np.random.default_rng(0)
    for shape, k in (((37, 53), 16), ((64, 40), 3), ((5, 300), 32)):
        indptr, indices, values, W = random_csr(rng, *shape, 0.3, np.float32)
        colptr, rowind, perm = cpu.csr_to_csc(indptr, indices, shape[1])
        X, G = ints(rng, (shape[1], k), np.float32), ints(rng, (shape[0], k), np.float32)
        rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
        assert_same(cpu.csr_spmm(indptr, indices, values, X, np.empty((shape[0], k), np.float32)),
                    W @ X)
        assert_same(cpu.csr_spmm_t(colptr, rowind, perm, values, G,
                                   np.empty((shape[1], k), np.float32)), W.T @ G)
        assert_same(cpu.csr_sddmm(indptr, indices, G, X, np.empty(indices.size, np.float32)),
                    (G @ X.T)[rows, indices])
        gx, gv = cpu.csr_spmm_t_sddmm(colptr, rowind, perm, values, G, X,
                                      np.empty((shape[1], k), np.float32),
                                      np.empty(indices.size, np.float32))
        assert_same(gx, W.T @ G)
        assert_same(gv, (G @ X.T)[rows, indices])


@KSET
@given(n=st.integers(0, 30), k=st.integers(1, 40), dtype=dtypes, seed=seeds)
def test_relu_backward(n, k, dtype, seed):
    rng = np.random.default_rng(seed)
    grad, act = ints(rng, (n, k), dtype), ints(rng, (n, k), dtype)
    act[0:1] = 0                                   # exactly zero: no gradient through it
    for backend in (reference, cpu):
        out, sums = np.full((n, k), np.nan, dtype), np.full(n, np.nan, dtype)
        backend.relu_backward(grad, act, out, sums)
        assert_same(out, grad * (act > 0))
        assert_same(sums, (grad * (act > 0)).sum(axis=1))


def _numpy_sgd(p, g, buf, lr, mu, wd, nesterov):
    """The optimizer's NumPy expressions (sparsenet.optim.SGD before the kernel)."""
    if wd:
        g = g + wd * p
    if mu:
        buf *= mu
        buf += g
        g = g + mu * buf if nesterov else buf
    p -= p.dtype.type(lr) * g


@KSET
@given(n=st.integers(0, 300), dtype=dtypes, seed=seeds, mu=st.sampled_from([0.0, 0.9]),
       wd=st.sampled_from([0.0, 1e-4, 0.3]), nesterov=st.booleans(), lr=st.floats(0, 1))
def test_sgd_update_equals_numpy_bit_for_bit(n, dtype, seed, mu, wd, nesterov, lr):
    nesterov = nesterov and mu > 0
    rng = np.random.default_rng(seed)
    p, g, b = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    want_p, want_b = p.copy(), b.copy()
    _numpy_sgd(want_p, g, want_b, lr, mu, wd, nesterov)
    for backend in (reference, cpu):
        got_p, got_b = p.copy(), b.copy()
        backend.sgd_update(got_p, g, got_b, lr, mu, wd, nesterov)
        assert_same(got_p, want_p)
        if mu:
            assert_same(got_b, want_b)


@KSET
@given(n=st.integers(0, 300), dtype=dtypes, seed=seeds, wd=st.sampled_from([0.0, 1e-2]),
       decoupled=st.booleans(), step=st.integers(1, 50))
def test_adam_update_equals_numpy_bit_for_bit(n, dtype, seed, wd, decoupled, step):
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = rng.standard_normal(n).astype(dtype), rng.random(n).astype(dtype)
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    wp, wm, wv = p.copy(), m.copy(), v.copy()            # the optimizer's NumPy expressions
    gg = g
    if wd and decoupled:
        wp *= wp.dtype.type(1 - lr * wd)
    elif wd:
        gg = g + wd * wp
    wm *= b1
    wm += (1 - b1) * gg
    wv *= b2
    wv += (1 - b2) * gg * gg
    wp -= wp.dtype.type(lr * (1 / (1 - b1 ** step))) * wm / (
        np.sqrt(wv / wp.dtype.type(1 - b2 ** step)) + eps)
    for backend in (reference, cpu):
        gp, gm, gv = p.copy(), m.copy(), v.copy()
        backend.adam_update(gp, g, gm, gv, lr, b1, b2, eps, wd, decoupled, step)
        assert_same(gp, wp)
        assert_same(gm, wm)
        assert_same(gv, wv)


@pytest.mark.parametrize("backend", [reference, cpu], ids=["reference", "cpu"])
def test_fused_kernels_refuse_bad_arguments(backend):
    p = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="grad"):
        backend.sgd_update(p, np.zeros(4), np.zeros(4, np.float32), 0.1, 0.9, 0.0, False)
    with pytest.raises(ValueError, match="momentum"):
        backend.sgd_update(p, p.copy(), p.copy(), 0.1, 1.5, 0.0, False)
    with pytest.raises(ValueError, match="lr"):
        backend.sgd_update(p, p.copy(), p.copy(), float("nan"), 0.9, 0.0, False)
    with pytest.raises(ValueError, match="momentum_buf"):
        backend.sgd_update(p, p.copy(), p, 0.1, 0.9, 0.0, False)          # the state is param
    with pytest.raises(ValueError, match="step"):
        backend.adam_update(p, p.copy(), p.copy(), p.copy(), 1e-3, 0.9, 0.999, 1e-8, 0, False, 0)
    with pytest.raises(ValueError, match="row_sums"):
        backend.relu_backward(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32),
                              np.zeros((3, 2), np.float32), np.zeros(2, np.float32))
    indptr, indices, values, _ = random_csr(np.random.default_rng(0), 3, 4, 0.5, np.float32)
    with pytest.raises(ValueError, match="bias"):
        backend.csr_spmm(indptr, indices, values, np.zeros((4, 2), np.float32),
                         np.zeros((3, 2), np.float32), np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="bias"):
        backend.csr_spmm(indptr, indices, values, np.zeros((4, 2), np.float32),
                         np.zeros((3, 2), np.float32), np.zeros(3, np.float64))
