"""MEST (drop |w| + λ|g|, random growth, elastic mutation, soft memory bound) and AutoSparse
(learnable thresholds, gradient annealing): each rule, the budget after every update, the
threshold function's gradient, the α schedule, determinism, bad inputs and end-to-end runs."""
import math

import numpy as np
import pytest

import dst_loop
from dst_loop import data
import sparsenet as sn
from sparsenet import metrics
from sparsenet.algorithms import get_method
from sparsenet.algorithms.autosparse import (AutoSparseLinear, SoftThreshold, annealing_factor)
from sparsenet.algorithms.common import lowest_units
from sparsenet.algorithms.mest import ElasticRatio
from sparsenet.cli import main
from sparsenet.nn import Flatten, Sequential, SparseLinear, build_model
from sparsenet.nn.functional import cross_entropy
from sparsenet.optim import SGD
from sparsenet.sparse import CSR, Block, Masked
from sparsenet.tensor import Tensor

def tiny_model(seed=0):
    return dst_loop.tiny_model(seed=seed)


def train(method, steps=40, batch=32, seed=0, on_step=None, model=None):
    return dst_loop.train(method, steps, batch, model, seed=seed, on_step=on_step)


# ----- MEST ------------------------------------------------------------------------------------
def test_mest_drop_scores_are_magnitude_plus_lambda_gradient():
    dense = np.zeros((4, 6), dtype=np.float32)
    dense[[0, 1, 1, 2, 3, 3], [0, 2, 5, 1, 3, 4]] = [0.5, -0.1, 0.3, -0.7, 0.2, 0.05]
    layer = SparseLinear(6, 4, weight=CSR.from_dense(dense))
    grad = np.array([0.1, -2.0, 0.0, 0.4, -0.3, 1.0], dtype=np.float32)
    layer.values.grad = grad
    expected = np.abs(layer.values.data) + 0.5 * np.abs(grad)
    np.testing.assert_allclose(get_method("mest", lam=0.5).drop_scores(layer), expected, rtol=1e-6)
    np.testing.assert_array_equal(get_method("mest").drop_scores(layer),
                                  np.abs(layer.values.data))            # λ = 0: magnitude
    # the lowest score is dropped first: 0.05 + 0.5 and 0.3 + 0 reorder the magnitudes
    assert np.flatnonzero(lowest_units(expected, 2)).tolist() == [2, 4]
    # Masked: dense-position scores, reported for the mask's units only
    masked = SparseLinear(6, 4, weight=Masked.from_dense(dense))
    masked.values.grad = np.arange(24, dtype=np.float32) / 10
    scores = get_method("mest", lam=2.0).drop_scores(masked)
    full = np.abs(dense.ravel()) + 2.0 * np.arange(24) / 10
    np.testing.assert_allclose(scores, full[dense.ravel() != 0], rtol=1e-6)
    # Block: the L2 norm of each block's element scores
    diagonal = np.diag([1.0, -2, 3, 4]).astype(np.float32)
    blocked = SparseLinear(4, 4, weight=Block.from_dense(diagonal, block_size=2, density=0.5))
    blocked.values.grad = np.ones(8, dtype=np.float32)
    np.testing.assert_allclose(get_method("mest", lam=1.0).drop_scores(blocked),
                               [math.sqrt(4 + 1 + 1 + 9), math.sqrt(16 + 1 + 1 + 25)], rtol=1e-6)
    layer.values.grad = None
    with pytest.raises(RuntimeError, match="gradient"):
        get_method("mest", lam=0.5).drop_scores(layer)


def test_elastic_ratio_schedule():
    ratio = ElasticRatio(0.2, t_decay=90, t_end=120)
    assert [ratio(t) for t in (0, 89, 90, 119, 120, 500)] == [0.2, 0.2, 0.1, 0.1, 0.0, 0.0]
    method = get_method("mest", sparsity=0.9, delta_t=10)
    method.setup(tiny_model(), None, None, 160)             # reference: epochs 90, 120 of 160
    assert (method.t_decay_steps, method.t_end_steps) == (90, 120)
    assert [method.drop_fraction(t) for t in (10, 80, 90, 110)] == [0.2, 0.2, 0.1, 0.1]
    assert [t for t in range(160) if method.is_update_step(t)] == list(range(10, 120, 10))
    with pytest.raises(ValueError, match="t_decay < t_end"):
        get_method("mest", t_decay=130, delta_t=10).setup(tiny_model(), None, None, 160)


MEST_FORMATS = [("csr", {}), ("masked", {}), ("block", {"block_size": 4, "dense_layers": ["last"]}),
                ("nm", {"n": 2, "m": 4, "sparsity": 0.5})]


@pytest.mark.parametrize("soft", [False, True], ids=["EM", "EM&S"])
@pytest.mark.parametrize("fmt,options", MEST_FORMATS, ids=[f for f, _ in MEST_FORMATS])
def test_mest_budget_after_every_update(fmt, options, soft):
    if soft and fmt == "nm":
        pytest.skip("the soft bound is refused on nm (test_mest_bad_inputs)")
    options = dict({"sparsity": 0.9, "zeta": 0.3, "delta_t": 5, "t_end": 0.75, "t_decay": 0.5},
                   **options)
    method = get_method("mest", format=fmt, soft_bound=soft, **options)
    seen = {"updates": 0, "prune_back": 0}

    def check(when, step):
        if when == "before":
            seen["scores"] = {n: method.drop_scores(m) for n, m in method.layers}
            seen["units"] = {n: m.weight.unit_coords() for n, m in method.layers}
            return
        last_of_soft = soft and step + 1 == method.t_end_steps
        if not (method.is_update_step(step) or last_of_soft):
            return
        zeta_t = 0.0 if last_of_soft else method.drop_fraction(step)
        seen["updates" if not last_of_soft else "prune_back"] += 1
        for name, layer in method.layers:
            budget, w = method.budget[name], layer.weight
            want = budget + int(zeta_t * budget) if soft else budget
            assert w.n_units == want, f"{name} at step {step}: {w.n_units} units, want {want}"
            # every unit scored above the drop's cut is still there
            old_rows, old_cols = seen["units"][name]
            n_drop = (old_rows.size - budget) if soft else int(zeta_t * budget)
            cut = np.sort(seen["scores"][name])[n_drop - 1] if n_drop else -np.inf
            width = w.unit_grid[1]
            new_rows, new_cols = w.unit_coords()
            safe = seen["scores"][name] > cut
            assert np.isin(old_rows[safe] * width + old_cols[safe],
                           new_rows * width + new_cols).all(), f"{name}: a high score was dropped"
            if fmt == "nm":
                assert np.all(np.bincount(w.unit_groups(), minlength=w.n_groups) == 2)

    train(method, steps=40, on_step=check)
    assert seen["updates"] == 5 and seen["prune_back"] == (1 if soft else 0)
    for name, layer in method.layers:                 # back within the budget at the end
        assert layer.weight.n_units == method.budget[name]
    replaced = [u["replaced"] for u in method.updates]
    assert all(sum(r.values()) > 0 for r in replaced[1 if soft else 0:])


def test_mest_soft_bound_grows_above_budget_then_prunes_back():
    method = get_method("mest", sparsity=0.9, zeta=0.5, soft_bound=True, delta_t=4,
                        t_end=0.5, t_decay=0.25)
    train(method, steps=32)
    units = [(u["step"], sum(u["units"].values())) for u in method.updates]
    budget = sum(method.budget.values())
    extra = {1: sum(int(0.5 * b) for b in method.budget.values()),
             2: sum(int(0.25 * b) for b in method.budget.values())}
    assert units == [(4, budget + extra[1]), (8, budget + extra[2]), (12, budget + extra[2]),
                     (15, budget)]
    assert method.updates[-1]["prune_back"]
    assert method.describe()["budget_units"] == method.budget


def test_mest_is_deterministic_per_seed():
    def run(seed):
        sn.manual_seed(seed)
        _, method = train(get_method("mest", sparsity=0.9, lam=1.0, delta_t=5), steps=20,
                          seed=seed)
        return [np.array(m.weight.to_dense()) for _, m in method.layers]
    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x.astype(bool), y.astype(bool)) for x, y in zip(a, c))


@pytest.mark.parametrize("options,match", [
    ({"lam": -0.1}, "lam"), ({"lam": float("nan")}, "lam"), ({"lam": "big"}, "lam"),
    ({"zeta": 0}, "zeta"), ({"zeta": 1.0}, "zeta"), ({"zeta": -0.2}, "zeta"),
    ({"soft_bound": "yes"}, "soft_bound"), ({"decay": "sometimes"}, "decay"),
    ({"t_decay": 1.5}, "t_decay"), ({"t_decay": 0}, "t_decay"),
    ({"soft_bound": True, "format": "nm", "sparsity": 0.5}, "nm"),
    ({"format": "coo"}, "format"), ({"delta_t": 0}, "delta_t"),
])
def test_mest_bad_inputs(options, match):
    with pytest.raises(ValueError, match=match):
        get_method("mest", **options)


def test_mest_soft_bound_needs_room_to_grow():
    with pytest.raises(ValueError, match="above its budget"):
        get_method("mest", sparsity=0.3, zeta=0.9, soft_bound=True, delta_t=5,
                   distribution="uniform").setup(tiny_model(), None, None, 40)


# ----- AutoSparse ------------------------------------------------------------------------------
def _away_from_kink(rng, tau, shape, margin=1e-3):
    w = rng.uniform(-3 * tau, 3 * tau, size=shape)
    close = np.abs(np.abs(w) - tau) < margin
    w[close] += np.sign(w[close]) * 2 * margin
    return w


def test_soft_threshold_value_and_gradient(gradcheck, rng):
    s = np.array([-1.2])
    tau = 1 / (1 + math.exp(1.2))
    w = _away_from_kink(rng, tau, (5, 7))
    out = SoftThreshold.apply(Tensor(w), Tensor(s)).data
    np.testing.assert_allclose(out, np.sign(w) * np.maximum(np.abs(w) - tau, 0), rtol=1e-12)
    assert ((out == 0) == (np.abs(w) <= tau)).all() and 0 < (out == 0).mean() < 1
    # with α = 0 the backward is the true derivative: central differences in w and in s
    assert gradcheck(lambda w_, s_: SoftThreshold.apply(w_, s_, alpha=0.0), [w, s])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.75, 1.0])
def test_gradient_annealing_scales_pruned_gradients_by_alpha(alpha, rng):
    s = np.array([-1.0])
    tau = 1 / (1 + math.e)
    w = Tensor(_away_from_kink(rng, tau, (6, 9)), requires_grad=True)
    st = Tensor(s.copy(), requires_grad=True)
    upstream = rng.normal(size=(6, 9))
    (SoftThreshold.apply(w, st, alpha=alpha) * Tensor(upstream)).sum().backward()
    pruned = np.abs(w.data) <= tau
    assert pruned.any() and (~pruned).any()
    np.testing.assert_array_equal(w.grad[~pruned], upstream[~pruned])          # kept: ×1
    np.testing.assert_array_equal(w.grad[pruned], (upstream * alpha)[pruned])   # pruned: ×α_t
    slope = np.where(pruned, alpha, 1.0)
    expected_s = -tau * (1 - tau) * (np.sign(w.data) * upstream * slope).sum()
    np.testing.assert_allclose(st.grad, [expected_s], rtol=1e-12)


def test_annealing_schedule_is_sigmoid_cosine_then_zero():
    total, reset = 1000, 900
    alphas = [annealing_factor(t, total, 0.75, reset) for t in range(total)]
    assert alphas[0] == pytest.approx(0.75)
    assert alphas[500] == pytest.approx(0.75 * 0.5)             # cos and sigmoid meet at T/2
    for t in (100, 250, 700, 899):
        p = t / total
        cos, sig = (1 + math.cos(math.pi * p)) / 2, 1 - 1 / (1 + math.exp(6 - 12 * p))
        assert alphas[t] == pytest.approx(0.75 * max(cos, sig), rel=1e-12)
    assert all(a == 0.0 for a in alphas[reset:])
    assert all(0 <= b <= a <= 0.75 for a, b in zip(alphas, alphas[1:]))       # non-increasing
    assert alphas[100] > 0.75 * (1 + math.cos(math.pi * 0.1)) / 2     # early: the sigmoid is higher
    assert alphas[700] > 0.75 * (1 - 1 / (1 + math.exp(6 - 12 * 0.7)))  # later: the cosine


def test_autosparse_layers_start_at_the_target_and_sparsity_follows_the_threshold():
    model = tiny_model()
    method = get_method("autosparse", sparsity=0.8, distribution="uniform")
    params_before = len(model.parameters())
    method.setup(model, None, None, 100)
    assert len(model.parameters()) == params_before + 3          # one s per layer, seen by SGD
    for name, layer in method.layers:
        assert isinstance(layer, AutoSparseLinear) and model.get_submodule(name) is layer
        assert abs(layer.mask.mean() - 0.2) <= 2 / layer.mask.size      # the |w| quantile
        w_eff = layer.effective_weight().data
        assert ((w_eff != 0) == layer.mask).all()
    summary = metrics.sparsity_summary(model)
    assert summary["sparsity"] == pytest.approx(0.8, abs=1e-3)
    layer = method.layers[0][1]
    before = 1 - layer.mask.mean()
    layer.s.data += 0.5                                            # a higher τ prunes more
    assert 1 - layer.mask.mean() > before
    assert metrics.sparsity_summary(model)["sparsity"] > summary["sparsity"]
    layer.s.data -= 10.0                                           # τ ≈ 0: nearly dense
    assert layer.mask.mean() > 0.99


def test_autosparse_trains_thresholds_and_pull_steers_the_sparsity():
    results = {}
    for gain in (0.0, 10.0):
        method = get_method("autosparse", sparsity=0.9, target_gain=gain)
        s0 = None

        def grab(when, step, method=method):
            nonlocal s0
            if when == "before" and step == 0:
                s0 = [float(m.s.data[0]) for _, m in method.layers]
        train(method, steps=60, on_step=grab)
        s_end = [float(m.s.data[0]) for _, m in method.layers]
        assert s_end != s0                                         # the optimizer moved s
        results[gain] = method.describe()["thresholded_sparsity"]
    assert abs(results[10.0] - 0.9) < abs(results[0.0] - 0.9)


def test_autosparse_paper_variant_is_the_free_run_and_records_say_which():
    paper = get_method("autosparse", variant="paper")
    assert (paper.sparsity, paper.s_init, paper.target_gain) == (0.0, -5.0, 0.0)
    train(paper, steps=10)
    details = paper.describe()
    assert details["variant"].startswith("paper: free thresholds")
    assert details["target_thresholded"] is None
    for layer in details["thresholds"]:
        assert layer["initial_threshold"] == pytest.approx(1 / (1 + math.exp(5)))
    budgeted = get_method("autosparse", sparsity=0.9)
    assert budgeted.target_gain == 10.0 and budgeted.s_init is None
    assert budgeted.describe()["variant"].startswith("budgeted: the thresholds are pulled")
    with pytest.raises(ValueError, match="no target sparsity"):
        get_method("autosparse", variant="paper", sparsity=0.9)
    with pytest.raises(ValueError, match="variant must be one of"):
        get_method("autosparse", variant="free")


def test_autosparse_pull_is_added_to_the_threshold_gradient():
    method = get_method("autosparse", sparsity=0.9, target_gain=4.0)
    model = tiny_model()
    method.setup(model, None, None, 10)
    x, y = data()
    cross_entropy(model(Tensor(x[:16])), y[:16]).backward()
    plain = [m.s.grad.copy() for _, m in method.layers]
    layer = method.layers[0][1]
    method._kept[method.layers[0][0]] = 0        # pretend fully sparse: gap = S* − 1
    method.after_backward(0)
    gap = method.target - (1 - sum(method._kept.values()) / sum(method.sizes.values()))
    for g0, (_, m) in zip(plain, method.layers):
        np.testing.assert_allclose(m.s.grad, g0 - 4.0 * gap, rtol=1e-6)
    assert gap < 0 and layer.s.grad[0] > plain[0][0]


def test_autosparse_extra_flops_count_dense_weight_gradients_while_alpha_positive():
    method = get_method("autosparse", sparsity=0.9, t_reset=3)
    extras = []

    def count(when, step):
        if when == "after":
            extras.append(method.extra_flops())
    train(method, steps=5, batch=32, on_step=count)
    assert all(e > 0 for e in extras[:3]) and extras[3:] == [0.0, 0.0]
    assert method.describe()["final_alpha"] == 0.0


def test_autosparse_is_deterministic_per_seed():
    def run(seed):
        sn.manual_seed(seed)
        _, method = train(get_method("autosparse", sparsity=0.9), steps=20, seed=seed)
        return method.describe()["thresholds"]
    assert run(0) == run(0) and run(0) != run(1)


@pytest.mark.parametrize("options,match", [
    ({"format": "csr"}, "masked"), ({"format": "block"}, "masked"), ({"format": "nm"}, "masked"),
    ({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"alpha": True}, "alpha"),
    ({"t_reset": 0}, "t_reset"), ({"t_reset": 1.5}, "t_reset"), ({"t_reset": -4}, "t_reset"),
    ({"s_init": float("nan")}, "s_init"), ({"target_gain": -1.0}, "target_gain"),
    ({"sparsity": 0.0}, "s_init"), ({"sparsity": 1.0}, "sparsity"),
])
def test_autosparse_bad_inputs(options, match):
    with pytest.raises(ValueError, match=match):
        get_method("autosparse", **options)


def test_autosparse_refuses_a_model_already_sparse():
    model = Sequential(Flatten(), SparseLinear(784, 10, sparsity=0.9))
    with pytest.raises(ValueError, match="already has sparse layers"):
        get_method("autosparse", sparsity=0.9).setup(model, None, None, 10)


def test_autosparse_constant_s_init_without_target():
    method = get_method("autosparse", sparsity=0.0, s_init=-3.0, dense_layers=["last"])
    method.setup(tiny_model(), None, None, 10)
    assert [n for n, _ in method.layers] == ["1", "3"]
    assert all(m.threshold == pytest.approx(1 / (1 + math.exp(3))) for _, m in method.layers)
    assert method.target is None


# ----- end to end --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mest", "autosparse"])
def test_cli_fast_end_to_end(name, fast_mode, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["train", "--method", name, "--sparsity", "0.9", "--data", "subset",
                 "--no-progress", "--json", str(out)]) == 0
    import json
    record = json.loads(out.read_text())
    assert record["method"] == name and 0 < record["flops"]["training_relative"] < 1
    details = record["method_details"]
    if name == "mest":
        assert record["sparsity"] == pytest.approx(0.9, abs=0.005)
        assert details["n_updates"] >= 1 and details["zeta"] == 0.2
    else:
        assert [t["name"] for t in details["thresholds"]] and 0.5 < record["sparsity"] < 0.99


def test_autosparse_model_becomes_masked_sparse_after_the_last_step(tmp_path):
    x, _ = data()
    sn.manual_seed(0)
    model = build_model("mlp:784-48-24-10")             # has a spec: sn.load can rebuild it
    outputs = {}

    def grab(when, step):
        if when == "before" and step == 11:            # the trained thresholds, still dense
            outputs["before"] = model(Tensor(x[:8])).data.copy()
    _, method = train(get_method("autosparse", sparsity=0.9), steps=12, on_step=grab, model=model)
    for (name, _), entry in zip(method.layers, method.describe()["thresholds"]):
        layer = model.get_submodule(name)
        assert isinstance(layer, SparseLinear) and layer.format == "masked"
        assert layer.weight.nnz == round((1 - entry["sparsity"]) * layer.weight.values.size)
    np.testing.assert_allclose(model(Tensor(x[:8])).data, outputs["before"], rtol=1e-5, atol=1e-6)
    sn.save(model, tmp_path / "m.safetensors")
    loaded = sn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded(Tensor(x[:8])).data, model(Tensor(x[:8])).data)
