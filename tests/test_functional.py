"""Neural-network ops: gradient checks, and conv/pool forwards against direct Python loops."""
import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax

from gradcheck import gradcheck
from sparsenet import Tensor
from sparsenet.nn import functional as F


def randn(*shape, seed=0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape))


def away_from_zero(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 1.2, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def distinct(*shape, seed=0):
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.1 - n * 0.05).reshape(shape)


# ----- activations -------------------------------------------------------------------------
def test_relu():
    x = away_from_zero(3, 4)
    np.testing.assert_array_equal(F.relu(Tensor(x)).data, np.maximum(x, 0))
    assert gradcheck(F.relu, [x])
    assert gradcheck(lambda t: t.relu(), [x])


@pytest.mark.parametrize("name, reference", [
    ("tanh", np.tanh), ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
])
def test_smooth_activations(name, reference):
    x = 3 * randn(3, 4)
    np.testing.assert_allclose(getattr(F, name)(Tensor(x)).data, reference(x), rtol=1e-12)
    assert gradcheck(getattr(F, name), [x])
    assert gradcheck(lambda t: getattr(t, name)(), [x])


def test_sigmoid_does_not_overflow():
    with np.errstate(all="raise"):
        out = F.sigmoid(Tensor(np.array([-1000.0, 0.0, 1000.0]))).data
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_log_softmax(axis):
    x = 4 * randn(3, 5)
    np.testing.assert_allclose(F.log_softmax(Tensor(x), axis=axis).data,
                               scipy_log_softmax(x, axis=axis), rtol=1e-12)
    assert gradcheck(lambda t: F.log_softmax(t, axis=axis), [x])


def test_log_softmax_is_stable_for_large_logits():
    out = F.log_softmax(Tensor(np.array([[1000.0, 0.0]]))).data
    np.testing.assert_allclose(out, [[0.0, -1000.0]])


# ----- cross-entropy -----------------------------------------------------------------------
def test_cross_entropy_forward():
    logits, labels = 3 * randn(6, 4), np.array([0, 3, 1, 1, 2, 0])
    expected = -scipy_log_softmax(logits, axis=1)[np.arange(6), labels].mean()
    np.testing.assert_allclose(F.cross_entropy(Tensor(logits), labels).item(), expected, rtol=1e-12)
    # labels may also come as an integer Tensor
    np.testing.assert_allclose(F.cross_entropy(Tensor(logits), Tensor(labels)).item(), expected,
                               rtol=1e-12)


def test_cross_entropy_gradient():
    labels = np.array([0, 3, 1, 1, 2, 3])
    assert gradcheck(lambda t: F.cross_entropy(t, labels), [3 * randn(6, 4)])


@pytest.mark.parametrize("labels, error, words", [
    (np.array([0, 1, 4]), ValueError, "[0, 4)"),
    (np.array([0, -1, 2]), ValueError, "[0, 4)"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integers"),
    (np.array([0, 1]), ValueError, "shape"),
    (np.array([[0], [1], [2]]), ValueError, "shape"),
], ids=["too large", "negative", "float", "too short", "2-D"])
def test_cross_entropy_bad_labels(labels, error, words):
    with pytest.raises(error) as info:
        F.cross_entropy(Tensor(randn(3, 4)), labels)
    assert words in str(info.value)


def test_cross_entropy_needs_2d_logits():
    with pytest.raises(ValueError, match="batch, classes"):
        F.cross_entropy(Tensor(randn(3)), np.array([0, 1, 2]))


# ----- dropout -----------------------------------------------------------------------------
def test_dropout_gradient_is_the_mask_scaling():
    x, p = randn(4, 5), 0.3
    keep = np.random.default_rng(7).random(x.shape) >= p         # the mask dropout will draw
    t = Tensor(x, requires_grad=True)
    out = F.dropout(t, p, rng=np.random.default_rng(7))
    np.testing.assert_allclose(out.data, x * keep / (1 - p))
    out.backward(np.ones_like(x))
    np.testing.assert_allclose(t.grad, keep / (1 - p))
    assert gradcheck(lambda t: F.dropout(t, p, rng=np.random.default_rng(7)), [x])


def test_dropout_off_in_eval_and_for_p_zero():
    x = Tensor(randn(3, 3))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_dropout_uses_the_library_generator():
    import sparsenet
    x = Tensor(np.ones((50, 50)))
    sparsenet.manual_seed(3)
    first = F.dropout(x, 0.5).data
    sparsenet.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, first)
    assert 0.4 < (first == 0).mean() < 0.6


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_p_outside_range(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.dropout(Tensor(randn(3)), p)


# ----- linear, flatten ---------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(5, 4), (2, 3, 4), (4,)], ids=["2-D", "3-D", "1-D"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(x_shape, bias):
    x, w, b = randn(*x_shape), randn(3, 4, seed=1), randn(3, seed=2)
    args = [x, w, b] if bias else [x, w]
    expected = x @ w.T + (b if bias else 0)
    np.testing.assert_allclose(F.linear(*[Tensor(a) for a in args]).data, expected, rtol=1e-12)
    assert gradcheck(F.linear, args)


def test_linear_errors():
    with pytest.raises(ValueError, match="does not match"):
        F.linear(Tensor(randn(2, 5)), Tensor(randn(3, 4)))
    with pytest.raises(TypeError, match="dtype"):
        F.linear(Tensor(randn(2, 4).astype(np.float32)), Tensor(randn(3, 4)))


@pytest.mark.parametrize("start_dim", [1, 2, 0])
def test_flatten(start_dim):
    x = randn(2, 3, 2, 2)
    assert F.flatten(Tensor(x), start_dim).shape == x.reshape(*x.shape[:start_dim], -1).shape
    assert gradcheck(lambda t: F.flatten(t, start_dim), [x])


# ----- convolution and pooling against loops -----------------------------------------------
def conv2d_loops(x, w, b, stride, padding):
    """Cross-correlation written out index by index: the definition, nothing clever."""
    (sh, sw), (ph, pw) = stride, padding
    batch, channels, height, width = x.shape
    out_ch, _, kh, kw = w.shape
    padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw))
    padded[:, :, ph:ph + height, pw:pw + width] = x
    h_out, w_out = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    y = np.zeros((batch, out_ch, h_out, w_out))
    for n in range(batch):
        for o in range(out_ch):
            for i in range(h_out):
                for j in range(w_out):
                    total = 0.0 if b is None else b[o]
                    for c in range(channels):
                        for u in range(kh):
                            for v in range(kw):
                                total += w[o, c, u, v] * padded[n, c, i * sh + u, j * sw + v]
                    y[n, o, i, j] = total
    return y


def max_pool2d_loops(x, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    batch, channels, height, width = x.shape
    h_out, w_out = (height - kh) // sh + 1, (width - kw) // sw + 1
    y = np.zeros((batch, channels, h_out, w_out))
    for n in range(batch):
        for c in range(channels):
            for i in range(h_out):
                for j in range(w_out):
                    y[n, c, i, j] = max(x[n, c, i * sh + u, j * sw + v]
                                        for u in range(kh) for v in range(kw))
    return y


CONV_CASES = [  # kernel, stride, padding, bias
    ((3, 3), 1, 0, True), ((3, 3), 1, 1, False), ((3, 3), 2, 0, False), ((3, 3), 2, 1, True),
    ((2, 3), 1, 1, True), ((3, 2), 2, 1, False), ((1, 1), 1, 0, True),
    ((2, 3), (2, 1), (1, 0), True),
]


@pytest.mark.parametrize("kernel, stride, padding, bias", CONV_CASES)
def test_conv2d(kernel, stride, padding, bias):
    x, w, b = randn(2, 2, 5, 6), randn(3, 2, *kernel, seed=1), randn(3, seed=2)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    expected = conv2d_loops(x, w, b if bias else None, pair(stride), pair(padding))
    args = [x, w, b] if bias else [x, w]

    def conv(x, w, b=None):
        return F.conv2d(x, w, b, stride=stride, padding=padding)
    np.testing.assert_allclose(conv(*[Tensor(a) for a in args]).data, expected, rtol=1e-10,
                               atol=1e-12)
    assert gradcheck(conv, args)


def test_conv2d_errors():
    with pytest.raises(ValueError, match="do not match"):
        F.conv2d(Tensor(randn(1, 3, 5, 5)), Tensor(randn(2, 2, 3, 3)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d(Tensor(randn(1, 1, 2, 2)), Tensor(randn(1, 1, 3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(Tensor(randn(1, 1, 4, 4).astype(np.float32)), Tensor(randn(1, 1, 3, 3)))
    with pytest.raises(TypeError, match="stride"):
        F.conv2d(Tensor(randn(1, 1, 4, 4)), Tensor(randn(1, 1, 3, 3)), stride=1.5)


POOL_CASES = [  # input (H, W), kernel, stride
    ((4, 6), 2, None), ((5, 5), 2, None), ((5, 7), 3, 2), ((4, 6), (2, 3), (1, 2)), ((6, 6), 3, 1),
]


@pytest.mark.parametrize("size, kernel, stride", POOL_CASES)
def test_max_pool2d(size, kernel, stride):
    x = distinct(2, 2, *size)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    expected = max_pool2d_loops(x, pair(kernel), pair(stride if stride is not None else kernel))
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), kernel, stride).data, expected)
    assert gradcheck(lambda t: F.max_pool2d(t, kernel, stride), [x])


def test_max_pool2d_overlapping_windows_add_gradients():
    # the centre is the maximum of all four overlapping 2x2 windows of this 3x3 input
    x = Tensor(np.array([[[[0.0, 1.0, 0.0], [1.0, 9.0, 1.0], [0.0, 1.0, 0.0]]]]),
               requires_grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    assert x.grad[0, 0, 1, 1] == 4.0 and x.grad.sum() == 4.0


def test_max_pool2d_needs_4d_input():
    with pytest.raises(ValueError, match="batch, C, H, W"):
        F.max_pool2d(Tensor(randn(3, 4, 4)))


def test_small_convnet_end_to_end():
    """conv -> relu -> pool -> flatten -> linear -> cross-entropy, checked as one function."""
    labels = np.array([1, 0])

    def net(x, w1, w2):
        h = F.max_pool2d(F.relu(F.conv2d(x, w1, padding=1)), 2)
        return F.cross_entropy(F.linear(F.flatten(h), w2), labels)
    assert gradcheck(net, [randn(2, 1, 4, 4), randn(2, 1, 3, 3, seed=1), randn(2, 8, seed=2)])
