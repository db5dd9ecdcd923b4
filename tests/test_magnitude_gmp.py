"""One-shot magnitude pruning (Han et al. 2015) and gradual magnitude pruning (Zhu & Gupta 2017)."""
import json
import math

import numpy as np
import pytest

from sparsenet import cli, optim
from sparsenet.algorithms import get_method
from sparsenet.algorithms.common import prunable_layers
from sparsenet.algorithms.gmp import GradualMagnitudePruning
from sparsenet.algorithms.magnitude import MagnitudePruning
from sparsenet.nn import build_model
from sparsenet.nn.functional import cross_entropy
from sparsenet.nn.sparse_layers import SparseLinear
from sparsenet.tensor import Tensor
from sparsenet.train import TrainConfig, run, train_model

SPEC = "mlp:784-64-32-12"          # every dimension divisible by 2 and 4: blocks and 2:4 fit


def small_model(seed=0):
    return build_model(SPEC, num_classes=12, rng=np.random.default_rng(seed))


def dense_weights(model):
    return {name: layer.weight.data.copy() for name, layer in prunable_layers(model)}


def kept_masks(model):
    return {name: layer.weight.mask() for name, layer in prunable_layers(model)}


def random_batch(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 784)).astype(np.float32), rng.integers(0, 12, n)


def sgd_steps(model, steps, lr=0.05, momentum=0.9, weight_decay=0.01, on_step=None):
    """Plain SGD with momentum and weight decay on random data (what could revive a weight)."""
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for t in range(steps):
        x, y = random_batch(t)
        loss = cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step:
            on_step(t, opt)
    return opt


# ----- one-shot pruning: exact densities, the right weights ---------------------------------------
@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_layerwise_prunes_each_layer_to_its_exact_density_by_magnitude(fmt):
    model = small_model()
    before = dense_weights(model)
    MagnitudePruning(sparsity=0.8, scope="layerwise", format=fmt).prune(model)
    total_kept = total = 0
    for name, layer in prunable_layers(model):
        assert isinstance(layer, SparseLinear) and layer.format == fmt
        w = before[name]
        k = round(0.2 * w.size)
        assert layer.weight.nnz == k
        threshold = np.sort(np.abs(w).ravel())[-k]          # the k largest |w| are kept
        np.testing.assert_array_equal(layer.weight.mask(), np.abs(w) >= threshold)
        np.testing.assert_array_equal(layer.weight.to_dense(),
                                      np.where(np.abs(w) >= threshold, w, 0))
        total_kept, total = total_kept + k, total + w.size
    assert total_kept == round(0.2 * total)


@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_global_keeps_exactly_the_largest_weights_of_all_layers(fmt):
    model = small_model()
    before = dense_weights(model)
    MagnitudePruning(sparsity=0.9, scope="global", min_density=0.0, format=fmt).prune(model)
    all_abs = np.concatenate([np.abs(w).ravel() for w in before.values()])
    k = round(0.1 * all_abs.size)
    threshold = np.sort(all_abs)[-k]
    kept = 0
    for name, layer in prunable_layers(model):
        np.testing.assert_array_equal(layer.weight.mask(), np.abs(before[name]) >= threshold)
        kept += layer.weight.nnz
    assert kept == k


def test_default_scope_is_global_unless_the_pattern_or_distribution_fixes_each_layer():
    assert MagnitudePruning(sparsity=0.9).scope == "global"
    assert MagnitudePruning(sparsity=0.9, format="block", block_size=4).scope == "global"
    assert MagnitudePruning(format="nm", n=2, m=4, sparsity=0.5).scope == "layerwise"
    assert MagnitudePruning(sparsity=0.9, distribution="erk").scope == "layerwise"


def test_global_ranking_is_global_a_layer_of_small_weights_loses_more():
    layerwise, global_ = small_model(), small_model()
    for m in (layerwise, global_):
        prunable_layers(m)[1][1].weight.data *= 0.2         # layer "3": small weights
    MagnitudePruning(sparsity=0.8, scope="layerwise").prune(layerwise)
    MagnitudePruning(sparsity=0.8, scope="global", min_density=0.0).prune(global_)
    lw = [layer.weight.density for _, layer in prunable_layers(layerwise)]
    gl = [layer.weight.density for _, layer in prunable_layers(global_)]
    assert lw == pytest.approx([0.2, 0.2, 0.2], abs=1e-3)
    assert gl[1] < 0.05 < 0.2 < gl[0]                    # the small layer gives up its share
    assert sum(layer.weight.nnz for _, layer in prunable_layers(global_)) == \
        sum(layer.weight.nnz for _, layer in prunable_layers(layerwise))


def test_min_density_is_a_floor_against_layer_collapse():
    def pruned(min_density):
        model = small_model()
        prunable_layers(model)[1][1].weight.data *= 1e-3     # would lose every weight
        MagnitudePruning(sparsity=0.9, scope="global", min_density=min_density).prune(model)
        return [layer.weight for _, layer in prunable_layers(model)]
    collapsed = pruned(0.0)
    assert collapsed[1].nnz == 0
    floored = pruned(0.05)
    assert floored[1].nnz == math.ceil(0.05 * 64 * 32)
    total = sum(w.shape[0] * w.shape[1] for w in floored)
    assert sum(w.nnz for w in floored) == round(0.1 * total)     # the total stays exact


def test_two_four_pattern_keeps_the_two_largest_of_every_four():
    model = small_model()
    before = dense_weights(model)
    method = get_method("magnitude", sparsity=0.0, format="nm", n=2, m=4)
    method.prune(model)
    for name, layer in prunable_layers(model):
        assert layer.format == "nm" and layer.weight.density == 0.5
        groups = np.abs(before[name]).reshape(before[name].shape[0], -1, 4)
        mask = layer.weight.mask().reshape(groups.shape)
        assert (mask.sum(axis=-1) == 2).all()                        # the N:M rule
        smallest_kept = np.where(mask, groups, np.inf).min(axis=-1)
        largest_dropped = np.where(mask, -np.inf, groups).max(axis=-1)
        assert (smallest_kept >= largest_dropped).all()


def test_block_pruning_keeps_the_blocks_of_largest_norm():
    model = small_model()
    before = dense_weights(model)
    MagnitudePruning(sparsity=0.75, scope="layerwise", format="block", block_size=2).prune(model)
    for name, layer in prunable_layers(model):
        w = before[name]
        norms = np.sqrt((w.reshape(w.shape[0] // 2, 2, -1, 2) ** 2).sum(axis=(1, 3)))
        k = round(0.25 * norms.size)
        kept = layer.weight.mask()[::2, ::2]
        assert kept.sum() == k
        assert norms[kept].min() >= norms[~kept].max()


# ----- pruned weights stay pruned -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_fine_tuning_never_revives_a_pruned_weight(fmt):
    model = small_model()
    MagnitudePruning(sparsity=0.9, format=fmt).prune(model)
    masks = kept_masks(model)
    sgd_steps(model, 30, momentum=0.9, weight_decay=0.05)
    for name, layer in prunable_layers(model):
        np.testing.assert_array_equal(layer.weight.mask(), masks[name])
        dense = layer.values.data.reshape(layer.weight.shape) if fmt == "masked" \
            else layer.weight.to_dense()
        assert (dense[~masks[name]] == 0).all()                 # exactly zero, not small


# ----- gradual pruning: the cubic schedule drives the layers --------------------------------------
def cubic(t, s_f, t0, t_end, s_i=0.0):
    t = min(max(t, t0), t_end)
    return s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3


@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_gmp_follows_the_cubic_schedule_and_never_revives(fmt):
    total_steps, delta_t = 60, 5
    method = GradualMagnitudePruning(sparsity=0.8, begin=0.1, end=0.6, delta_t=delta_t, format=fmt)
    model = small_model()
    method.setup(model, None, None, total_steps)
    assert (method.t0, method.t_end) == (6, 36)
    assert all(layer.weight.density == 1.0 for _, layer in prunable_layers(model))
    method.optimizer = None
    seen = {"masks": kept_masks(model), "updates": []}

    def check(t, opt):
        method.optimizer = opt
        method.after_step(t)
        changed = method.topology_changed()
        masks = kept_masks(model)
        for name, layer in prunable_layers(model):
            assert not (masks[name] & ~seen["masks"][name]).any()       # nothing comes back
            units = layer.weight.shape[0] * layer.weight.shape[1]
            if method.schedules[name].is_update_step(t):
                s_f = 1 - round(0.2 * units) / units         # the layer's exact final sparsity
                expected = (1 - cubic(t, s_f, 6, 36)) * units
                assert abs(layer.weight.nnz - expected) <= 0.5 + 1e-6, (t, name)
            if fmt == "masked":
                values = layer.values.data.reshape(layer.weight.shape)
                assert (values[~masks[name]] == 0).all()
        if changed:
            seen["updates"].append(t)
        seen["masks"] = masks

    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    method.optimizer = opt
    for t in range(total_steps):
        x, y = random_batch(t)
        loss = cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        check(t, opt)
    # the first update (t0, sparsity 0) changes nothing; then every Δt until t0 + n·Δt
    assert seen["updates"] == list(range(11, 37, 5))
    for _, layer in prunable_layers(model):
        assert layer.weight.density == pytest.approx(0.2, abs=1e-3)


def test_gmp_starts_from_a_dense_equivalent_sparse_model():
    model = small_model()
    before = dense_weights(model)
    method = GradualMagnitudePruning(sparsity=0.9, format="block", block_size=2)
    method.setup(model, None, None, 100)
    for name, layer in prunable_layers(model):
        assert layer.format == "block" and layer.weight.density == 1.0
        np.testing.assert_array_equal(layer.weight.to_dense(), before[name])


# ----- bad inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, words", [
    ("magnitude", dict(sparsity=1.0), "sparsity"),
    ("magnitude", dict(sparsity=-0.1), "sparsity"),
    ("magnitude", dict(scope="everywhere"), "scope"),
    ("magnitude", dict(min_density=1.5), "min_density"),
    ("magnitude", dict(finetune_epochs=-1), "finetune_epochs"),
    ("magnitude", dict(finetune_lr=0.0), "finetune_lr"),
    ("magnitude", dict(scope="global", distribution="erk"), "distribution"),
    ("magnitude", dict(sparsity=0.9, format="nm", n=2, m=4), "contradicts"),
    ("gmp", dict(sparsity=1.0), "sparsity"),
    ("gmp", dict(format="nm"), "N:M"),
    ("gmp", dict(begin=0.7, end=0.5), "begin"),
    ("gmp", dict(delta_t=0), "delta_t"),
    ("gmp", dict(sparsity=0.5, initial_sparsity=0.6), "initial_sparsity"),
])
def test_bad_options_are_refused_at_construction(name, options, words):
    with pytest.raises(ValueError, match=words):
        get_method(name, **options)


@pytest.mark.parametrize("method", ["magnitude", "gmp"])
def test_a_block_size_that_does_not_divide_the_layer_fails_before_training(fast_mode, method):
    config = TrainConfig(model="lenet300", method=method, sparsity=0.9, epochs=1, data="subset",
                         progress=False, method_options={"format": "block", "block_size": 7})
    with pytest.raises(ValueError, match=r"block_size 7 tiles none of the model's layers"):
        train_model(config, log=None)


# ----- whole runs ---------------------------------------------------------------------------------
def fast_run(method, **options):
    return run(TrainConfig(model=SPEC, method=method, sparsity=0.8, epochs=2, data="subset",
                           progress=False, method_options=options), log=None)


def test_magnitude_record_has_both_phases_and_is_deterministic(fast_mode):
    first, second = fast_run("magnitude"), fast_run("magnitude")
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    assert [h["phase"] for h in first["history"]] == ["dense"] * 2 + ["finetune"] * 2
    assert [h["epoch"] for h in first["history"]] == [1, 2, 3, 4]
    assert first["epochs"] == 4 and first["density"] == pytest.approx(0.2, abs=1e-4)
    assert first["dense_test_accuracy"] == first["history"][1]["test_accuracy"]
    assert 0 <= first["pruned_test_accuracy"] <= 1
    assert first["method_details"]["finetune_lr"] == pytest.approx(0.05)    # the run's lr
    assert first["method_details"]["scope"] == "global"
    assert 0.2 < first["flops"]["training_relative"] < 1.0


def test_gmp_runs_the_same_on_csr_and_masked(fast_mode):
    csr = fast_run("gmp", format="csr", delta_t=2)
    masked = fast_run("gmp", format="masked", delta_t=2)
    np.testing.assert_allclose([h["loss"] for h in csr["history"]],
                               [h["loss"] for h in masked["history"]], rtol=1e-4)
    assert csr["density"] == masked["density"] == pytest.approx(0.2, abs=1e-4)
    assert [h["loss"] for h in fast_run("gmp", format="csr", delta_t=2)["history"]] == \
        [h["loss"] for h in csr["history"]]                                  # deterministic


@pytest.mark.parametrize("argv, density", [
    (["--method", "magnitude", "--sparsity", "0.9"], 0.1),
    (["--method", "magnitude", "--sparsity", "0.9", "--opt", "scope=layerwise"], 0.1),
    (["--method", "magnitude", "--pattern", "nm:2:4"], 0.5),
    (["--method", "gmp", "--sparsity", "0.9"], 0.1),
])
def test_command_line_end_to_end(fast_mode, tmp_path, argv, density):
    path = tmp_path / "record.json"
    assert cli.main(["train", "--data", "subset", "--epochs", "2", "--no-progress",
                     "--json", str(path)] + argv) == 0
    record = json.loads(path.read_text())
    assert record["method"] == argv[1]
    assert record["density"] == pytest.approx(density, abs=1e-4)
    assert all(np.isfinite(h["loss"]) for h in record["history"])
