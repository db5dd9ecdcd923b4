"""The mixture-of-experts layer: gradients through the gates and the balancing losses, the
routers' rules, capacity and dropless mode, equivalences with a dense FFN, bad input."""
import math

import numpy as np
import pytest

import sparsenet
from gradcheck import gradcheck
from sparsenet import Tensor
from sparsenet.nn import functional as F
from sparsenet.nn.moe import MoE, capacity_of, cv_squared

PARAMS = ("w_gate", "w_noise", "w1", "b1", "w2", "b2")


def randn(*shape, seed=0, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def layer(n_experts=4, k=2, router="noisy_topk", **options):
    moe = MoE(5, 6, n_experts, k, router=router, dtype=np.float64,
              rng=np.random.default_rng(1), **options)
    for i, name in enumerate(n for n in PARAMS if hasattr(moe, n)):
        getattr(moe, name).data = randn(*getattr(moe, name).shape, seed=10 + i, scale=0.7)
    return moe


def as_function(moe, with_aux):
    """fn(x, *params) -> output (+ aux loss) with the layer's parameters as inputs; the noise
    is reseeded each call, so every evaluation routes with the same ε."""
    names = [n for n in PARAMS if hasattr(moe, n)]

    def fn(x, *params):
        for name, p in zip(names, params):
            object.__setattr__(moe, name, p)
        sparsenet.manual_seed(3)
        out = moe(x)
        return out + moe.aux_loss if with_aux else out
    return fn, [getattr(moe, n).data.copy() for n in names]


@pytest.mark.parametrize("with_aux", [False, True], ids=["output", "output+balance"])
def test_noisy_topk_gradients_through_gates_noise_and_balancing_losses(with_aux):
    moe = layer()
    fn, params = as_function(moe, with_aux)
    assert gradcheck(fn, [randn(7, 5, seed=2)] + params, atol=1e-5)


@pytest.mark.parametrize("capacity_factor", [None, 0.6], ids=["dropless", "capacity 0.6"])
def test_switch_gradients_with_and_without_dropped_tokens(capacity_factor):
    moe = layer(n_experts=3, k=1, router="switch", capacity_factor=capacity_factor)
    fn, params = as_function(moe, with_aux=True)
    x = randn(9, 5, seed=4)
    assert gradcheck(fn, [x] + params, atol=1e-5)
    if capacity_factor:
        assert moe.stats["dropped"] > 0           # the check went through dropped tokens too


def test_noisy_topk_rule_by_hand():
    moe = layer(n_experts=4, k=2)
    x = randn(6, 5, seed=5)
    sparsenet.manual_seed(8)
    out = moe(Tensor(x)).data
    sparsenet.manual_seed(8)                          # the same ε, drawn as the router draws it
    eps = sparsenet.random.generator().standard_normal((6, 4))
    clean = x @ moe.w_gate.data.T
    noise_std = np.log1p(np.exp(x @ moe.w_noise.data.T)) + 0.01
    noisy = clean + eps * noise_std
    want = np.zeros_like(out)
    for t in range(6):
        top = np.argsort(-noisy[t])[:2]
        gates = np.exp(noisy[t, top]) / np.exp(noisy[t, top]).sum()
        for g, e in zip(gates, top):
            h = F.gelu(Tensor(moe.w1.data[e] @ x[t] + moe.b1.data[e])).data
            want[t] += g * (moe.w2.data[e] @ h + moe.b2.data[e])
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def test_balancing_losses_match_their_formulas():
    moe = layer(n_experts=4, k=1, router="switch")
    x = randn(10, 5, seed=6)
    moe(Tensor(x))
    logits = x @ moe.w_gate.data.T
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    f = np.bincount(probs.argmax(axis=1), minlength=4) / 10
    assert math.isclose(moe.aux_loss.item(), 0.01 * 4 * np.sum(f * probs.mean(axis=0)))
    v = np.array([1.0, 2.0, 3.0, 6.0])
    assert math.isclose(cv_squared(Tensor(v)).item(), v.var() / v.mean() ** 2, rel_tol=1e-9)
    balanced = layer(n_experts=4, k=2)
    balanced(Tensor(x))
    assert set(balanced.stats) >= {"importance_loss", "load_loss", "load", "load_max_mean",
                                   "dropped"}
    unbalanced = layer(balance=0)
    unbalanced(Tensor(x))
    assert unbalanced.aux_loss is None and "load_loss" not in unbalanced.stats


def test_capacity_drops_overflow_and_dropless_keeps_every_token():
    assert capacity_of(1.25, 1, 100, 8) == 16 and capacity_of(None, 2, 100, 8) == 100
    moe = layer(n_experts=4, k=1, router="switch", capacity_factor=0.5)
    moe.w_gate.data[:] = 0
    moe.w_gate.data[0] = 10.0                         # every token wants expert 0 ...
    x = np.abs(randn(8, 5, seed=7))
    out = moe(Tensor(x)).data
    assert moe.stats["load"] == [8, 0, 0, 0] and moe.stats["capacity"] == 1
    assert moe.stats["dropped"] == pytest.approx(7 / 8)
    np.testing.assert_array_equal(out[1:], 0)         # ... only the first gets a place
    assert np.abs(out[0]).sum() > 0
    moe.capacity_factor = None
    moe(Tensor(x))
    assert moe.stats["dropped"] == 0


def test_identical_experts_make_a_dense_ffn():
    # gates sum to 1 over the chosen experts, so identical experts give the FFN itself
    moe = layer(n_experts=4, k=2)
    for name in ("w1", "b1", "w2", "b2"):
        p = getattr(moe, name)
        p.data = np.repeat(p.data[:1], 4, axis=0)
    x = randn(6, 5, seed=9)
    h = F.gelu(Tensor(x @ moe.w1.data[0].T + moe.b1.data[0])).data
    moe.eval()
    np.testing.assert_allclose(moe(Tensor(x)).data, h @ moe.w2.data[0].T + moe.b2.data[0],
                               rtol=1e-12)
    assert moe.aux_loss is None                       # balancing losses are training losses


def test_evaluation_routes_without_noise():
    moe = layer()
    moe.eval()
    x = Tensor(randn(6, 5, seed=9))
    first = moe(x).data
    sparsenet.manual_seed(123)
    np.testing.assert_array_equal(moe(x).data, first)


def test_active_weights_count_k_experts_and_the_router():
    moe = MoE(128, 256, 8, 2)
    assert moe.active_weights() == 2 * 8 * 128 + 2 * 2 * 128 * 256


@pytest.mark.parametrize("options, words", [
    (dict(n_experts=4, k=5), "larger than the number of experts"),
    (dict(n_experts=4, k=0), "k must be a positive integer"),
    (dict(n_experts=4, k=2, router="switch"), "k must be 1"),
    (dict(n_experts=4, k=1, router="hash"), "router must be one of"),
    (dict(n_experts=4, k=1, capacity_factor=0), "capacity_factor must be a number > 0"),
    (dict(n_experts=4, k=1, capacity_factor=-1.0), "capacity_factor must be a number > 0"),
    (dict(n_experts=4, k=1, balance=-0.1), "balance"),
])
def test_bad_options_are_clear_errors(options, words):
    with pytest.raises(ValueError, match=words):
        MoE(5, 6, **options)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(tokens, 5\)"):
        layer()(Tensor(randn(2, 3, 5)))
