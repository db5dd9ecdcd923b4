"""Operations of sequence models: forwards against direct NumPy, gradients by central differences."""
import math

import numpy as np
import pytest
from scipy.special import erf, log_softmax as scipy_log_softmax, softmax as scipy_softmax

from gradcheck import gradcheck
from sparsenet import Tensor
from sparsenet.nn import functional as F


def randn(*shape, seed=0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape))


# ----- embedding ---------------------------------------------------------------------------
def test_embedding_picks_rows_and_adds_gradients_of_repeated_ids():
    weight = randn(5, 3)
    ids = np.array([[0, 4, 4], [2, 0, 1]])
    np.testing.assert_array_equal(F.embedding(ids, Tensor(weight)).data, weight[ids])
    assert gradcheck(lambda w: F.embedding(ids, w), [weight])


@pytest.mark.parametrize("ids, error, words", [
    (np.array([[0, 5]]), ValueError, "[0, 5)"),
    (np.array([[-1, 0]]), ValueError, "[0, 5)"),
    (np.array([[0.0, 1.0]]), TypeError, "integers"),
])
def test_embedding_rejects_ids_outside_the_vocabulary(ids, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace(")", r"\)")):
        F.embedding(ids, Tensor(randn(5, 3)))


# ----- layer norm --------------------------------------------------------------------------
def test_layer_norm_forward_and_gradient():
    x, w, b = 3 * randn(2, 3, 6) + 1, randn(6, seed=1), randn(6, seed=2)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * w + b
    np.testing.assert_allclose(F.layer_norm(Tensor(x), Tensor(w), Tensor(b)).data, expected,
                               rtol=1e-12)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, w, b), [x, w, b])


def test_layer_norm_rejects_a_weight_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        F.layer_norm(Tensor(randn(2, 6)), Tensor(randn(5)), Tensor(randn(6)))


# ----- activations -------------------------------------------------------------------------
def test_gelu_is_close_to_the_exact_gelu_and_has_the_right_gradient():
    x = 3 * randn(4, 5)
    exact = x * 0.5 * (1 + erf(x / math.sqrt(2)))
    np.testing.assert_allclose(F.gelu(Tensor(x)).data, exact, atol=2e-3)   # the tanh form
    assert gradcheck(F.gelu, [x])


def test_softplus_and_normal_cdf():
    x = 4 * randn(3, 4)
    np.testing.assert_allclose(F.softplus(Tensor(x)).data, np.log1p(np.exp(x)), rtol=1e-12)
    np.testing.assert_allclose(F.normal_cdf(Tensor(x)).data, 0.5 * (1 + erf(x / math.sqrt(2))),
                               rtol=1e-12)
    assert gradcheck(F.softplus, [x])
    assert gradcheck(F.normal_cdf, [x])
    with np.errstate(over="raise", invalid="raise"):
        assert F.softplus(Tensor(np.array([1000.0, -1000.0]))).data[0] == 1000.0


# ----- softmax and log-softmax along an axis --------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_softmax_and_log_softmax_along_an_axis(axis):
    x = 3 * randn(2, 3, 4)
    np.testing.assert_allclose(F.softmax(Tensor(x), axis=axis).data,
                               scipy_softmax(x, axis=axis), rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(Tensor(x), axis=axis).data,
                               scipy_log_softmax(x, axis=axis), rtol=1e-12)
    assert gradcheck(lambda t: F.softmax(t, axis=axis), [x])
    assert gradcheck(lambda t: F.log_softmax(t, axis=axis), [x])


def test_softmax_rejects_an_axis_out_of_range():
    with pytest.raises(ValueError, match="axis 3"):
        F.softmax(Tensor(randn(2, 3)), axis=3)


# ----- batched matmul ----------------------------------------------------------------------
@pytest.mark.parametrize("shape_a, shape_b", [
    ((2, 3, 4), (2, 4, 5)),            # one batch axis
    ((2, 2, 3, 4), (2, 2, 4, 3)),      # batch and heads
    ((2, 1, 3, 4), (3, 4, 2)),         # broadcast batch axes: gradients sum back
])
def test_batched_matmul(shape_a, shape_b):
    a, b = randn(*shape_a), randn(*shape_b, seed=1)
    np.testing.assert_allclose(F.batched_matmul(Tensor(a), Tensor(b)).data, a @ b, rtol=1e-12)
    assert gradcheck(F.batched_matmul, [a, b])


def test_batched_matmul_rejects_batch_axes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="do not broadcast"):
        F.batched_matmul(Tensor(randn(2, 3, 4)), Tensor(randn(3, 4, 5)))


# ----- causal attention --------------------------------------------------------------------
def attention_by_loops(q, k, v):
    """Position t averages v[0..t] with weights softmax(q_t · k_s / sqrt(d)), s <= t."""
    out = np.zeros_like(q)
    d = q.shape[-1]
    for index in np.ndindex(q.shape[:-2]):
        for t in range(q.shape[-2]):
            scores = np.array([q[index][t] @ k[index][s] / math.sqrt(d) for s in range(t + 1)])
            weights = np.exp(scores - scores.max())
            out[index][t] = (weights / weights.sum()) @ v[index][:t + 1]
    return out


def test_causal_attention_matches_loops_and_sees_no_future():
    q, k, v = randn(2, 2, 5, 3), randn(2, 2, 5, 3, seed=1), randn(2, 2, 5, 3, seed=2)
    out = F.causal_attention(Tensor(q), Tensor(k), Tensor(v)).data
    np.testing.assert_allclose(out, attention_by_loops(q, k, v), rtol=1e-12)
    k2, v2 = k.copy(), v.copy()
    k2[..., 3:, :] += 5.0                    # change the future of position 2
    v2[..., 3:, :] -= 5.0
    out2 = F.causal_attention(Tensor(q), Tensor(k2), Tensor(v2)).data
    np.testing.assert_array_equal(out2[..., :3, :], out[..., :3, :])


def test_causal_attention_gradient():
    q, k, v = randn(2, 4, 3), randn(2, 4, 3, seed=1), randn(2, 4, 3, seed=2)
    assert gradcheck(F.causal_attention, [q, k, v])


def test_causal_attention_with_dropout_gradient_and_evaluation_mode():
    q, k, v = randn(1, 2, 4, 3), randn(1, 2, 4, 3, seed=1), randn(1, 2, 4, 3, seed=2)

    def attend(q, k, v):                    # a fresh generator each call: one fixed mask
        return F.causal_attention(q, k, v, dropout=0.3, rng=np.random.default_rng(7))
    assert gradcheck(attend, [q, k, v])
    plain = F.causal_attention(Tensor(q), Tensor(k), Tensor(v)).data
    evaluated = F.causal_attention(Tensor(q), Tensor(k), Tensor(v), dropout=0.3,
                                   training=False).data
    np.testing.assert_array_equal(evaluated, plain)


def test_causal_attention_rejects_mismatched_shapes_and_bad_dropout():
    with pytest.raises(ValueError, match="share one shape"):
        F.causal_attention(Tensor(randn(2, 4, 3)), Tensor(randn(2, 5, 3)), Tensor(randn(2, 5, 3)))
    with pytest.raises(ValueError, match="dropout"):
        x = Tensor(randn(2, 4, 3))
        F.causal_attention(x, x, x, dropout=1.0)


# ----- dropout -----------------------------------------------------------------------------
def test_dropout_gradient_with_a_fixed_mask():
    x = randn(3, 4, 5)
    assert gradcheck(lambda t: F.dropout(t, 0.4, rng=np.random.default_rng(3)), [x])


# ----- sequence cross-entropy --------------------------------------------------------------
def test_sequence_cross_entropy_forward_and_gradient():
    logits, targets = 3 * randn(2, 3, 5), np.array([[0, 4, 1], [2, 2, 3]])
    expected = -np.mean([scipy_log_softmax(logits[b, t])[targets[b, t]]
                         for b in range(2) for t in range(3)])
    np.testing.assert_allclose(F.sequence_cross_entropy(Tensor(logits), targets).item(), expected,
                               rtol=1e-12)
    assert gradcheck(lambda t: F.sequence_cross_entropy(t, targets), [logits])


@pytest.mark.parametrize("targets, error, words", [
    (np.array([[0, 5, 1], [2, 2, 3]]), ValueError, "lie in"),
    (np.array([[0, 1, 1]]), ValueError, "shape"),
    (np.zeros((2, 3)), TypeError, "integers"),
])
def test_sequence_cross_entropy_rejects_bad_targets(targets, error, words):
    with pytest.raises(error, match=words):
        F.sequence_cross_entropy(Tensor(randn(2, 3, 5)), targets)
