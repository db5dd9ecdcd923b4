"""The Tensor and its autograd: dtypes, graph walking, accumulation, no_grad, detach, errors."""
import numpy as np
import pytest

import sparsenet as sn
from gradcheck import gradcheck
from sparsenet import Function, Tensor


# ----- construction and dtypes -------------------------------------------------------------
def test_float32_is_the_default_dtype():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(3.0).dtype == np.float32
    assert sn.zeros(2, 3).dtype == np.float32 and sn.ones(4).dtype == np.float32


def test_arrays_keep_their_dtype():
    assert Tensor(np.array([1.0, 2.0])).dtype == np.float64
    assert Tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert Tensor([1, 2, 3]).dtype.kind == "i"                    # labels stay integers


def test_no_silent_conversion_of_arrays():
    with pytest.raises(TypeError, match="astype"):
        Tensor(np.array([1.0, 2.0]), dtype=np.float32)
    with pytest.raises(TypeError, match="Tensor"):
        Tensor(Tensor([1.0]))
    with pytest.raises(TypeError, match="numeric"):
        Tensor(["a", "b"])


def test_requires_grad_on_integer_data_raises():
    with pytest.raises(TypeError, match="float32 or float64"):
        Tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError, match="float32 or float64"):
        Tensor(np.arange(3), requires_grad=True)


@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
    lambda a, b: a @ b, lambda a, b: a ** b,
], ids=["add", "sub", "mul", "div", "matmul", "pow"])
def test_mixing_float32_and_float64_raises(op):
    a32, b64 = Tensor(np.ones((2, 2), dtype=np.float32)), Tensor(np.ones((2, 2)))
    with pytest.raises(TypeError, match="float32 and float64"):
        op(a32, b64)
    with pytest.raises(TypeError, match="float64 and float32"):
        op(b64, a32)


def test_basic_facts():
    t = Tensor(np.zeros((2, 3)))
    assert (t.shape, t.ndim, t.size, len(t), t.device, t.is_leaf) == ((2, 3), 2, 6, 2, "cpu", True)
    assert isinstance(t.numpy(), np.ndarray)
    assert Tensor(np.array(2.5)).item() == 2.5


# ----- the graph ---------------------------------------------------------------------------
def test_graph_records_the_function_and_parents():
    x = Tensor(np.ones(3), requires_grad=True)
    y = x * 2.0
    assert not y.is_leaf and y.requires_grad and type(y._ctx).__name__ == "Mul"
    assert y._ctx.parents[0] is x


def test_a_function_of_your_own():
    class Square(Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, g):
            return (2 * self.a * g,)

    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    Square.apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0, 6.0])
    assert gradcheck(Square.apply, [np.array([0.3, -1.2])])


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, g):
            return (self.a * g,)                     # forgot the factor 2

    with pytest.raises(AssertionError, match="gradient of input 0"):
        gradcheck(WrongSquare.apply, [np.array([0.3, -1.2])])


def test_function_apply_rejects_non_tensors():
    with pytest.raises(TypeError, match="expects Tensor inputs"):
        sn.ops.Exp.apply(np.ones(3))


def test_deep_chain_backpropagates_without_recursion_error():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    for i in range(10_000):                       # 10,000 ops deep, alternating two kinds
        y = y * 1.0001 if i % 2 == 0 else y + 0.5
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001 ** 5000), rtol=1e-10)


def test_reused_non_leaf_gets_every_contribution():
    def f(x):
        y = x * x
        return y + y * y + y[0]
    x = np.array([0.5, -1.5, 2.0])
    t = Tensor(x.copy(), requires_grad=True)
    f(t).sum().backward()
    y = x * x
    dloss_dy = 1 + 2 * y + np.array([len(x), 0, 0])     # y[0] is broadcast to every element
    np.testing.assert_allclose(t.grad, dloss_dy * 2 * x)
    assert gradcheck(f, [x])


def test_same_input_on_both_sides():
    x = Tensor(np.array([3.0]), requires_grad=True)
    (x * x + x / x).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0])


def test_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0 + 2.0, 3.0 + 4.0])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_grad_is_not_aliased_to_the_incoming_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    g = np.ones(2)
    x.backward(g)
    x.grad += 1
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_only_tensors_requiring_grad_get_a_gradient():
    x, c = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2))
    (x * c).sum().backward()
    assert x.grad is not None and c.grad is None


def test_backward_with_an_explicit_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).backward(Tensor(np.array([1.0, 10.0])))
    np.testing.assert_allclose(x.grad, [2.0, 40.0])


def test_backward_on_non_scalar_without_grad_raises():
    y = Tensor(np.ones(3), requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(4))


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor(np.ones(3)) * 2.0).sum().backward()


# ----- no_grad and detach ------------------------------------------------------------------
def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with sn.no_grad():
        assert not sn.is_grad_enabled()
        y = (x * 2.0).sum()
    assert sn.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_restores_the_state_after_an_error():
    with pytest.raises(ZeroDivisionError):
        with sn.no_grad():
            1 / 0
    assert sn.is_grad_enabled()
    with sn.no_grad():
        with sn.no_grad():
            pass
        assert not sn.is_grad_enabled()               # the inner block restored "off"
    assert sn.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * 2.0).detach()
    assert y.is_leaf and not y.requires_grad
    (y * x).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])        # y treated as a constant 2x


def test_to_cpu_is_the_same_tensor():
    x = Tensor(np.ones(2))
    assert x.to("cpu") is x
    with pytest.raises(ValueError, match="cpu"):
        x.to("tpu")
