"""Pruning at initialization (SNIP, GraSP, SynFlow, random): scores against hand computations,
exact densities in every format, determinism, data-free SynFlow, masks that stay put, bad
inputs, and end-to-end runs through the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

import sparsenet as sn
from sparsenet import cli
from sparsenet.algorithms.common import layer_counts, prunable_layers
from sparsenet.algorithms.grasp import GraSP, hessian_gradient_product
from sparsenet.algorithms.random_pruning import RandomPruning
from sparsenet.algorithms.saliency import PruningAtInit
from sparsenet.algorithms.snip import SNIP
from sparsenet.algorithms.synflow import SynFlow, synaptic_flow
from sparsenet.data import BatchLoader
from sparsenet.nn import build_model
from sparsenet.nn.layers import Flatten, Linear, ReLU, Sequential, Tanh
from sparsenet.nn.sparse_layers import SparseLinear
from sparsenet.train import TrainConfig, load_arrays, train_phase

METHODS = {"snip": SNIP, "grasp": GraSP, "synflow": SynFlow, "random": RandomPruning}
FAST = {"snip": {}, "grasp": {"samples_per_class": 5}, "synflow": {"iterations": 10},
        "random": {}}
FORMATS = {"csr": {}, "masked": {}, "block": {"block_size": 2}, "nm": {"n": 2, "m": 4}}
SPEC = "mlp:784-64-32-10"


def tiny_data(n=16, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n)


def tiny_mlp(sizes=(6, 5, 3), act=ReLU, seed=0):
    rng = np.random.default_rng(seed)
    layers = [Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, rng=rng))
        if i < len(sizes) - 2:
            layers.append(act())
    model = Sequential(*layers)
    for layer in model:
        if isinstance(layer, Linear):                      # nonzero biases: a stricter check
            layer.bias.data = rng.normal(size=layer.bias.shape).astype(np.float32) * 0.1
    return model


def mlp_arrays(model):
    return [(layer.weight.data.astype(np.float64), layer.bias.data.astype(np.float64))
            for layer in model if isinstance(layer, Linear)]


def hand_gradients(params, x, y, act="relu", T=1.0):
    """dL/dW of mean cross-entropy(logits / T) for an MLP, written out by hand."""
    a, pre = [x.astype(np.float64)], []
    for i, (W, b) in enumerate(params):
        h = a[-1] @ W.T + b
        pre.append(h)
        last = i == len(params) - 1
        a.append(h if last else (np.maximum(h, 0) if act == "relu" else np.tanh(h)))
    z = a[-1] / T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    delta = (p - np.eye(z.shape[1])[y]) / len(y) / T
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        grads[i] = delta.T @ a[i]
        if i:
            back = delta @ params[i][0]
            delta = back * ((pre[i - 1] > 0) if act == "relu" else 1 - np.tanh(pre[i - 1]) ** 2)
    return grads


def setup_method(method, model, loader):
    method.setup(model, None, loader, total_steps=10)
    return {name: layer.weight.mask() for name, layer in model.named_modules()
            if isinstance(layer, SparseLinear)}


def top_k_mask(scores, k):
    flat = np.concatenate([s.ravel() for s in scores])
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    bounds = np.cumsum([0] + [s.size for s in scores])
    return [keep[a:b].reshape(s.shape) for s, a, b in zip(scores, bounds[:-1], bounds[1:])]


# ----- scores against hand computations ----------------------------------------------------
def test_snip_scores_are_normalized_abs_grad_times_weight():
    x, y = tiny_data()
    model = tiny_mlp()
    params = mlp_arrays(model)
    method = SNIP(sparsity=0.6)
    masks = setup_method(method, model, BatchLoader(x, y, batch_size=16, shuffle=False))
    grads = hand_gradients(params, x, y)
    raw = [np.abs(g * W) for g, (W, _) in zip(grads, params)]
    total = sum(r.sum() for r in raw)
    for got, want in zip(method.last_scores.values(), raw):
        np.testing.assert_allclose(got, want / total, rtol=1e-9, atol=1e-15)
    expected = top_k_mask(raw, round(0.4 * 45))                         # global top-k
    for (name, mask), want in zip(masks.items(), expected):
        np.testing.assert_array_equal(mask, want, err_msg=name)


def test_grasp_hessian_gradient_product_matches_the_exact_hessian():
    """Softmax regression: H = mean_i (diag(p) - p pᵀ) ⊗ x xᵀ / T², formed exactly."""
    x, y = tiny_data(n=20, features=6, classes=4)
    model, T = tiny_mlp(sizes=(6, 4)), 3.0
    g, Hg = hessian_gradient_product(model, x, y, temperature=T)
    (W, b), = mlp_arrays(model)
    X = x.astype(np.float64)
    z = (X @ W.T + b) / T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    H = sum(np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(xi, xi)) for pi, xi in zip(p, X))
    H /= T ** 2 * len(y)
    gv = g["1"].ravel()
    np.testing.assert_allclose(gv, ((p - np.eye(4)[y]).T @ X / T / len(y)).ravel(), atol=1e-14)
    np.testing.assert_allclose(Hg["1"].ravel(), H @ gv, rtol=1e-6, atol=1e-9 * abs(H @ gv).max())


def test_grasp_product_matches_finite_differences_of_a_hand_gradient():
    """A tanh MLP: Hg against central differences of an independent, hand-written gradient."""
    x, y = tiny_data(n=12, features=5, classes=3, seed=1)
    model, T = tiny_mlp(sizes=(5, 7, 3), act=Tanh, seed=1), 2.0
    params = mlp_arrays(model)
    g, Hg = hessian_gradient_product(model, x, y, temperature=T)
    want_g = hand_gradients(params, x, y, act="tanh", T=T)
    h = 1e-4
    plus = hand_gradients([(W + h * gw, b) for (W, b), gw in zip(params, want_g)], x, y, "tanh", T)
    minus = hand_gradients([(W - h * gw, b) for (W, b), gw in zip(params, want_g)], x, y, "tanh", T)
    for name, gw, p, m in zip(g, want_g, plus, minus):
        np.testing.assert_allclose(g[name], gw, rtol=1e-10, atol=1e-16)
        want = (p - m) / (2 * h)
        np.testing.assert_allclose(Hg[name], want, rtol=1e-5, atol=1e-7 * abs(want).max())


def test_grasp_removes_the_highest_scores():
    """Kept = the lowest S = -θ ⊙ Hg over all layers (GraSP's sign convention)."""
    x, y = tiny_data(n=30, features=5, classes=3, seed=2)
    y = np.arange(30) % 3                          # balanced: GraSP's sample is all of it
    model = tiny_mlp(sizes=(5, 7, 3), act=Tanh, seed=2)
    params = mlp_arrays(model)
    _, Hg = hessian_gradient_product(model, x, y, temperature=200.0)
    S = [-W * Hg[name] for (W, _), name in zip(params, Hg)]
    method = GraSP(sparsity=0.7, samples_per_class=10)
    masks = setup_method(method, model, BatchLoader(x, y, batch_size=30, shuffle=False))
    kept = round(0.3 * (35 + 21))
    for (name, mask), want in zip(masks.items(), top_k_mask([-s for s in S], kept)):
        np.testing.assert_array_equal(mask, want, err_msg=name)
    assert all(np.isfinite(s).all() for s in method.last_scores.values())


def test_synflow_flow_and_scores_of_a_two_layer_net_by_hand():
    model = tiny_mlp(sizes=(4, 3, 2), seed=3)                  # ReLU, nonzero biases
    (W1, _), (W2, _) = mlp_arrays(model)
    A1, A2 = np.abs(W1), np.abs(W2)
    R, S = synaptic_flow(model, (4,))
    assert R == pytest.approx(np.ones(2) @ A2 @ A1 @ np.ones(4), rel=1e-12)
    np.testing.assert_allclose(S["1"], np.outer(np.ones(2) @ A2, np.ones(4)) * A1, rtol=1e-12)
    np.testing.assert_allclose(S["3"], np.outer(np.ones(2), A1 @ np.ones(4)) * A2, rtol=1e-12)
    alive = {"1": np.ones((3, 4), bool), "3": np.array([[1, 0, 1], [0, 1, 1]], bool)}
    R, S = synaptic_flow(model, (4,), alive)
    assert R == pytest.approx(np.ones(2) @ (A2 * alive["3"]) @ A1 @ np.ones(4), rel=1e-12)
    assert (S["3"][~alive["3"]] == 0).all()
    assert model[1].weight.data.dtype == np.float32            # parameters restored


def recording(cls):
    """The method `cls`, remembering the mask each scoring step saw."""
    class Recording(cls):
        def scores(self, model, loader, alive=None):
            self.seen = getattr(self, "seen", []) + [alive]
            return super().scores(model, loader, alive)
    return Recording


@pytest.mark.filterwarnings("ignore:.*without any input")   # 95 % of a tiny MLP: expected
@pytest.mark.parametrize("cls", [SynFlow, SNIP], ids=["synflow", "iterative-snip"])
def test_iterative_schedule_is_exponential_nested_and_exact(cls):
    model = build_model(SPEC)
    total = sum(m.weight.size for m in model if isinstance(m, Linear))
    method = recording(cls)(sparsity=0.95, iterations=6)
    masks = setup_method(method, model, BatchLoader(*tiny_data(features=784, classes=10), 16))
    assert len(method.seen) == 6 and method.seen[0] is None
    steps = method.seen[1:] + [masks]
    for k, (before, after) in enumerate(zip(method.seen[1:], steps[1:]), start=1):
        assert sum(m.sum() for m in before.values()) == round(0.05 ** (k / 6) * total)
        for name in after:
            assert not (after[name] & ~before[name]).any()     # a pruned weight never returns
    assert sum(m.sum() for m in masks.values()) == round(0.05 * total)


class RaisingLoader:
    """Has the data's shape (metadata) but raises if anyone reads a batch."""
    x = np.empty((0, 1, 28, 28), np.float32)

    def __iter__(self):
        raise AssertionError("SynFlow read data")


def test_synflow_touches_no_data():
    model = build_model(SPEC)
    setup_method(SynFlow(sparsity=0.9, iterations=3), model, RaisingLoader())
    model = build_model(SPEC)
    setup_method(SynFlow(sparsity=0.9, iterations=3, input_shape=[1, 28, 28]), model, None)
    assert prunable_layers(model, sparse_only=True)


# ----- densities, formats, determinism -----------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", list(METHODS))
def test_exact_total_density_in_every_format(name, fmt):
    model = build_model(SPEC)
    sizes = [m.weight.size for m in model if isinstance(m, Linear)]
    method = METHODS[name](sparsity=0.9, format=fmt, **FORMATS[fmt], **FAST[name])
    initial = {n: m.weight.data.reshape(m.weight.shape[0], -1).copy()
               for n, m in model.named_modules() if isinstance(m, Linear)}
    setup_method(method, model, BatchLoader(*tiny_data(n=64, features=784, classes=10), 32))
    stored = {n: m for n, m in model.named_modules() if isinstance(m, (Linear, SparseLinear))}
    kept = sum(m.weight.nnz if isinstance(m, SparseLinear) else m.weight.size
               for m in stored.values())
    if fmt == "nm":
        assert kept == sum(sizes) // 2
    elif fmt == "block":
        assert abs(kept - 0.1 * sum(sizes)) <= 2                 # half a 2x2 block
    else:
        assert kept == round(0.1 * sum(sizes))
    for n, m in stored.items():                                   # initial values where kept
        if isinstance(m, SparseLinear):
            np.testing.assert_array_equal(m.weight.to_dense(), initial[n] * m.weight.mask())
    described = method.describe()["layers"]
    assert sum(r["weights"] for r in described.values()) == kept


@pytest.mark.parametrize("name", list(METHODS))
def test_masked_and_csr_choose_the_same_weights(name):
    masks = []
    for fmt in ("csr", "masked"):
        sn.manual_seed(1)
        masks.append(setup_method(METHODS[name](sparsity=0.8, format=fmt, **FAST[name]),
                                  build_model(SPEC), BatchLoader(*tiny_data(64, 784, 10), 32)))
    for name_ in masks[0]:
        np.testing.assert_array_equal(masks[0][name_], masks[1][name_])


@pytest.mark.parametrize("name", list(METHODS))
def test_same_seed_same_masks(name):
    runs = []
    for seed in (0, 0, 1):
        sn.manual_seed(seed)
        loader = BatchLoader(*tiny_data(64, 784, 10), 32, seed=seed)
        method = METHODS[name](sparsity=0.9, **FAST[name])
        runs.append(setup_method(method, build_model(SPEC), loader))
    assert all((runs[0][n] == runs[1][n]).all() for n in runs[0])
    assert any((runs[0][n] != runs[2][n]).any() for n in runs[0])


def test_layer_scope_follows_the_distribution():
    model = build_model(SPEC)
    masks = setup_method(SNIP(sparsity=0.9, scope="layer", distribution="uniform"), model,
                         BatchLoader(*tiny_data(64, 784, 10), 32))
    shapes = {n: m.shape for n, m in masks.items()}
    assert {n: int(m.sum()) for n, m in masks.items()} == layer_counts(shapes, 0.1, "uniform")


def test_random_uses_the_distribution():
    model = build_model(SPEC)
    masks = setup_method(RandomPruning(sparsity=0.9, distribution="erk"), model, None)
    shapes = {n: m.shape for n, m in masks.items()}
    assert {n: int(m.sum()) for n, m in masks.items()} == layer_counts(shapes, 0.1, "erk")


class Lopsided(PruningAtInit):
    """Scores that make one layer worthless: the global ranking would empty it."""

    def scores(self, model, loader, alive=None):
        rng = np.random.default_rng(0)
        return {n: rng.random(m.weight.shape) * (1e-9 if n == "3" else 1.0)
                for n, m in prunable_layers(model)}


def test_layer_collapse_is_reported_and_no_layer_vanishes():
    model, method = build_model(SPEC), Lopsided(sparsity=0.9)
    with pytest.warns(UserWarning) as caught:
        masks = setup_method(method, model, None)
    messages = [str(w.message) for w in caught]
    assert any("layer collapse" in m for m in messages)
    assert any("31 of its 32 output units without any input" in m for m in messages)
    assert masks["3"].sum() == 1 and model[3].weight.nnz == 1    # only its best weight
    assert method.describe()["layer_collapse"] == ["3"]
    assert method.describe()["disconnected"] == ["3"]          # 31 of its 32 units: no input
    assert sum(m.sum() for m in masks.values()) == round(0.1 * (784 * 64 + 64 * 32 + 32 * 10))


def test_setup_rewinds_the_loader_and_counts_scoring_flops():
    loader = BatchLoader(*tiny_data(64, 784, 10), 32)
    method = SNIP(sparsity=0.9)
    setup_method(method, build_model(SPEC), loader)
    assert loader.epoch == 0
    assert method.topology_changed() and not method.topology_changed()
    dense_forward = 2 * (784 * 64 + 64 * 32 + 32 * 10)
    assert method.extra_flops() == 3 * dense_forward * 32 and method.extra_flops() == 0


# ----- training keeps the masks ------------------------------------------------------------
class WatchedSNIP(SNIP):
    """SNIP that remembers the masks it chose (train_phase calls setup itself)."""

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.chosen = {n: m.weight.mask() for n, m in model.named_modules()
                       if isinstance(m, SparseLinear)}


@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_masks_are_never_revived_during_training(fmt, fast_mode):
    model, method = build_model(SPEC), WatchedSNIP(sparsity=0.9, format=fmt)
    config = TrainConfig(model=SPEC, method="snip", sparsity=0.9, epochs=1, progress=False)
    train_phase(model, method, config, load_arrays("subset"), epochs=1, log=None)
    for n, m in model.named_modules():
        if isinstance(m, SparseLinear):
            np.testing.assert_array_equal(m.weight.mask(), method.chosen[n])
            assert (m.weight.to_dense()[~method.chosen[n]] == 0).all()


# ----- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("options, match", [({"sparsity": 1.0}, "sparsity"),
                                            ({"sparsity": -0.1}, "sparsity"),
                                            ({"scope": "local"}, "scope")])
def test_bad_common_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        METHODS[name](**options)


@pytest.mark.parametrize("cls, options, match", [
    (SynFlow, {"iterations": 0}, "iterations"), (SynFlow, {"iterations": -3}, "iterations"),
    (SynFlow, {"iterations": 2.5}, "iterations"),
    (SynFlow, {"input_shape": [0, 28]}, "input_shape"),
    (SNIP, {"batches": 0}, "batches"), (SNIP, {"iterations": 0}, "iterations"),
    (GraSP, {"T": 0}, "T"),
    (GraSP, {"samples_per_class": 0}, "samples_per_class"), (GraSP, {"epsilon": -1}, "epsilon")])
def test_bad_method_options(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(**options)


def test_setup_refuses_a_sparse_model_or_an_existing_optimizer():
    model = build_model(SPEC)
    SNIP(sparsity=0.5).setup(model, None, BatchLoader(*tiny_data(8, 784, 10), 8), 1)
    with pytest.raises(ValueError, match="dense model"):
        SNIP(sparsity=0.5).setup(model, None, BatchLoader(*tiny_data(8, 784, 10), 8), 1)
    with pytest.raises(RuntimeError, match="optimizer"):
        SNIP(sparsity=0.5).setup(build_model(SPEC), object(), None, 1)


# ----- end to end --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_cli_end_to_end(name, fast_mode, tmp_path):
    path = tmp_path / f"{name}.json"
    extra = ["--opt", "iterations=5"] if name == "synflow" else []
    cli.main(["train", "--method", name, "--sparsity", "0.9", "--model", SPEC, "--epochs", "1",
              "--data", "subset", "--no-progress", "--json", str(path), *extra])
    record = json.loads(path.read_text())
    assert record["method"] == name and abs(record["density"] - 0.1) < 1e-4
    details = record["method_details"]
    assert set(details["layers"]) == {"1", "3", "5"} and details["layer_collapse"] == []
    assert details["disconnected"] == []
    assert record["test_accuracy"] > 0.1
