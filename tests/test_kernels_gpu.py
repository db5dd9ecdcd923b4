"""Every gpu kernel against kernels.reference: in Numba's CUDA simulator on machines without a
GPU (NumPy arrays, what CI runs), on the device with CuPy arrays where there is one.

The simulator runs each CUDA thread as a Python thread, so shapes are tiny and awkward (empty
rows, no stored entry, one column, sizes that cross a warp's 32 lanes) and hypothesis draws few
examples. Data are integer-valued floats, so every sum is exact in any order: the kernels must
match the reference exactly; one test per family uses Gaussian data with a tolerance.
"""
import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_target import TARGET, dev, host, kernels, needs_target
from sparsenet.kernels import cpu, reference
from test_kernels_common import dtypes, ints, maybe_strided, random_csr, seeds, tol

pytestmark = needs_target

GSET = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
shapes = st.tuples(st.integers(0, 5), st.integers(1, 6))
densities = st.sampled_from([0.0, "one", 0.4, 1.0])
ks = st.sampled_from([1, 2, 5, 33])                   # 33: more columns than a warp has lanes


def empty_like_out(shape, dtype):
    """An output filled with NaN: a kernel that skips an element leaves NaN there."""
    return dev(np.full(shape, np.nan, dtype))


def assert_exact(got, want):
    got = host(got)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype


def test_gpu_has_every_kernel_with_the_reference_signature():
    gpu = kernels()
    for name in cpu.KERNELS + gpu.OPTIMIZER_KERNELS + gpu.FUSED_KERNELS:
        assert callable(getattr(gpu, name)), name
        if not hasattr(reference, name):      # a fused kernel whose spec came to main later
            continue
        ours = list(inspect.signature(getattr(gpu, name)).parameters.values())
        spec = list(inspect.signature(getattr(reference, name)).parameters.values())
        assert ours[:len(spec)] == spec, name
        # beyond the spec only the fused layer options of main's csr_spmm (bias, relu)
        assert [p.name for p in ours[len(spec):]] in ([], ["bias", "relu"]), name


# ---- CSR ----------------------------------------------------------------------------------

@GSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds, strided=st.booleans())
def test_csr_products(shape, density, k, dtype, seed, strided):
    gpu, rng = kernels(), np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    X = maybe_strided(rng, ints(rng, (shape[1], k), dtype), strided)
    G = ints(rng, (shape[0], k), dtype)
    ip, ix, v = dev(indptr), dev(indices), dev(values)
    for strategy in ("thread_per_row", "warp_per_row"):
        out = gpu.csr_spmm_with(strategy, ip, ix, v, dev(X), empty_like_out((shape[0], k), dtype))
        assert_exact(out, W @ X)
    assert_exact(gpu.csr_spmm(ip, ix, v, dev(X), empty_like_out((shape[0], k), dtype)), W @ X)
    colptr, rowind, perm = gpu.csr_to_csc(ip, ix, shape[1])
    for got, want in zip((colptr, rowind, perm), reference.csr_to_csc(indptr, indices, shape[1])):
        assert_exact(got, want)
    out = gpu.csr_spmm_t(colptr, rowind, perm, v, dev(G), empty_like_out((shape[1], k), dtype))
    assert_exact(out, W.T @ G)
    nnz = indices.shape[0]
    want = reference.csr_sddmm(indptr, indices, G, X, np.empty(nnz, dtype))
    assert_exact(gpu.csr_sddmm(ip, ix, dev(G), dev(X), empty_like_out(nnz, dtype)), want)


@GSET
@given(shape=shapes, density=densities, dtype=dtypes, seed=seeds)
def test_csr_conversions(shape, density, dtype, seed):
    gpu, rng = kernels(), np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    for got, want in zip(gpu.csr_from_dense(dev(W)), (indptr, indices, values)):
        assert_exact(got, want)
    out = gpu.csr_to_dense(dev(indptr), dev(indices), dev(values), shape[1],
                           empty_like_out(shape, dtype))
    assert_exact(out, W)


def test_csr_to_dense_sums_duplicates_and_keeps_csr_order_in_csc():
    gpu = kernels()
    indptr = np.array([0, 3, 3, 4], np.int64)
    indices = np.array([1, 1, 0, 1], np.int32)                 # a duplicate (0, 1)
    values = np.array([1.0, 2.0, 4.0, 8.0])
    out = gpu.csr_to_dense(dev(indptr), dev(indices), dev(values), 2, dev(np.empty((3, 2))))
    assert_exact(out, reference.csr_to_dense(indptr, indices, values, 2, np.empty((3, 2))))
    for got, want in zip(gpu.csr_to_csc(dev(indptr), dev(indices), 2),
                         reference.csr_to_csc(indptr, indices, 2)):
        assert_exact(got, want)


def test_csr_products_gaussian_and_a_long_row():
    """Real-valued data (rounding differs from the reference's order: a tolerance), and a row
    longer than one 32-entry round of the SDDMM kernel."""
    gpu, rng = kernels(), np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        W = rng.standard_normal((3, 70)).astype(dtype) * (rng.random((3, 70)) < 0.8)
        X, G = rng.standard_normal((70, 3)).astype(dtype), rng.standard_normal((3, 3)).astype(dtype)
        ip, ix, v = reference.csr_from_dense(W)
        got = gpu.csr_spmm(dev(ip), dev(ix), dev(v), dev(X), dev(np.empty((3, 3), dtype)))
        np.testing.assert_allclose(host(got), W @ X, **tol(dtype))
        got = gpu.csr_sddmm(dev(ip), dev(ix), dev(G), dev(X), dev(np.empty(len(v), dtype)))
        np.testing.assert_allclose(host(got), (G @ X.T)[W != 0], **tol(dtype))


def test_strided_out_is_filled():
    gpu, rng = kernels(), np.random.default_rng(2)
    indptr, indices, values, W = random_csr(rng, 4, 5, 0.5, np.float32)
    X = ints(rng, (5, 3), np.float32)
    wide = dev(np.full((4, 6), np.nan, np.float32))
    gpu.csr_spmm(dev(indptr), dev(indices), dev(values), dev(X), wide[:, ::2])
    assert_exact(wide[:, ::2], W @ X)
    assert np.isnan(host(wide)[:, 1::2]).all()                # the gaps are untouched


# ---- BSR ----------------------------------------------------------------------------------

@GSET
@given(grid=st.tuples(st.integers(0, 3), st.integers(1, 3)), bs=st.sampled_from([1, 2, 3]),
       density=st.sampled_from([0.0, 0.5, 1.0]), k=st.sampled_from([1, 3, 33]), dtype=dtypes,
       seed=seeds)
def test_bsr_kernels(grid, bs, density, k, dtype, seed):
    gpu, rng = kernels(), np.random.default_rng(seed)
    shape = (grid[0] * bs, grid[1] * bs)
    dense = ints(rng, shape, dtype)
    block_mask = rng.random(grid) < density
    indptr, indices, blocks = reference.bsr_from_dense(dense, bs, block_mask)
    for got, want in zip(gpu.bsr_from_dense(dev(dense), bs, dev(block_mask)),
                         (indptr, indices, blocks)):
        assert_exact(got, want)
    W = reference.bsr_to_dense(indptr, indices, blocks, grid[1], np.empty(shape, dtype))
    ip, ix, bl = dev(indptr), dev(indices), dev(blocks)
    assert_exact(gpu.bsr_to_dense(ip, ix, bl, grid[1], empty_like_out(shape, dtype)), W)
    X, G = ints(rng, (shape[1], k), dtype), ints(rng, (shape[0], k), dtype)
    assert_exact(gpu.bsr_spmm(ip, ix, bl, dev(X), empty_like_out((shape[0], k), dtype)), W @ X)
    colptr, rowind, perm = gpu.bsr_to_bsc(ip, ix, grid[1])
    out = gpu.bsr_spmm_t(colptr, rowind, perm, bl, dev(G), empty_like_out((shape[1], k), dtype))
    assert_exact(out, W.T @ G)
    want = reference.bsr_sddmm(indptr, indices, G, X, np.empty(blocks.shape, dtype))
    assert_exact(gpu.bsr_sddmm(ip, ix, dev(G), dev(X), empty_like_out(blocks.shape, dtype)), want)


# ---- N:M ----------------------------------------------------------------------------------

@GSET
@given(n_rows=st.integers(0, 4), n_groups=st.integers(1, 3),
       nm=st.sampled_from([(1, 2), (2, 4), (1, 3), (3, 3)]), k=st.sampled_from([1, 4, 33]),
       dtype=dtypes, seed=seeds)
def test_nm_kernels(n_rows, n_groups, nm, k, dtype, seed):
    gpu, rng = kernels(), np.random.default_rng(seed)
    N, M = nm
    dense = ints(rng, (n_rows, n_groups * M), dtype, 0, 2)     # many ties: lower column wins
    values, idx = reference.nm_from_dense(dense, N, M)
    for got, want in zip(gpu.nm_from_dense(dev(dense), N, M), (values, idx)):
        assert_exact(got, want)
    W = reference.nm_to_dense(values, idx, M, np.empty(dense.shape, dtype))
    v, ix = dev(values), dev(idx)
    assert_exact(gpu.nm_to_dense(v, ix, M, empty_like_out(dense.shape, dtype)), W)
    X, G = ints(rng, (n_groups * M, k), dtype), ints(rng, (n_rows, k), dtype)
    assert_exact(gpu.nm_spmm(v, ix, M, dev(X), empty_like_out((n_rows, k), dtype)), W @ X)
    assert_exact(gpu.nm_spmm_t(v, ix, M, dev(G), empty_like_out((n_groups * M, k), dtype)), W.T @ G)
    want = reference.nm_sddmm(idx, M, G, X, np.empty(idx.shape, dtype))
    assert_exact(gpu.nm_sddmm(ix, M, dev(G), dev(X), empty_like_out(idx.shape, dtype)), want)


# ---- top-k --------------------------------------------------------------------------------

@GSET
@given(shape=st.tuples(st.integers(0, 4), st.integers(1, 9)), frac=st.sampled_from([0, 0.1, 0.5, 1]),
       dtype=dtypes, seed=seeds)
def test_topk(shape, frac, dtype, seed):
    gpu, rng = kernels(), np.random.default_rng(seed)
    scores = ints(rng, shape, dtype, 0, 2)                      # many ties
    scores[0:1, 0:1] = -0.0                                     # equal to 0.0, as in the reference
    k = max(1, int(frac * shape[1])) if frac else 0
    want = reference.topk_per_row(scores, k, np.empty((shape[0], k), np.int32))
    assert_exact(gpu.topk_per_row(dev(scores), k, dev(np.empty((shape[0], k), np.int32))), want)
    flat = scores.ravel()
    k_flat = int(frac * flat.size)
    assert_exact(gpu.topk_flat(dev(flat), k_flat), reference.topk_flat(flat, k_flat))
    groups = ints(rng, (shape[0], 3, 4), dtype, 0, 2)
    for n in (0, 1, 2, 4):
        want = reference.topk_per_group(groups, n, np.empty((shape[0], 3, n), np.uint8))
        got = gpu.topk_per_group(dev(groups), n, dev(np.empty((shape[0], 3, n), np.uint8)))
        assert_exact(got, want)


@GSET
@given(shape=st.tuples(st.integers(1, 6), st.integers(1, 6)), density=densities,
       chunk_rows=st.sampled_from([1, 2, 64]), frac=st.sampled_from([0.0, 0.3, 1.0]),
       dtype=dtypes, seed=seeds)
def test_dense_grad_topk(shape, density, chunk_rows, frac, dtype, seed):
    gpu, rng = kernels(), np.random.default_rng(seed)
    indptr, indices, _, _ = random_csr(rng, *shape, density, dtype)
    G, X = ints(rng, (shape[0], 3), dtype), ints(rng, (shape[1], 3), dtype)
    k_top = int(frac * (shape[0] * shape[1] - indices.shape[0]))
    want = reference.dense_grad_topk(G, X, indptr, indices, k_top, chunk_rows)
    got = gpu.dense_grad_topk(dev(G), dev(X), dev(indptr), dev(indices), k_top, chunk_rows)
    for g, w in zip(got, want):
        assert_exact(g, w)


# ---- convolution ----------------------------------------------------------------------------

@GSET
@given(geometry=st.sampled_from([(1, 1, 1, 0), (3, 2, 1, 1), (2, 2, 2, 0), (3, 3, 2, 2)]),
       image=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(3, 5), st.integers(3, 4)),
       dtype=dtypes, seed=seeds)
def test_im2col_col2im(geometry, image, dtype, seed):
    gpu, rng = kernels(), np.random.default_rng(seed)
    kh, kw, stride, padding = geometry
    B, C, H, W = image
    x = ints(rng, image, dtype)
    h_out, w_out = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    col_shape = (B, C * kh * kw, h_out * w_out)
    cols = reference.im2col(x, kh, kw, stride, padding, np.empty(col_shape, dtype))
    assert_exact(gpu.im2col(dev(x), kh, kw, stride, padding, empty_like_out(col_shape, dtype)), cols)
    want = reference.col2im(cols, C, H, W, kh, kw, stride, padding, np.empty(image, dtype))
    got = gpu.col2im(dev(cols), C, H, W, kh, kw, stride, padding, empty_like_out(image, dtype))
    assert_exact(got, want)


# ---- optimizer steps ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov, weight_decay",
                         [(0.0, False, 0.0), (0.9, False, 1e-4), (0.9, True, 0.0), (0.5, True, 1e-2)])
def test_sgd_update(dtype, momentum, nesterov, weight_decay):
    gpu, rng = kernels(), np.random.default_rng(3)
    w, g, buf = (rng.standard_normal(37).astype(dtype) for _ in range(3))
    want_w, want_buf = w.copy(), buf.copy() if momentum else np.zeros(0, dtype)
    reference.sgd_update(want_w, g, want_buf, 0.1, momentum, weight_decay, nesterov)
    got_w, got_buf = dev(w.copy()), dev(buf.copy() if momentum else np.zeros(0, dtype))
    gpu.sgd_update(got_w, dev(g), got_buf, 0.1, momentum, weight_decay, nesterov)
    exact = dict(rtol=0, atol=0) if TARGET == "simulator" else tol(dtype)   # a GPU may fuse a*b+c
    np.testing.assert_allclose(host(got_w), want_w, **exact)
    if momentum:
        np.testing.assert_allclose(host(got_buf), want_buf, **exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_adam_update(dtype, weight_decay, decoupled):
    gpu, rng = kernels(), np.random.default_rng(4)
    w, g, m = (rng.standard_normal(37).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(37)).astype(dtype)
    want = [a.copy() for a in (w, m, v)]
    got = [dev(a.copy()) for a in (w, m, v)]
    for step in (1, 2):
        reference.adam_update(want[0], g, want[1], want[2], 1e-3, 0.9, 0.999, 1e-8,
                              weight_decay, decoupled, step)
        gpu.adam_update(got[0], dev(g), got[1], got[2], 1e-3, 0.9, 0.999, 1e-8,
                        weight_decay, decoupled, step)
    exact = dict(rtol=0, atol=0) if TARGET == "simulator" else tol(dtype)
    for a, b in zip(got, want):
        np.testing.assert_allclose(host(a), b, **exact)


def test_optimizer_kernels_reject_bad_state():
    gpu = kernels()
    w = dev(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="momentum_buf: expected shape"):
        gpu.sgd_update(w, dev(np.zeros(4, np.float32)), w[:0], 0.1, 0.9, 0.0, False)
    with pytest.raises(TypeError, match=r"grad: expected dtype float32 \(the dtype of param\)"):
        gpu.sgd_update(w, dev(np.zeros(4, np.float64)), w[:0], 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="m: expected shape"):
        gpu.adam_update(w, dev(np.zeros(4, np.float32)), dev(np.zeros(3, np.float32)),
                        dev(np.zeros(4, np.float32)), 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 1)
    with pytest.raises(ValueError, match="step: expected an int >= 1"):
        gpu.adam_update(w, w.copy(), w.copy(), w.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 0)


# ---- bad input: the same errors as the other backends ----------------------------------------

def test_bad_inputs_get_the_reference_errors():
    """Every backend-parametrized test of test_kernels_errors, run on the gpu backend. Those
    tests build NumPy arrays, so even the checks that read indptr's ends apply (on CuPy arrays
    they are skipped: see kernels/cpu/checks.py)."""
    import test_kernels_errors as errors
    gpu = kernels()
    ran = 0
    for name, test in inspect.getmembers(errors, inspect.isfunction):
        if name.startswith("test_") and list(inspect.signature(test).parameters) == ["backend"]:
            test(gpu)
            ran += 1
    assert ran >= 8


# ---- fused steps of a layer (the cpu backend's on main) -------------------------------------

@GSET
@given(shape=shapes, density=densities, k=ks, dtype=dtypes, seed=seeds)
def test_fused_layer_kernels(shape, density, k, dtype, seed):
    """csr_spmm with bias and ReLU, both gradients from the CSC pattern, ReLU's backward."""
    gpu, rng = kernels(), np.random.default_rng(seed)
    indptr, indices, values, W = random_csr(rng, *shape, density, dtype)
    X, G = ints(rng, (shape[1], k), dtype), ints(rng, (shape[0], k), dtype)
    bias = ints(rng, shape[0], dtype)
    ip, ix, v = dev(indptr), dev(indices), dev(values)
    for strategy in ("thread_per_row", "warp_per_row"):
        out = gpu.csr_spmm_with(strategy, ip, ix, v, dev(X), empty_like_out((shape[0], k), dtype),
                                bias=dev(bias), relu=True)
        want = W @ X + bias[:, None]
        assert_exact(out, want * (want > 0))
    colptr, rowind, perm = gpu.csr_to_csc(ip, ix, shape[1])
    gx, gv = gpu.csr_spmm_t_sddmm(colptr, rowind, perm, v, dev(G), dev(X),
                                  empty_like_out((shape[1], k), dtype),
                                  empty_like_out(indices.shape[0], dtype))
    assert_exact(gx, W.T @ G)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    assert_exact(gv, (G @ X.T)[rows, indices])
    act = ints(rng, (shape[0], k), dtype)
    sums = dev(np.full(shape[0], np.nan, dtype))
    out = gpu.relu_backward(dev(G), dev(act), empty_like_out((shape[0], k), dtype), sums)
    assert_exact(out, G * (act > 0))
    assert_exact(sums, (G * (act > 0)).sum(axis=1))
