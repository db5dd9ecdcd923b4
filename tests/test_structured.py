"""Structured pruning: the surgery (`shrink`) is exact, the counts are right, bad input fails."""
import copy
import json

import numpy as np
import pytest

import sparsenet
from sparsenet import cli, metrics
from sparsenet.algorithms import get_method
from sparsenet.algorithms.structured import Structured, select_neurons, shrink, weighted_chain
from sparsenet.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, build_model
from sparsenet.nn.sparse_layers import SparseLinear
from sparsenet.tensor import Tensor, no_grad
from sparsenet.train import TrainConfig, train_model


def float64_model(spec, rng):
    """A model in float64 with random nonzero biases (so a forgotten bias would show)."""
    model = build_model(spec, rng=rng)
    for name, layer, _ in weighted_chain(model):
        layer.weight.data = layer.weight.data.astype(np.float64)
        layer.bias.data = rng.normal(size=layer.bias.shape)
    return model


def masked_copy(model, keep):
    """The original model with the removed neurons' rows and biases set to zero."""
    masked = copy.deepcopy(model)
    layers = dict(masked.named_modules())
    for name, kept in keep.items():
        layer = layers[name]
        removed = np.setdiff1d(np.arange(layer.weight.shape[0]), kept)
        layer.weight.data[removed] = 0.0
        layer.bias.data[removed] = 0.0
    return masked


def logits(model, x):
    with no_grad():
        return model(Tensor(x)).data


@pytest.mark.parametrize("spec", ["lenet300", "mlp:784-64-32-10", "conv2", "lenet5"])
def test_shrunk_model_computes_what_the_masked_model_computes(spec, rng):
    model = float64_model(spec, rng)
    keep = {}
    for name, layer, _ in weighted_chain(model)[:-1]:        # random kept sets, in random order
        n = layer.weight.shape[0]
        keep[name] = rng.permutation(n)[: max(1, n // 3)]
    small = shrink(model, keep)
    x = rng.normal(size=(4, 1, 28, 28))
    expected = logits(masked_copy(model, keep), x)
    np.testing.assert_allclose(logits(small, x), expected, rtol=1e-12, atol=1e-12)
    # the layers really shrank: hidden outputs = kept counts
    for name, layer, _ in weighted_chain(small)[:-1]:
        assert layer.weight.shape[0] == len(keep[name]) == layer.bias.shape[0]
    assert small.num_parameters() < model.num_parameters()


def test_shrink_leaves_the_model_unchanged(rng):
    model = float64_model("mlp:784-64-32-10", rng)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    shrink(model, {"1": [0, 5, 7]})
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert model.spec == "mlp:784-64-32-10"


def test_lenet300_counts_by_hand():
    # 784-300-100-10 -> 784-150-50-10:
    # weights 784*300 + 300*100 + 100*10 = 266,200 -> 784*150 + 150*50 + 50*10 = 125,600;
    # FLOPs per sample = 2 * weights for an MLP (one output position per layer)
    model = build_model("lenet300")
    small = shrink(model, select_neurons(model, 0.5))
    shapes = [tuple(m.weight.shape) for _, m, _ in weighted_chain(small)]
    assert shapes == [(150, 784), (50, 150), (10, 50)]
    for m, before, after in ((model, 266_200, 532_400), (small, 125_600, 251_200)):
        positions = metrics.layer_positions(m, (1, 28, 28))
        assert metrics.sparsity_summary(m)["weights_stored"] == before
        assert metrics.forward_flops(m, positions)[0] == after
    assert small.spec == "mlp:784-150-50-10"       # a plain MLP can be rebuilt from its spec


def test_lenet5_channel_counts():
    # conv 20@5x5 -> 10, conv 50@5x5 -> 25 (reads 10 channels), fc 800 -> 400 inputs (25 * 4 * 4)
    model = build_model("lenet5")
    small = shrink(model, select_neurons(model, 0.5))
    shapes = [tuple(m.weight.shape) for _, m, _ in weighted_chain(small)]
    assert shapes == [(10, 1, 5, 5), (25, 10, 5, 5), (250, 400), (10, 250)]
    assert small.spec is None                      # a conv net: loading needs the caller's model


def test_select_neurons_removes_the_smallest_norms():
    # row 0 = [3, 0, 0, 0]: L1 3, L2 3;  row 1 = [1, 1, 1, 1]: L1 4, L2 2;  row 2 large
    model = Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    model[0].weight.data = np.array([[3, 0, 0, 0], [1, 1, 1, 1], [5, 5, 5, 5]], np.float32)
    assert select_neurons(model, 0.34, "l1")["0"].tolist() == [1, 2]   # floor(0.34 * 3) = 1
    assert select_neurons(model, 0.34, "l2")["0"].tolist() == [0, 2]
    assert select_neurons(model, 0.0)["0"].tolist() == [0, 1, 2]
    assert "2" not in select_neurons(model, 0.5)                        # the output layer stays


def test_conv_pool_conv_and_flatten_mapping():
    # channel c of the last conv feeds the Linear's inputs [c*4, (c+1)*4) after a 2x2 pool on 4x4
    model = Sequential(Conv2d(1, 3, 3, padding=1), MaxPool2d(2), Conv2d(3, 2, 1), ReLU(),
                       MaxPool2d(2), Flatten(), Linear(2 * 2 * 2, 5), Linear(5, 2))
    small = shrink(model, {"2": [1]})
    np.testing.assert_array_equal(small[6].weight.data, model[6].weight.data[:, 4:8])
    np.testing.assert_array_equal(small[2].weight.data, model[2].weight.data[1:2])


@pytest.mark.parametrize("keep, words", [
    ({"1": []}, "every neuron"), ({"1": [0, 300]}, r"outside \[0, 300\)"),
    ({"1": [-1, 2]}, "outside"), ({"1": [3, 3]}, "duplicate"), ({"1": [0.5]}, "integer"),
    ({"5": [0, 1]}, "output layer"), ({"7": [0]}, "not a hidden"),
])
def test_shrink_rejects_bad_keep(keep, words):
    with pytest.raises((ValueError, TypeError), match=words):
        shrink(build_model("lenet300"), keep)


def test_bad_models_and_options():
    with pytest.raises(ValueError, match="no hidden neuron"):
        select_neurons(build_model("mlp:784-10"), 0.5)
    with pytest.raises(ValueError, match="nothing to prune"):
        select_neurons(Sequential(ReLU()), 0.5)
    with pytest.raises(TypeError, match="dense Linear and Conv2d"):
        select_neurons(Sequential(SparseLinear(4, 3, sparsity=0.5), Linear(3, 2)), 0.5)
    with pytest.raises(TypeError, match="Conv2d fed by a Linear"):
        weighted_chain(Sequential(Linear(4, 4), Conv2d(1, 1, 1)))
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            select_neurons(build_model("lenet300"), bad)
        with pytest.raises(ValueError, match="sparsity"):
            Structured(sparsity=bad)
    with pytest.raises(ValueError, match="norm"):
        select_neurons(build_model("lenet300"), 0.5, norm="l3")
    with pytest.raises(ValueError, match="norm"):
        get_method("structured", sparsity=0.5, norm="linf")
    with pytest.raises(ValueError, match="format"):
        get_method("structured", sparsity=0.5, format="csr")
    with pytest.raises(ValueError, match="finetune_epochs"):
        Structured(finetune_epochs=-1)


def test_cli_end_to_end_record_and_saved_model(fast_mode, tmp_path):
    record_path, model_path = tmp_path / "run.json", tmp_path / "model.safetensors"
    assert cli.main(["train", "--method", "structured", "--sparsity", "0.5", "--data", "subset",
                     "--epochs", "3", "--no-progress", "--json", str(record_path),
                     "--save", str(model_path)]) == 0
    record = json.loads(record_path.read_text())
    s = record["structured"]
    assert (s["params_before"], s["params_after"]) == (266_200, 125_600)
    assert (s["flops_before"], s["flops_after"]) == (532_400, 251_200)
    assert s["kept_per_layer"] == {"1": {"kept": 150, "total": 300},
                                   "3": {"kept": 50, "total": 100}, "5": {"kept": 10, "total": 10}}
    assert sorted(len(v) for v in s["kept_indices"].values()) == [50, 150]
    for key in ("accuracy_before", "accuracy_after_prune", "accuracy_after_finetune"):
        assert 0.1 < s[key] <= 1.0
    assert s["accuracy_after_finetune"] == record["test_accuracy"]
    assert record["parameters"] == 125_600 and record["parameters_dense"] == 266_200
    assert record["density"] == pytest.approx(125_600 / 266_200)
    assert record["flops"]["inference_relative"] == pytest.approx(251_200 / 532_400)
    assert record["flops"]["training_relative"] < 1.0           # fine-tuning ran on the small model
    assert record["epochs"] == 4                                # fast mode: 2 dense + 2 fine-tune
    assert [h["phase"] for h in record["history"]] == ["dense"] * 2 + ["finetune"] * 2
    loaded = sparsenet.load(model_path)                         # rebuilt from "mlp:784-150-50-10"
    assert [tuple(m.weight.shape) for _, m, _ in weighted_chain(loaded)] == \
        [(150, 784), (50, 150), (10, 50)]


def test_conv_model_saves_and_loads_into_a_shrunk_model(tmp_path, rng):
    model = build_model("lenet5", rng=rng)
    keep = select_neurons(model, 0.5, "l2")
    small = shrink(model, keep)
    path = tmp_path / "lenet5.safetensors"
    sparsenet.save(small, path)
    with pytest.raises(ValueError, match="no model spec"):
        sparsenet.load(path)
    loaded = sparsenet.load(path, shrink(build_model("lenet5"), keep))
    x = rng.normal(size=(2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(logits(loaded, x), logits(small, x))


def test_no_finetune_and_group_lasso_before_pruning(fast_mode):
    config = TrainConfig(model="mlp:784-64-32-10", method="structured", sparsity=0.25,
                         data="subset", progress=False,
                         method_options={"finetune_epochs": 0, "group_lasso": 1e-3})
    model, record = train_model(config, log=None)
    s = record["structured"]
    assert s["finetune_epochs"] == 0 and record["epochs"] == 2
    assert s["accuracy_after_finetune"] == s["accuracy_after_prune"]
    assert s["kept_per_layer"]["1"] == {"kept": 48, "total": 64}
    assert record["method_details"]["group_lasso"] == 1e-3
