"""The sparse types CSR, Block, NM and Masked: products against dense NumPy, round trips,
conversions, scipy interop, and the rejection of malformed input."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsenet.sparse import CSR, NM, Block, Masked

SETTINGS = settings(max_examples=25, derandomize=True, deadline=None)
TOL = {np.float32: 1e-4, np.float64: 1e-10}


def random_case(data, fmt):
    """(dense, mask, options) with a pattern that fits `fmt`: empty rows, nnz = 0, 1 x n, n x 1."""
    seed = data.draw(st.integers(0, 2 ** 16), label="seed")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    rng = np.random.default_rng(seed)
    options = {}
    if fmt == "block":
        bs = data.draw(st.integers(1, 3), label="bs")
        shape = (bs * data.draw(st.integers(1, 4)), bs * data.draw(st.integers(1, 4)))
        grid = rng.random((shape[0] // bs, shape[1] // bs)) < data.draw(st.floats(0, 1))
        mask = np.kron(grid, np.ones((bs, bs), dtype=bool))
        options["block_size"] = bs
    elif fmt == "nm":
        m = data.draw(st.integers(2, 5), label="m")
        n = data.draw(st.integers(1, m - 1), label="n")
        shape = (data.draw(st.integers(1, 6)), m * data.draw(st.integers(1, 4)))
        noise = rng.random((shape[0], shape[1] // m, m))
        mask = np.zeros(noise.shape, dtype=bool)
        np.put_along_axis(mask, np.argsort(noise, axis=-1)[..., :n], True, axis=-1)
        mask = mask.reshape(shape)
        options.update(n=n, m=m)
    else:
        shape = (data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7)))
        mask = rng.random(shape) < data.draw(st.floats(0, 1), label="density")
        mask[rng.integers(shape[0])] = False                       # at least one empty row
    dense = rng.standard_normal(shape).astype(dtype)
    return dense, mask, options


FORMATS = {"csr": CSR, "block": Block, "nm": NM, "masked": Masked}


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(data=st.data())
def test_products_match_dense(fmt, data):
    dense, mask, options = random_case(data, fmt)
    W = FORMATS[fmt].from_dense(dense, mask=mask, **options)
    D = np.where(mask, dense, 0)
    k = data.draw(st.integers(1, 4), label="k")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((D.shape[1], k)).astype(dense.dtype)
    G = rng.standard_normal((D.shape[0], k)).astype(dense.dtype)
    tol = TOL[dense.dtype.type]
    np.testing.assert_array_equal(W.to_dense(), D)
    np.testing.assert_array_equal(W.mask(), mask)
    assert W.nnz == mask.sum() and W.density == pytest.approx(mask.mean())
    np.testing.assert_allclose(W.spmm(X), D @ X, atol=tol)
    np.testing.assert_allclose(W.spmm_t(G), D.T @ G, atol=tol)
    np.testing.assert_allclose(W @ X, D @ X, atol=tol)
    np.testing.assert_allclose(W @ X[:, 0], D @ X[:, 0], atol=tol)
    rows, cols = W.coords()
    expected = (G @ X.T)[rows, cols] * mask[rows, cols]
    np.testing.assert_allclose(W.sddmm(G, X), expected, atol=tol)
    np.testing.assert_array_equal(D[rows, cols], W.values)          # coords align with values


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(data=st.data())
def test_round_trips_through_dense_and_scipy(fmt, data):
    dense, mask, options = random_case(data, fmt)
    cls = FORMATS[fmt]
    W = cls.from_dense(dense, mask=mask, **options)
    again = cls.from_dense(W.to_dense(), mask=W.mask(), **options)
    np.testing.assert_array_equal(again.values, W.values)
    sp = W.to_scipy()
    assert isinstance(sp, scipy.sparse.bsr_array if fmt == "block" else scipy.sparse.csr_array)
    back = cls.from_scipy(sp, **options)
    np.testing.assert_array_equal(back.to_dense(), W.to_dense())
    np.testing.assert_array_equal(back.mask(), W.mask())            # stored zeros stay stored


def fits_all_formats(rng, dtype=np.float64):
    """A 4 x 8 pattern of 2x2 blocks with exactly 2 of every 4 columns: fits every format."""
    grid = np.zeros((2, 4), dtype=bool)
    grid[np.arange(2)[:, None], np.array([[0, 2], [1, 3]])] = True   # one of 2 blocks per group
    mask = np.kron(grid, np.ones((2, 2), dtype=bool))
    dense = rng.standard_normal(mask.shape).astype(dtype)
    dense[0, 0] = 0.0                                                # an explicitly stored zero
    return dense, mask


def build(fmt, dense, mask):
    options = {"block": {"block_size": 2}, "nm": {"n": 2, "m": 4}}.get(fmt, {})
    return FORMATS[fmt].from_dense(dense, mask=mask, **options)


@pytest.mark.parametrize("src", list(FORMATS))
@pytest.mark.parametrize("dst", list(FORMATS))
def test_every_conversion_pair(src, dst, rng):
    dense, mask = fits_all_formats(rng)
    W = build(src, dense, mask)
    converted = {"csr": lambda: W.to_csr(), "block": lambda: W.to_block(2),
                 "nm": lambda: W.to_nm(2, 4), "masked": lambda: W.to_masked()}[dst]()
    assert isinstance(converted, FORMATS[dst])
    np.testing.assert_array_equal(converted.to_dense(), np.where(mask, dense, 0))
    np.testing.assert_array_equal(converted.mask(), mask)


def test_conversions_that_do_not_fit_say_why(rng):
    dense = rng.standard_normal((4, 8))
    W = CSR.from_dense(dense, mask=np.eye(4, 8, dtype=bool))
    with pytest.raises(ValueError, match="does not fit 2x2 blocks"):
        W.to_block(2)
    with pytest.raises(ValueError, match="does not fit 2:4"):
        W.to_nm(2, 4)
    with pytest.raises(ValueError, match="block_size 3 must divide"):
        W.to_block(3)


def test_from_dense_with_density_keeps_the_largest_units(rng):
    dense = rng.standard_normal((8, 8))
    W = CSR.from_dense(dense, density=0.25)
    assert W.nnz == 16
    assert np.abs(W.values).min() >= np.sort(np.abs(dense).ravel())[-16]
    np.testing.assert_array_equal(Masked.from_dense(dense, density=0.25).mask(), W.mask())
    F = CSR.from_dense(dense, density=0.25, constant_fan_in=True)
    assert (F.row_lengths() == 2).all()
    B = Block.from_dense(dense, density=0.5, block_size=4)
    norms = np.sqrt((dense.reshape(2, 4, 2, 4) ** 2).sum(axis=(1, 3)))     # (block rows, cols)
    rows, cols = B.unit_coords()
    assert set(zip(rows, cols)) == {divmod(int(i), 2) for i in np.argsort(-norms.ravel())[:2]}
    np.testing.assert_allclose(B.unit_scores(B.values), norms[rows, cols])
    assert B.n_units == 2 and B.nnz == 32
    N = NM.from_dense(dense, n=1, m=4)
    groups = np.abs(dense).reshape(8, 2, 4)
    np.testing.assert_array_equal(np.abs(N.values), groups.max(axis=-1).ravel())


def test_nbytes_counts_values_indices_and_the_cached_transpose(rng):
    W = CSR.from_dense(rng.standard_normal((6, 5)), density=0.5)
    plain = W.values.nbytes + W.indptr.nbytes + W.indices.nbytes
    assert W.nbytes == plain
    W.spmm_t(np.ones((6, 1)))
    assert W.nbytes > plain
    B = Block.from_dense(rng.standard_normal((4, 4)), density=0.5, block_size=2)
    assert B.nbytes == B.values.nbytes + B.indptr.nbytes + B.indices.nbytes
    N = NM.from_dense(rng.standard_normal((4, 8)), n=2, m=4)
    assert N.nbytes == N.values.nbytes + N.idx.nbytes == 16 * 8 + 16
    M = Masked.from_dense(rng.standard_normal((4, 4)), density=0.5)
    assert M.nbytes == 16 * 8 + 16


def test_transposed_index_is_built_once(rng):
    W = CSR.from_dense(rng.standard_normal((6, 5)), density=0.5)
    W.spmm_t(np.ones((6, 2)))
    first = W.transposed_index()
    W.spmm_t(np.ones((6, 2)))
    assert W.transposed_index() is first


def test_matmul_checks_dtype_and_shape(rng):
    W = CSR.from_dense(rng.standard_normal((3, 4)), density=0.5)
    with pytest.raises(TypeError, match="dtype"):
        W @ np.ones((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="4 rows"):
        W @ np.ones((3, 2))


# ----- malformed input --------------------------------------------------------------------
VALUES = np.ones(3)


@pytest.mark.parametrize("indptr, indices, match", [
    ([0, 2, 3], [1, 1, 0], "duplicate"),
    ([0, 2, 3], [2, 1, 0], "sorted"),
    ([0, 2, 3], [0, 4, 0], r"lie in \[0, 4\)"),
    ([0, 2, 3], [0, -1, 0], r"lie in \[0, 4\)"),
    ([0, 3], [0, 1, 2], "n_rows \\+ 1"),
    ([1, 2, 3], [0, 1, 2], "start at 0"),
    ([0, 2, 2], [0, 1, 2], "end at"),
    ([0, 3, 2, 3], [0, 1, 2], "non-decreasing"),
])
def test_csr_rejects_bad_indices(indptr, indices, match):
    n_rows = len(indptr) - 1 if len(indptr) != 2 else 2
    with pytest.raises(ValueError, match=match):
        CSR(np.array(indptr), np.array(indices), VALUES, (n_rows, 4))


def test_csr_rejects_bad_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        CSR(np.array([0, 1]), np.array([0]), np.array([1]), (1, 2))
    with pytest.raises(TypeError, match="float32 or float64"):
        CSR(np.array([0, 1]), np.array([0]), np.ones(1, np.float16), (1, 2))
    with pytest.raises(TypeError, match="indices must be an integer"):
        CSR(np.array([0, 1]), np.array([0.0]), np.ones(1), (1, 2))
    with pytest.raises(ValueError, match="values must have shape"):
        CSR(np.array([0, 1]), np.array([0]), np.ones(2), (1, 2))
    with pytest.raises(ValueError, match="shape must be"):
        CSR(np.array([0, 1]), np.array([0]), np.ones(1), (0, 2))


def test_block_rejects_bad_input():
    with pytest.raises(ValueError, match="block_size 3 must divide"):
        Block(np.array([0, 0, 0]), np.zeros(0, np.int32), np.zeros(0), (6, 4), 3)
    with pytest.raises(ValueError, match="duplicate"):
        Block(np.array([0, 2]), np.array([1, 1]), np.zeros(8), (2, 4), 2)
    with pytest.raises(ValueError, match="values must have shape"):
        Block(np.array([0, 1]), np.array([1]), np.zeros(3), (2, 4), 2)
    with pytest.raises(ValueError, match="not block-structured"):
        Block.from_dense(np.ones((4, 4)), mask=np.eye(4, dtype=bool), block_size=2)


def test_nm_rejects_bad_input():
    idx = np.array([[[0, 2]]], dtype=np.uint8)
    with pytest.raises(ValueError, match="1 <= n < m"):
        NM(np.ones(2), idx, 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        NM(np.ones(2), idx[..., ::-1].copy(), 4)
    with pytest.raises(ValueError, match="strictly increasing"):
        NM(np.ones(2), np.array([[[1, 1]]]), 4)
    with pytest.raises(ValueError, match=r"lie in \[0, m\)"):
        NM(np.ones(2), np.array([[[0, 4]]]), 4)
    with pytest.raises(ValueError, match="multiple of m"):
        NM.from_dense(np.ones((2, 6)), n=2, m=4)
    with pytest.raises(ValueError, match="does not fit 2:4"):
        NM.from_dense(np.ones((1, 4)), mask=np.array([[True, True, True, False]]), n=2, m=4)
    with pytest.raises(ValueError, match="does not match"):
        NM.from_dense(np.ones((1, 4)), density=0.25, n=2, m=4)


def test_masked_and_from_dense_reject_bad_input():
    with pytest.raises(ValueError, match="exactly 0"):
        Masked(np.ones(4), np.array([[True, False], [True, True]]))
    with pytest.raises(TypeError, match="boolean"):
        Masked(np.ones(4), np.ones((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="same number"):
        CSR.from_dense(np.ones((2, 2)), mask=np.array([[True, True], [True, False]]),
                       constant_fan_in=True)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        CSR.from_dense(np.ones((2, 2)), density=1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        Masked.from_dense(np.ones((2, 2)), density=0)
    with pytest.raises(ValueError, match="not both"):
        CSR.from_dense(np.ones((2, 2)), density=0.5, mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="NaN"):
        CSR.from_dense(np.array([[np.nan, 1.0]]))
    with pytest.raises(TypeError, match="float32 or float64"):
        CSR.from_dense(np.ones((2, 2), dtype=np.int64))


def test_constructors_do_not_touch_their_inputs():
    indptr, indices = np.array([0, 2, 3], np.int64), np.array([2, 1, 0], np.int32)
    before = indptr.copy(), indices.copy()
    with pytest.raises(ValueError):
        CSR(indptr, indices, VALUES, (2, 4))
    np.testing.assert_array_equal(indptr, before[0])
    np.testing.assert_array_equal(indices, before[1])


def test_validation_of_a_large_pattern():
    """4M nonzeros validate (vectorized checks; timing belongs in benchmarks, not here)."""
    n_rows, per_row = 4096, 1024
    indptr = np.arange(0, n_rows * per_row + 1, per_row, dtype=np.int64)
    indices = np.tile(np.arange(0, 4 * per_row, 4, dtype=np.int32), n_rows)
    w = CSR(indptr, indices, np.zeros(indices.size, np.float32), (n_rows, 4 * per_row))
    assert w.nnz == n_rows * per_row
