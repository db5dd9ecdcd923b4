"""Dynamic sparse training (dst.py, static, set, rigl, srigl): the schedule, the update step,
the invariants after every update on every format, each method's rule, FLOPs and bad inputs."""
import math

import numpy as np
import pytest

import dst_loop
from dst_loop import data, tiny_model
from sparsenet.algorithms import get_method
from sparsenet.algorithms.common import lowest_units
from sparsenet.nn import Sequential, SparseLinear
from sparsenet.optim import SGD
from sparsenet.sparse import CSR, Masked
from sparsenet.train import TrainConfig, train_model

pytestmark = pytest.mark.usefixtures("one_thread")      # tiny products: see conftest.py


def train(method, steps=40, batch=32, model=None, on_update=None, lr=0.05):
    """dst_loop.train; on_update(before, step) after every topology update, `before` being
    the snapshot taken just before it."""
    if on_update is None:
        return dst_loop.train(method, steps, batch, model, lr)
    taken = {}

    def on_step(when, step):
        if when == "before":
            taken["before"] = snapshot(method)
        elif method.is_update_step(step):
            on_update(taken["before"], step)
    return dst_loop.train(method, steps, batch, model, lr, on_step=on_step)


def snapshot(method):
    """Per layer: element keys, values and momentum of the live weights, unit and group counts."""
    out = {}
    for name, layer in method.layers:
        w = layer.weight
        rows, cols = w.coords()                           # aligned with values
        alive = w.mask()[rows, cols]
        values = np.array(w.values)
        state = method.optimizer.state.get(id(layer.values), {})
        momentum = np.array(state["momentum"]) if "momentum" in state else np.zeros_like(values)
        unit_rows, unit_cols = w.unit_coords()
        out[name] = dict(keys=(rows * w.shape[1] + cols)[alive], values=values[alive],
                         momentum=momentum[alive], dead_values=values[~alive],
                         dead_momentum=momentum[~alive], n_units=w.n_units,
                         unit_keys=unit_rows * w.unit_grid[1] + unit_cols,
                         groups=np.bincount(w.unit_groups(), minlength=w.n_groups),
                         row_lengths=np.bincount(rows[alive], minlength=w.shape[0]))
    return out


def check_update(method, before, after, conserve=True):
    """What must hold after every topology update."""
    for name, b in before.items():
        a = after[name]
        assert np.all(np.diff(a["unit_keys"]) > 0), f"{name}: units unsorted or duplicated"
        assert np.unique(a["keys"]).size == a["keys"].size, f"{name}: duplicate positions"
        assert not a["dead_values"].any() and not a["dead_momentum"].any(), \
            f"{name}: something alive outside the topology"
        if conserve:
            assert a["n_units"] == b["n_units"], f"{name}: nnz not conserved"
            assert np.array_equal(a["groups"], b["groups"]), f"{name}: a group changed size"
        new = ~np.isin(a["keys"], b["keys"])
        assert not a["values"][new].any() and not a["momentum"][new].any(), \
            f"{name}: a grown weight did not start at zero with zero state"
        same_b = np.isin(b["keys"], a["keys"])
        kept = (a["values"][~new] == b["values"][same_b]) & \
            (a["momentum"][~new] == b["momentum"][same_b])
        if method.reinit_when_same:      # SET: dropped and drawn again restarts from zero
            kept |= (a["values"][~new] == 0) & (a["momentum"][~new] == 0)
        assert kept.all(), f"{name}: a surviving weight changed in the update"


FORMATS = [("csr", {}), ("masked", {}), ("block", {"block_size": 4, "dense_layers": ["last"]}),
           ("nm", {"n": 2, "m": 4, "sparsity": 0.5})]


@pytest.mark.parametrize("name", ["rigl", "set"])
@pytest.mark.parametrize("fmt,options", FORMATS, ids=[f for f, _ in FORMATS])
def test_invariants_after_every_update(name, fmt, options):
    options = dict({"sparsity": 0.9}, **options)
    method = get_method(name, format=fmt, delta_t=4, **options)
    seen = []

    def on_update(before, step):
        check_update(method, before, snapshot(method))
        seen.append(sum(method.updates[-1]["replaced"].values()))

    train(method, steps=40, on_update=on_update)
    assert len(seen) == len(range(4, 30, 4)) and sum(seen) > 0


@pytest.mark.parametrize("fmt", ["csr", "masked"])
@pytest.mark.parametrize("gamma_sal", [0.0, 0.3, 0.95])
def test_srigl_constant_fan_in_and_ablation(fmt, gamma_sal):
    method = get_method("srigl", sparsity=0.9, format=fmt, delta_t=4, gamma_sal=gamma_sal)
    ablated = []

    def on_update(before, step):
        after = snapshot(method)
        check_update(method, before, after, conserve=False)
        for name, layer in method.layers:
            lengths, budget = after[name]["row_lengths"], method.budget[name]
            active = lengths > 0
            assert np.unique(lengths[active]).size == 1, f"{name}: fan-in not constant"
            assert lengths[active][0] == budget // active.sum()
            assert budget - active.sum() < lengths.sum() <= budget
            if not method.ablated[name]:
                assert lengths.sum() == budget and np.array_equal(after[name]["row_lengths"],
                                                                  before[name]["row_lengths"])
            ablated.append(method.ablated[name])

    train(method, steps=40, on_update=on_update)
    # the format itself holds the rule (rows of 0 or K) in every layer, ablating or not
    assert all(layer.weight.constant_fan_in for _, layer in method.layers)
    if gamma_sal == 0.0:
        assert not any(ablated)
    if gamma_sal == 0.95:
        assert any(ablated)


def test_srigl_never_ablates_the_last_layer_and_fan_in_option():
    method = get_method("srigl", fan_in=8, delta_t=4, gamma_sal=0.95)
    train(method, steps=40)
    names = [name for name, _ in method.layers]
    assert len(names) == 3 and method.ablated[names[-1]] == 0 and method.ablated[names[0]] > 0
    last = dict(method.layers)[names[-1]]
    assert last.weight.constant_fan_in and np.all(last.weight.row_lengths() == 8)


def one_layer(fmt, values, mask):
    """A model that is one sparse linear layer, with these weights."""
    dense = np.where(mask, values, 0).astype(np.float64)
    weight = (CSR if fmt == "csr" else Masked).from_dense(dense, mask=mask)
    return Sequential(SparseLinear(mask.shape[1], mask.shape[0], weight=weight, bias=False))


@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_rigl_drops_smallest_and_grows_largest_gradient(fmt, rng):
    shape = (8, 12)
    mask = rng.random(shape) < 0.4
    values = rng.normal(size=shape)
    model = one_layer(fmt, values, mask)
    method = get_method("rigl", sparsity=0.5, format=fmt)
    method.setup(model, None, None, 100)
    method.optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    (name, layer), = method.layers
    G, X = rng.normal(size=(shape[0], 5)), rng.normal(size=(shape[1], 5))
    layer.growth_arrays = (G, X)
    k = int(0.3 * mask.sum())
    method.update_layer(name, layer, 0.3)
    # the rule, densely: keep all but the k smallest |w|; grow the k largest |G X^T| elsewhere
    magnitude = np.where(mask, np.abs(values), np.inf)
    kept = mask & (magnitude > np.sort(magnitude.ravel())[k - 1])
    score = np.where(kept, -np.inf, np.abs(G @ X.T))
    grown = score >= np.sort(score.ravel())[-k]
    assert np.array_equal(layer.weight.mask(), kept | grown)
    expected = np.where(kept | (grown & mask), values, 0)   # regrown-after-drop keeps its value
    np.testing.assert_array_equal(layer.weight.to_dense(), expected)


def test_set_drops_zeta_of_each_sign_closest_to_zero(rng):
    values = np.concatenate([-rng.uniform(0.1, 1, 60), rng.uniform(0.1, 1, 40)])
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :10] = True
    dense = np.zeros((10, 20))
    dense[mask] = rng.permutation(values)
    model = one_layer("csr", dense, mask)
    method = get_method("set", sparsity=0.5, zeta=0.3)
    method.setup(model, None, None, 100)
    (name, layer), = method.layers
    drop = lowest_units(method.drop_scores(layer), int(0.3 * 100))
    dropped = layer.weight.values[drop]
    neg, pos = np.sort(values[values < 0]), np.sort(values[values > 0])
    assert np.array_equal(np.sort(dropped[dropped < 0]), neg[-18:])      # 30 % of 60 negatives
    assert np.array_equal(np.sort(dropped[dropped > 0]), pos[:12])       # 30 % of 40 positives


def test_schedule_fraction_and_gradients_kept_only_for_updates():
    method = get_method("rigl", sparsity=0.9, delta_t=5, t_end=30, alpha=0.4)
    kept = []
    model = tiny_model()
    original = method.after_step

    def watch(step):
        kept.append(all(layer.keep_for_growth for _, layer in method.layers))
        original(step)
    method.after_step = watch
    train(method, steps=40, model=model)
    assert [u["step"] for u in method.updates] == [5, 10, 15, 20, 25]
    for u in method.updates:
        assert u["fraction"] == pytest.approx(0.2 * (1 + math.cos(math.pi * u["step"] / 30)))
    assert [i for i, k in enumerate(kept) if k] == [5, 10, 15, 20, 25]
    assert all(layer.growth_arrays is None for _, layer in method.layers)


def test_epoch_schedule_updates_after_every_epoch_but_the_last():
    method = get_method("set", sparsity=0.9, delta_t="epoch", t_end=1.0, decay="constant")
    method.setup(tiny_model(), None, [None] * 5, 20)          # a loader of 5 batches
    assert [s for s in range(20) if method.is_update_step(s)] == [4, 9, 14]
    assert method.drop_fraction(14) == 0.3


def test_extra_flops_count_the_dense_gradient_on_update_steps():
    method = get_method("rigl", sparsity=0.9, delta_t=5)
    extra = []
    original = method.after_step

    def watch(step):
        nnz = {name: layer.weight.nnz for name, layer in method.layers}
        original(step)
        expected = sum(2 * (layer.weight.shape[0] * layer.weight.shape[1] - nnz[name]) * 32
                       for name, layer in method.layers) if step in (5, 10, 15, 20, 25) else 0
        extra.append((method.extra_flops(), expected))
    method.after_step = watch
    train(method, steps=40)
    assert all(got == want for got, want in extra) and any(want for _, want in extra)
    set_method = get_method("set", sparsity=0.9, delta_t=5)
    train(set_method, steps=12)
    assert set_method.extra_flops() == 0


def test_static_never_changes_and_starts_like_rigl():
    static = get_method("static", sparsity=0.9)
    model = tiny_model()
    static.setup(model, None, None, 10)
    masks = [layer.weight.mask() for _, layer in static.layers]
    rigl = get_method("rigl", sparsity=0.9)
    rigl.setup(tiny_model(), None, None, 10)
    assert all(np.array_equal(m, layer.weight.mask()) for m, (_, layer) in zip(masks, rigl.layers))
    assert static.topology_changed() is False and static.extra_flops() == 0


def test_set_epsilon_gives_erdos_renyi_densities():
    method = get_method("set", epsilon=5)
    method.setup(tiny_model(), None, None, 10)
    for _, layer in method.layers:
        n_out, n_in = layer.weight.shape
        assert layer.weight.density == pytest.approx(5 * (n_in + n_out) / (n_in * n_out), abs=1e-3)
    assert method.describe()["epsilon"] == 5 and 0 < method.sparsity < 1


@pytest.mark.parametrize("name,options,match", [
    ("rigl", {"alpha": 0}, "alpha"), ("rigl", {"alpha": 1.0}, "alpha"),
    ("rigl", {"alpha": -0.2}, "alpha"), ("rigl", {"alpha": True}, "alpha"),
    ("set", {"zeta": 1.5}, "zeta"), ("rigl", {"delta_t": 0}, "delta_t"),
    ("rigl", {"delta_t": -100}, "delta_t"), ("rigl", {"delta_t": 2.5}, "delta_t"),
    ("rigl", {"delta_t": "weekly"}, "delta_t"), ("rigl", {"t_end": 0.0}, "t_end"),
    ("rigl", {"t_end": 1.5}, "t_end"), ("rigl", {"t_end": -3}, "t_end"),
    ("rigl", {"t_end": "end"}, "t_end"),
    ("rigl", {"decay": "exponential"}, "decay"), ("srigl", {"format": "block"}, "format"),
    ("srigl", {"format": "nm"}, "format"), ("srigl", {"gamma_sal": 1.0}, "gamma_sal"),
    ("srigl", {"fan_in": 0}, "fan_in"), ("srigl", {"fan_in": 8, "sparsity": 0.9}, "fan_in"),
    ("set", {"epsilon": 20, "sparsity": 0.9}, "epsilon"),
    ("set", {"epsilon": 20, "distribution": "erk"}, "distribution"),
    ("set", {"epsilon": -1}, "epsilon"), ("rigl", {"chunk_rows": 0}, "chunk_rows"),
])
def test_bad_options_are_refused_at_construction(name, options, match):
    with pytest.raises(ValueError, match=match):
        get_method(name, **options)


@pytest.mark.parametrize("name,options,match", [
    ("rigl", {"sparsity": 0.9, "t_end": 1000}, "beyond the end of training"),
    ("srigl", {"fan_in": 30}, "larger than the 24 inputs"),
    ("rigl", {"sparsity": 0.9, "format": "nm"}, "cannot be represented"),
    ("set", {"sparsity": 0.99, "format": "block", "block_size": 8, "dense_layers": ["last"]},
     "cannot represent"),
    ("rigl", {"sparsity": 0.0}, "sparsity must be in"),
    ("set", {"sparsity": 0.9, "delta_t": "epoch"}, "loader"),
])
def test_bad_setups_are_refused(name, options, match):
    with pytest.raises(ValueError, match=match):
        get_method(name, **options).setup(tiny_model(), None, None, 100)


@pytest.mark.parametrize("name", ["static", "set", "rigl", "srigl"])
def test_train_records_each_method(name, fast_mode):
    config = TrainConfig(model="mlp:784-64-32-10", method=name, sparsity=0.9, epochs=1,
                         data="subset", progress=False, method_options={"delta_t": 2})
    if name == "static":
        config.method_options = {}
    model, record = train_model(config, log=None)
    assert record["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert 0 < record["flops"]["training_relative"] < 1
    if name != "static":
        details = record["method_details"]
        assert details["n_updates"] == 2 and details["delta_t"] == 2
    if name in ("rigl", "srigl"):       # update steps pay for a dense gradient
        assert record["flops"]["training_relative"] > record["flops"]["inference_relative"]
