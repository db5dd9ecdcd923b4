"""Gradient checks (central differences, float64) for every op in `sparsenet.ops`."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from gradcheck import gradcheck
from sparsenet import Tensor


# Each helper returns a float64 ndarray, also for shape () (NumPy would give a scalar).
def randn(*shape, seed=0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape))


def away_from_zero(*shape, seed=0):
    """Values with |x| in [0.2, 1.2]: no kink of abs/relu within eps."""
    rng = np.random.default_rng(seed)
    return np.asarray(rng.uniform(0.2, 1.2, size=shape) * rng.choice([-1.0, 1.0], size=shape))


def positive(*shape, seed=0):
    return np.asarray(np.random.default_rng(seed).uniform(0.5, 2.0, size=shape))


def distinct(*shape, seed=0):
    """Well-separated distinct values, so that max has no ties."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.1 - n * 0.05).reshape(shape)


# ----- arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
], ids=["add", "sub", "mul", "div"])
def test_binary_arithmetic(op):
    assert gradcheck(op, [randn(3, 4), away_from_zero(3, 4, seed=1)])


@pytest.mark.parametrize("shape_a, shape_b", [
    ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)), ((2, 1, 4), (3, 1)), ((), (2, 3)),
])
@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
], ids=["add", "sub", "mul", "div"])
def test_broadcasting(op, shape_a, shape_b):
    a, b = away_from_zero(*shape_a), away_from_zero(*shape_b, seed=1)
    out = op(Tensor(a), Tensor(b))
    np.testing.assert_allclose(out.data, op(a, b))
    assert gradcheck(op, [a, b])


@pytest.mark.parametrize("op, numpy_op", [
    (lambda s, t: s * t, lambda s, x: s * x), (lambda s, t: t * s, lambda s, x: x * s),
    (lambda s, t: s + t, lambda s, x: s + x), (lambda s, t: s - t, lambda s, x: s - x),
    (lambda s, t: t - s, lambda s, x: x - s), (lambda s, t: s / t, lambda s, x: s / x),
    (lambda s, t: t / s, lambda s, x: x / s),
], ids=["s*t", "t*s", "s+t", "s-t", "t-s", "s/t", "t/s"])
def test_python_scalar_operands(op, numpy_op):
    x = away_from_zero(2, 3)
    out = op(2.5, Tensor(x))
    np.testing.assert_allclose(out.data, numpy_op(2.5, x))
    assert out.dtype == np.float64
    assert gradcheck(lambda t: op(2.5, t), [x])


def test_python_scalar_keeps_float32():
    out = 3.0 * Tensor(np.ones(2, dtype=np.float32))
    assert out.dtype == np.float32


@pytest.mark.parametrize("op, shape_a", [
    (lambda a, t: a + t, (3, 4)), (lambda a, t: a - t, (4,)), (lambda a, t: a * t, (3, 1)),
    (lambda a, t: a / t, (3, 4)), (lambda a, t: a @ t, (2, 3)),
], ids=["add", "sub", "mul", "div", "matmul"])
def test_ndarray_left_operand(op, shape_a):
    """An ndarray on the left defers to the Tensor: the result is a Tensor with a gradient."""
    a, x = randn(*shape_a), away_from_zero(3, 4, seed=1)
    out = op(a, Tensor(x, requires_grad=True))
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, op(a, x))
    assert gradcheck(lambda t: op(a, t), [x])


def test_neg():
    assert gradcheck(lambda a: -a, [randn(3, 2)])


@pytest.mark.parametrize("p", [2, 3, 0.5, -1.5, 0])
def test_pow_constant_exponent(p):
    x = positive(3, 4) if p != int(p) or p < 0 else randn(3, 4)
    np.testing.assert_allclose((Tensor(x) ** p).data, x ** p)
    assert gradcheck(lambda a: a ** p, [x])


def test_pow_tensor_exponent():
    base, exponent = positive(3, 4), randn(3, 4, seed=1)
    np.testing.assert_allclose((Tensor(base) ** Tensor(exponent)).data, base ** exponent)
    assert gradcheck(lambda a, b: a ** b, [base, exponent])
    assert gradcheck(lambda a, b: a ** b, [positive(3, 1), randn(4, seed=2)])   # broadcast


# ----- matmul ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape_a, shape_b", [
    ((3, 4), (4, 5)),           # 2-D
    ((4,), (4, 5)),             # 1-D left
    ((3, 4), (4,)),             # 1-D right
    ((2, 3, 4), (4, 5)),        # batched N-D @ 2-D
    ((2, 2, 3, 4), (4, 2)),     # two batch dimensions
    ((2, 1, 3, 4), (3, 4, 2)),  # batch dimensions broadcast on both sides
    ((3, 4), (2, 4, 5)),        # 2-D @ batched
])
def test_matmul(shape_a, shape_b):
    a, b = randn(*shape_a), randn(*shape_b, seed=1)
    np.testing.assert_allclose((Tensor(a) @ Tensor(b)).data, a @ b)
    assert gradcheck(lambda x, y: x @ y, [a, b])


def test_matmul_dot_product_of_vectors():
    a, b = randn(4), randn(4, seed=1)
    np.testing.assert_allclose((Tensor(a) @ Tensor(b)).data, a @ b)
    assert gradcheck(lambda x, y: x @ y, [a, b])


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as info:
        Tensor(np.ones((3, 4))) @ Tensor(np.ones((5, 2)))
    assert "(3, 4)" in str(info.value) and "(5, 2)" in str(info.value)


def test_matmul_scalar_operand_raises():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        Tensor(np.ones(3)) @ Tensor(np.array(2.0))


# ----- reductions --------------------------------------------------------------------------
AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions(name, axis, keepdims):
    x = distinct(2, 3, 4)
    out = getattr(Tensor(x), name)(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.data, getattr(x, name)(axis=axis, keepdims=keepdims))
    assert gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), [x])


def test_max_shares_gradient_among_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [0.5, 0, 0.5]])


def test_reduction_axis_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        Tensor(np.ones((2, 3))).sum(axis=2)


def test_sum_of_scalar():
    assert gradcheck(lambda t: t.sum() * 3.0, [np.array(1.5)])


# ----- shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 4), (4, -1), (2, 3, 4), (24,)])
def test_reshape(shape):
    x = randn(2, 12)
    assert Tensor(x).reshape(shape).shape == x.reshape(shape).shape
    assert gradcheck(lambda t: t.reshape(*shape), [x])


def test_reshape_impossible_shape():
    with pytest.raises(ValueError) as info:
        Tensor(np.ones((2, 3))).reshape(4, 2)
    assert "(2, 3)" in str(info.value) and "(4, 2)" in str(info.value)


@pytest.mark.parametrize("axes", [None, (2, 0, 1), (0, 2, 1), (1, 2, 0)])
def test_transpose(axes):
    x = randn(2, 3, 4)
    out = Tensor(x).transpose(axes) if axes else Tensor(x).T
    np.testing.assert_array_equal(out.data, x.transpose(axes))
    assert gradcheck(lambda t: t.transpose(axes) if axes else t.T, [x])


def test_transpose_negative_axes():
    x = randn(2, 3, 4)
    np.testing.assert_array_equal(Tensor(x).transpose(-1, 0, 1).data, x.transpose(-1, 0, 1))
    assert gradcheck(lambda t: t.transpose(-1, 0, 1), [x])


def test_transpose_bad_axes():
    with pytest.raises(ValueError, match="permutation"):
        Tensor(np.ones((2, 3, 4))).transpose(0, 0, 1)


@pytest.mark.parametrize("index", [
    (slice(1, 3), slice(None, None, 2)), (Ellipsis, 0), (None, 1), -1, (slice(None), 2),
    (slice(None, None, -1), slice(1, None)),
], ids=["slices", "ellipsis", "newaxis", "negative", "column", "reversed"])
def test_getitem_basic(index):
    x = randn(4, 5)
    np.testing.assert_array_equal(Tensor(x)[index].data, x[index])
    assert gradcheck(lambda t: t[index], [x])


@pytest.mark.parametrize("index", [
    np.array([0, 2, 0, 0, 3]), (np.array([0, 1, 0]), np.array([1, 1, 1])),
    (slice(1, 3), [0, 0, 4]), np.array([[1, 1], [3, 1]]), np.array([True, False, True, True]),
], ids=["repeated rows", "repeated pairs", "slice and list", "2-D index", "boolean"])
def test_getitem_advanced(index):
    x = randn(4, 5)
    np.testing.assert_array_equal(Tensor(x)[index].data, x[index])
    assert gradcheck(lambda t: t[index], [x])


def test_getitem_repeated_indices_add_up():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


def test_getitem_with_tensor_index():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[Tensor(np.array([2, 2]))].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 2, 0])


# ----- elementwise functions ---------------------------------------------------------------
def test_exp():
    assert gradcheck(lambda t: t.exp(), [randn(3, 4)])


def test_log():
    x = positive(3, 4)
    np.testing.assert_allclose(Tensor(x).log().data, np.log(x))
    assert gradcheck(lambda t: t.log(), [x])


def test_abs():
    x = away_from_zero(3, 4)
    np.testing.assert_array_equal(Tensor(x).abs().data, np.abs(x))
    assert gradcheck(lambda t: t.abs(), [x])


def test_composite_expression():
    """Several ops in one graph, with broadcasting and a reused input."""
    def f(x, w, b):
        h = (x @ w + b).tanh()
        return (h * h).sum(axis=1) / (x.abs() + 1.0).mean(axis=1) - h.max(axis=1).exp()
    assert gradcheck(f, [away_from_zero(4, 3), randn(3, 5, seed=1), randn(5, seed=2)])


# ----- astype ------------------------------------------------------------------------------
def test_astype_gradient_comes_back_in_the_input_dtype():
    x = Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * Tensor(np.array([1.0, -2.0, 0.5]))).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.array([1.0, -2.0, 0.5], dtype=np.float32))


def test_astype_gradcheck():
    # through float32 and back: eps large enough to be seen in float32
    assert gradcheck(lambda t: t.astype(np.float32).astype(np.float64) ** 2,
                     [positive(3, 2)], eps=1e-2, atol=1e-3, rtol=1e-3)
    assert gradcheck(lambda t: t.astype(np.float64) * 2.0, [randn(3)])


# ----- property test: any pair of broadcastable shapes -------------------------------------
@settings(max_examples=30, derandomize=True, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
def test_broadcast_gradients_for_any_shapes(shapes):
    a, b = away_from_zero(*shapes.input_shapes[0]), away_from_zero(*shapes.input_shapes[1], seed=1)
    assert gradcheck(lambda x, y: x * y + x / y - y, [a, b])
