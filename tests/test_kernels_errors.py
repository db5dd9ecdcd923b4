"""Bad inputs: both backends reject them with errors that name the argument."""

import numpy as np
import pytest

from sparsenet.kernels import check_bsr, check_csr, check_nm, cpu, reference

backends = pytest.mark.parametrize("backend", [reference, cpu], ids=["reference", "cpu"])


def small_csr(dtype=np.float32):
    W = np.array([[1, 0, 2], [0, 0, 3]], dtype=dtype)
    return reference.csr_from_dense(W)


@backends
def test_dtype_mismatch_between_values_and_X_is_a_type_error(backend):
    indptr, indices, values = small_csr(np.float32)
    X = np.ones((3, 2), np.float64)  # float64 array, even with float32-representable values
    with pytest.raises(TypeError, match=r"X: expected dtype float32 \(the dtype of values\), got float64"):
        backend.csr_spmm(indptr, indices, values, X, np.empty((2, 2), np.float32))


@backends
def test_index_dtypes_are_not_coerced(backend):
    indptr, indices, values = small_csr()
    X = np.ones((3, 2), np.float32)
    with pytest.raises(TypeError, match="indptr: expected dtype int64"):
        backend.csr_spmm(indptr.astype(np.int32), indices, values, X, np.empty((2, 2), np.float32))
    with pytest.raises(TypeError, match="indices: expected dtype int32"):
        backend.csr_spmm(indptr, indices.astype(np.int64), values, X, np.empty((2, 2), np.float32))


@backends
def test_integer_values_are_rejected(backend):
    indptr, indices, values = small_csr()
    with pytest.raises(TypeError, match="values: expected dtype float32 or float64"):
        backend.csr_spmm(indptr, indices, values.astype(np.int64), np.ones((3, 2), np.int64),
                         np.empty((2, 2), np.int64))


@backends
def test_wrong_shapes_name_both_shapes(backend):
    indptr, indices, values = small_csr()
    A = np.ones((2, 4), np.float32)
    B = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"B: expected shape \(n_cols, 4\).*\(2, 4\), got \(3, 5\)"):
        backend.csr_sddmm(indptr, indices, A, B, np.empty(3, np.float32))
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 2\).*\(3, 2\).*got \(2, 3\)"):
        backend.csr_spmm(indptr, indices, values, np.ones((3, 2), np.float32), np.empty((2, 3), np.float32))


@backends
def test_bad_out(backend):
    indptr, indices, values = small_csr()
    X = np.ones((3, 2), np.float32)
    with pytest.raises(TypeError, match="out: expected dtype float32, got float64"):
        backend.csr_spmm(indptr, indices, values, X, np.empty((2, 2), np.float64))
    with pytest.raises(TypeError, match="out: expected a numpy.ndarray"):
        backend.csr_spmm(indptr, indices, values, X, [[0.0, 0.0], [0.0, 0.0]])
    readonly = np.empty((2, 2), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writeable array"):
        backend.csr_spmm(indptr, indices, values, X, readonly)
    square = np.ones((3, 3), np.float32)
    ip, ix, v = reference.csr_from_dense(square)
    with pytest.raises(ValueError, match="out: must not overlap the input X"):
        backend.csr_spmm(ip, ix, v, square, square)


@backends
def test_inconsistent_csr_pattern(backend):
    indptr, indices, values = small_csr()
    with pytest.raises(ValueError, match="indptr"):
        backend.csr_spmm(np.array([0, 1, 5], np.int64), indices, values, np.ones((3, 1), np.float32),
                         np.empty((2, 1), np.float32))
    with pytest.raises(ValueError, match="values: expected shape"):
        backend.csr_spmm(indptr, indices, values[:2], np.ones((3, 1), np.float32), np.empty((2, 1), np.float32))


@backends
def test_transposed_product_checks_perm(backend):
    indptr, indices, values = small_csr()
    colptr, rowind, perm = reference.csr_to_csc(indptr, indices, 3)
    with pytest.raises(ValueError, match="perm: expected shape"):
        backend.csr_spmm_t(colptr, rowind, perm[:1], values, np.ones((2, 2), np.float32),
                           np.empty((3, 2), np.float32))


@backends
def test_bsr_nm_and_conv_shape_errors(backend):
    blocks = np.ones((1, 2, 2), np.float32)
    indptr, indices = np.array([0, 1], np.int64), np.array([0], np.int32)
    with pytest.raises(ValueError, match="X: expected shape\\[0\\] to be a multiple of the block size = 2"):
        backend.bsr_spmm(indptr, indices, blocks, np.ones((3, 1), np.float32), np.empty((2, 1), np.float32))
    with pytest.raises(ValueError, match="blocks: expected shape"):
        backend.bsr_spmm(indptr, indices, np.ones((1, 2, 3), np.float32), np.ones((2, 1), np.float32),
                         np.empty((2, 1), np.float32))
    values, idx = np.ones((1, 2, 2), np.float32), np.array([[[0, 1], [1, 3]]], np.uint8)
    with pytest.raises(ValueError, match=r"X: expected shape \(8, 1\)"):
        backend.nm_spmm(values, idx, 4, np.ones((6, 1), np.float32), np.empty((1, 1), np.float32))
    with pytest.raises(TypeError, match="idx: expected dtype uint8"):
        backend.nm_spmm(values, idx.astype(np.int32), 4, np.ones((8, 1), np.float32), np.empty((1, 1), np.float32))
    with pytest.raises(ValueError, match="dense: expected n_cols to be a multiple of M = 4"):
        backend.nm_from_dense(np.ones((2, 6)), 2, 4)
    with pytest.raises(ValueError, match="kh, kw"):
        backend.im2col(np.ones((1, 1, 2, 2)), 5, 5, 1, 0, np.empty((1, 25, 1)))
    with pytest.raises(TypeError, match="k: expected an int"):
        backend.topk_flat(np.ones(3), 1.5)


def test_structural_checks():
    indptr, indices, values = small_csr()
    check_csr(indptr, indices, 3)
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, n_cols = 2\)"):
        check_csr(indptr, indices, 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        check_csr(np.array([0, 2, 1, 3], np.int64), indices, 3)
    check_bsr(indptr, indices, np.ones((3, 2, 2)), 3)
    idx = np.array([[[1, 1]]], np.uint8)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_nm(np.ones((1, 1, 2)), idx, 4)
    with pytest.raises(ValueError, match=r"offsets in \[0, M = 4\)"):
        check_nm(np.ones((1, 1, 2)), np.array([[[1, 7]]], np.uint8), 4)


@backends
def test_csr_to_csc_and_to_dense_check_every_index(backend):
    # Not hot paths, so both backends check index contents (the cpu kernels
    # would otherwise write out of bounds).
    indptr, indices, values = small_csr()
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, n_cols = 2\)"):
        backend.csr_to_csc(indptr, indices, 2)
    with pytest.raises(ValueError, match="indices"):
        backend.csr_to_dense(indptr, indices, values, 2, np.empty((2, 2), np.float32))


def test_reference_products_check_index_contents():
    indptr, indices, values = small_csr()
    with pytest.raises(ValueError, match="indices"):
        reference.csr_spmm(indptr, indices, values, np.ones((2, 1), np.float32), np.empty((2, 1), np.float32))
