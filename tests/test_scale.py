"""Sparse at scale (issue 10): a sparse model is built, trained, counted, saved and loaded in
memory proportional to its stored weights, never its dense shape; a model that cannot fit is
refused with an estimate before anything is allocated."""
import tracemalloc

import numpy as np
import pytest

import sparsenet as sn
from sparsenet.limits import TooLarge
from sparsenet.nn import Linear, SparseLinear, build_model
from sparsenet.nn.memory import check_fits, estimate
from sparsenet.nn.models import architecture, weight_shapes
from sparsenet.sparse.distributions import er_density
from sparsenet.train import TrainConfig, eval_batch_size, train_model

WIDE = "mlp:784-20000-20000-20000-10"          # 60,000 hidden neurons, 8.2e8 dense weights


def peak_mib(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def test_a_wide_sparse_model_is_built_without_its_dense_weights():
    model, peak = peak_mib(lambda: build_model(WIDE, epsilon=20))
    layers = [m for m in model.modules() if isinstance(m, (SparseLinear, Linear))]
    assert [type(m) for m in layers] == [SparseLinear] * 3 + [Linear]    # the 10 outputs: dense
    shapes = weight_shapes(architecture(WIDE))
    for (name, shape), layer in zip(shapes.items(), layers[:3]):
        assert layer.weight.nnz == round(er_density(shape, 20) * shape[0] * shape[1])
    stored = sum(m.weight.nnz for m in layers[:3])
    assert peak < 40 * stored * 4 / 2 ** 20 + 50, f"{peak:.0f} MiB for {stored:,} weights"
    # values drawn at each neuron's stored fan-in: Var(w) * fan_in = 2 (Kaiming, ReLU gain)
    w = layers[1].weight
    fan_in = w.row_lengths()[w.coords()[0]]
    assert (layers[1].values.data.astype(np.float64) ** 2 * fan_in).mean() == pytest.approx(2, rel=0.05)


def test_sparsity_distribution_and_density_per_layer_build_the_same_way():
    model = build_model("lenet300", sparsity=0.9, distribution="erk", format="csr")
    stored = sum(m.weight.nnz for m in model.modules() if isinstance(m, SparseLinear))
    dense = sum(m.weight.size for m in model.modules() if type(m) is Linear)
    assert (stored + dense) == pytest.approx(0.1 * (784 * 300 + 300 * 100 + 100 * 10), abs=2)
    explicit = build_model("lenet300", density_per_layer={"1": 0.5}, format="masked")
    assert isinstance(explicit[1], SparseLinear) and explicit[1].format == "masked"
    assert type(explicit[3]) is Linear and type(explicit[5]) is Linear
    with pytest.raises(ValueError, match="one of sparsity, epsilon and density_per_layer"):
        build_model("lenet300", sparsity=0.9, epsilon=20)
    with pytest.raises(ValueError, match="dense_layers names layers"):
        build_model("lenet300", sparsity=0.9, dense_layers=["7"])


def test_sparse_from_scratch_methods_never_build_the_dense_hidden_layers(fast_mode, monkeypatch):
    built = []
    original = Linear.__init__

    def recording(self, in_features, out_features, *args, **kwargs):
        built.append((in_features, out_features))
        original(self, in_features, out_features, *args, **kwargs)
    monkeypatch.setattr(Linear, "__init__", recording)
    model, record = train_model(TrainConfig(model=WIDE, method="set", data="subset", epochs=1,
                                            progress=False, max_steps=2,
                                            method_options={"epsilon": 20}), log=None)
    assert built == [(20000, 10)]                         # only the small output layer
    assert record["steps"] == 2 and record["stopped_early"] and record["build_seconds"] > 0
    assert record["parameters"] == sum(m.weight.nnz for m in model.modules()
                                       if isinstance(m, SparseLinear)) + 20000 * 10
    assert record["method_details"]["sparse_init"] == "auto"
    assert record["method_details"]["sparse_init_used"] is True
    assert eval_batch_size(model) == (64 << 20) // (4 * 20000)


def test_a_wide_sparse_model_saves_and_loads_in_memory_proportional_to_it(tmp_path):
    model = build_model("mlp:784-20000-20000-10", epsilon=20)
    path = tmp_path / "wide.safetensors"
    sn.save(model, path)
    loaded, peak = peak_mib(lambda: sn.load(path))
    assert peak < 3 * path.stat().st_size / 2 ** 20 + 20, f"{peak:.0f} MiB"
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    np.testing.assert_array_equal(loaded(sn.Tensor(x)).data, model(sn.Tensor(x)).data)


def test_a_model_that_cannot_fit_is_refused_with_the_estimate():
    with pytest.raises(TooLarge, match=r"mlp:784-100000000-10.*need about .*GiB.*layer, 1"):
        build_model("mlp:784-100000000-10")                         # dense: 314 GB of weights
    with pytest.raises(TooLarge, match="csr at density"):
        build_model("mlp:784-300000000-300000000-10", epsilon=20)   # sparse, 12e9 weights
    shapes = weight_shapes(architecture(WIDE))
    need = estimate(shapes, {"1": 0.01, "3": 0.001, "5": 0.001, "7": 1.0})
    assert need["1"] == round(0.01 * 784 * 20000) * 28 and need["7"] == 20000 * 10 * 12
    with pytest.raises(TooLarge, match="more than the 1.0 MiB"):
        check_fits(WIDE, shapes, {"1": 0.01, "3": 0.001, "5": 0.001, "7": 1.0},
                   available=2 ** 20)


def test_a_width_whose_dense_weight_would_not_fit_is_fine_sparse():
    wide = "mlp:784-2000000-10"                     # dense: 1.6e9 weights, 19 GB with state
    shapes = weight_shapes(architecture(wide))
    with pytest.raises(TooLarge):
        check_fits(wide, shapes, dict.fromkeys(shapes, 1.0), available=8 << 30)
    model = build_model(wide, density_per_layer={"1": 1e-5, "3": 1e-3})
    assert model[1].weight.nnz == round(1e-5 * 784 * 2_000_000)
