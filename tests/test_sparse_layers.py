"""SparseLinear and SparseConv2d: gradients, the masked twin, no dense weight in backward,
topology changes with optimizer state, state dicts, save/load and sparsify."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import sparsenet as sn
from sparsenet import Tensor
from sparsenet.nn import functional as F
from sparsenet.nn.layers import Linear
from sparsenet.nn.sparse_layers import (SparseConv2d, SparseConv2dFunction, SparseLinear,
                                        SparseLinearFunction)
from sparsenet.optim import SGD, Adam
from sparsenet.sparse import CSR, NM, Block, random_empty_units, sparsify

FORMATS = {"csr": {}, "block": {"block_size": 2}, "nm": {"n": 2, "m": 4}, "masked": {}}


def linear(fmt, in_features=8, out_features=6, seed=0, **kwargs):
    return SparseLinear(in_features, out_features, format=fmt, dtype=np.float64,
                        rng=np.random.default_rng(seed), **FORMATS[fmt], **kwargs)


# ----- gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_linear_gradients_match_central_differences(fmt, gradcheck, rng):
    layer = linear(fmt, density=None if fmt == "nm" else 0.5)
    W = layer.weight
    fn = lambda x, v, b: SparseLinearFunction.apply(x, v, b, weight=W)  # noqa: E731
    assert gradcheck(fn, [rng.standard_normal((3, 8)), W.values.copy(), rng.standard_normal(6)])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_conv_gradients_match_central_differences(fmt, gradcheck, rng):
    layer = SparseConv2d(2, 4, 2, stride=1, padding=1, format=fmt, dtype=np.float64,
                         density=None if fmt == "nm" else 0.5, rng=rng, **FORMATS[fmt])
    W = layer.weight
    fn = lambda x, v: SparseConv2dFunction.apply(  # noqa: E731
        x, v, weight=W, kernel=(2, 2), stride=(1, 1), padding=(1, 1))
    assert gradcheck(fn, [rng.standard_normal((2, 2, 3, 3)), W.values.copy()])


def run(layer, x):
    """Forward and backward of sum(out * fixed weights); returns (out, x.grad)."""
    xt = Tensor(x.copy(), requires_grad=True)
    out = layer(xt)
    (out * Tensor(np.linspace(-1, 1, out.size).reshape(out.shape))).sum().backward()
    return out.data, xt.grad


@pytest.mark.parametrize("fmt", ["csr", "block", "nm"])
def test_layer_equals_its_masked_dense_twin(fmt, rng):
    layer = linear(fmt, density=None if fmt == "nm" else 0.5)
    layer.bias.data[:] = rng.standard_normal(6)
    twin = SparseLinear(8, 6, weight=layer.weight.to_masked())
    twin.bias.data[:] = layer.bias.data
    x = rng.standard_normal((5, 8))
    out, gx = run(layer, x)
    twin_out, twin_gx = run(twin, x)
    np.testing.assert_allclose(out, twin_out, atol=1e-10)
    np.testing.assert_allclose(gx, twin_gx, atol=1e-10)
    rows, cols = layer.weight.coords()
    dense_grad = twin.values.grad.reshape(6, 8)
    np.testing.assert_allclose(layer.values.grad, dense_grad[rows, cols], atol=1e-10)
    assert (dense_grad[~twin.weight.mask()] == 0).all()              # masked gradient
    np.testing.assert_allclose(layer.bias.grad, twin.bias.grad, atol=1e-10)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_conv_equals_dense_conv_with_the_masked_weight(fmt, rng):
    layer = SparseConv2d(4, 4, 3, stride=2, padding=1, format=fmt, dtype=np.float64,
                         density=None if fmt == "nm" else 0.4, rng=rng, **FORMATS[fmt])
    layer.bias.data[:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 4, 7, 6))
    out, gx = run(layer, x)
    dense_w = Tensor(layer.weight.to_dense().reshape(4, 4, 3, 3), requires_grad=True)
    bias = Tensor(layer.bias.data.copy(), requires_grad=True)
    xt = Tensor(x.copy(), requires_grad=True)
    ref = F.conv2d(xt, dense_w, bias, stride=2, padding=1)
    (ref * Tensor(np.linspace(-1, 1, ref.size).reshape(ref.shape))).sum().backward()
    np.testing.assert_allclose(out, ref.data, atol=1e-10)
    np.testing.assert_allclose(gx, xt.grad, atol=1e-10)
    rows, cols = layer.weight.coords()
    expected = dense_w.grad.reshape(4, -1)[rows, cols] * layer.weight.mask()[rows, cols]
    np.testing.assert_allclose(layer.values.grad, expected, atol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, bias.grad, atol=1e-10)


@pytest.mark.parametrize("cls", [CSR, Block, NM])
def test_forward_and_backward_never_build_the_dense_weight(cls, monkeypatch, rng):
    fmt = {CSR: "csr", Block: "block", NM: "nm"}[cls]
    layer = linear(fmt, density=None if fmt == "nm" else 0.5)
    conv = SparseConv2d(2, 4, 2, format=fmt, dtype=np.float64, rng=rng,
                        density=None if fmt == "nm" else 0.5, **FORMATS[fmt])

    def forbidden(self, *args, **kwargs):
        raise AssertionError("the dense weight was built")
    monkeypatch.setattr(cls, "to_dense", forbidden)
    monkeypatch.setattr(cls, "mask", forbidden)
    run(layer, rng.standard_normal((3, 8)))
    run(conv, rng.standard_normal((2, 2, 4, 4)))
    assert layer.values.grad is not None and conv.values.grad is not None


def test_activations_stay_feature_major_between_layers(rng):
    first, second = linear("csr", 8, 6, density=0.5), linear("csr", 6, 3, density=0.5)
    hidden = first(Tensor(rng.standard_normal((4, 8))))
    assert hidden.shape == (4, 6) and hidden.data.T.flags.c_contiguous   # a view of (out, batch)
    assert second(hidden).shape == (4, 3)


def test_input_gradient_is_skipped_when_not_needed(rng, monkeypatch):
    layer = linear("csr", density=0.5)
    calls = []
    monkeypatch.setattr(CSR, "spmm_t", lambda *a, **k: calls.append(1))
    layer(Tensor(rng.standard_normal((3, 8)))).sum().backward()
    assert calls == [] and layer.values.grad is not None


# ----- construction ------------------------------------------------------------------------
def test_construction_density_and_init_scale():
    layer = SparseLinear(1000, 50, density=0.1, rng=np.random.default_rng(0))
    assert layer.weight.nnz == 5000 and layer.values.shape == (5000,)
    rows, _ = layer.weight.coords()
    fan_in = layer.weight.row_lengths()[rows]                 # each neuron's stored inputs
    assert (np.abs(layer.values.data) <= np.sqrt(2) * np.sqrt(3 / fan_in)).all()
    assert (layer.values.data ** 2 * fan_in).mean() == pytest.approx(2, rel=0.1)  # Var = 2/fan_in
    dense_scaled = SparseLinear(1000, 50, density=0.1, init_fan_in="dense",
                                rng=np.random.default_rng(0))
    assert np.abs(dense_scaled.values.data).max() <= np.sqrt(2) * np.sqrt(3 / 1000)
    fan = SparseLinear(20, 7, sparsity=0.75, constant_fan_in=True)
    assert (fan.weight.row_lengths() == 5).all()
    assert SparseLinear(8, 4, format="nm").weight.density == 0.5
    assert linear("csr").weight.density == pytest.approx(0.1, abs=0.02)       # default 90 %
    with pytest.raises(ValueError, match="not both"):
        SparseLinear(8, 4, sparsity=0.5, density=0.5)
    with pytest.raises(ValueError, match="has density 0.5"):
        SparseLinear(8, 4, format="nm", sparsity=0.9)
    with pytest.raises(ValueError, match="format must be one of"):
        SparseLinear(8, 4, format="coo")
    with pytest.raises(ValueError, match="weight has shape"):
        SparseLinear(8, 4, weight=CSR.from_dense(np.ones((8, 4))))
    text = repr(linear("block", density=0.5))
    assert "format=block" in text and "density=0.5000" in text and "nnz=24" in text


def test_sparse_config_is_json_and_rebuilds_the_layer():
    conv = SparseConv2d(2, 4, (3, 2), stride=2, padding=1, format="nm", n=1, m=2)
    config = json.loads(json.dumps(conv.sparse_config()))
    again = SparseConv2d.from_config(config)
    assert again.sparse_config() == conv.sparse_config()
    layer = linear("csr", constant_fan_in=True, density=0.25)
    rebuilt = SparseLinear.from_config(json.loads(json.dumps(layer.sparse_config())))
    assert rebuilt.weight.constant_fan_in


# ----- topology changes and the optimizer ---------------------------------------------------
def train_steps(layer, optimizer, x, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        out = layer(Tensor(x))
        (out * out).sum().backward()
        optimizer.step()


def drop_and_grow(layer, n_drop, rng):
    W = layer.weight
    scores = np.abs(W.unit_scores(W.values))
    drop = np.zeros(W.n_units, dtype=bool)
    drop[np.argsort(scores, kind="stable")[:n_drop]] = True
    rows, cols, _ = random_empty_units(W, n_drop, rng, dropped=drop)
    return W.update(drop, rows, cols)


@pytest.mark.parametrize("fmt", ["csr", "masked"])
@pytest.mark.parametrize("make_opt", [lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1),
                                      lambda p: Adam(p, lr=0.05, weight_decay=0.1)])
def test_optimizer_state_follows_the_weights(fmt, make_opt, rng):
    layer = linear(fmt, density=0.5)
    optimizer = make_opt(layer.parameters())
    x = rng.standard_normal((4, 8))
    train_steps(layer, optimizer, x, 3)
    state = optimizer.state[id(layer.values)]
    old = {k: v.copy() for k, v in state.items() if k != "step"}
    new, new_from_old = drop_and_grow(layer, 6, np.random.default_rng(1))
    param = layer.values
    layer.set_topology(new, new_from_old, optimizer=optimizer)
    assert layer.values is param and optimizer.param_groups[0]["params"][0] is param
    assert param.data is new.values and layer.weight is new
    kept = new_from_old >= 0
    for name, before in old.items():
        np.testing.assert_array_equal(state[name][kept], before[new_from_old[kept]])
        assert (state[name][~kept] == 0).all()
    grown_at = ~kept if fmt == "csr" else (~kept & new.mask().ravel())
    assert (param.data[grown_at] == 0).all()
    pruned = ~new.mask().ravel()
    train_steps(layer, optimizer, x, 5)
    if fmt == "masked":                 # dropped weights stay exactly zero: no momentum, no decay
        assert (layer.values.data[pruned] == 0).all()
    assert layer.weight.nnz == new.nnz


def test_a_regrown_weight_starts_from_zero_state(rng):
    layer = linear("csr", density=0.5)
    optimizer = SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    x = rng.standard_normal((4, 8))
    train_steps(layer, optimizer, x, 3)
    W = layer.weight
    drop = np.zeros(W.nnz, dtype=bool)
    drop[0] = True
    rows, cols = W.coords()
    new, new_from_old = W.update(drop, rows[:1], cols[:1])              # dropped and regrown
    layer.set_topology(new, new_from_old, optimizer)
    optimizer.zero_grad()
    out = layer(Tensor(x))
    (out * out).sum().backward()
    grad = layer.values.grad[0]
    optimizer.step()
    assert layer.values.data[0] == pytest.approx(-0.1 * grad, abs=1e-15)   # no old momentum


def test_csr_and_masked_train_identically_through_a_topology_change(rng):
    csr = linear("csr", density=0.5, keep_for_growth=True)
    masked = SparseLinear(8, 6, weight=csr.weight.to_masked(), keep_for_growth=True)
    masked.bias.data[:] = csr.bias.data
    opts = [SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01) for m in (csr, masked)]
    x = rng.standard_normal((5, 8))
    for layer, opt in zip((csr, masked), opts):
        train_steps(layer, opt, x, 3)
        W = layer.weight
        drop = np.zeros(W.n_units, dtype=bool)
        drop[np.argsort(np.abs(W.unit_scores(W.values)), kind="stable")[:5]] = True
        rows, cols, _ = layer.dense_grad_topk(k=5, dropped=drop)
        layer.set_topology(*W.update(drop, rows, cols), optimizer=opt)
        train_steps(layer, opt, x, 3)
    np.testing.assert_array_equal(csr.weight.mask(), masked.weight.mask())
    np.testing.assert_allclose(csr.weight.to_dense(), masked.weight.to_dense(), atol=1e-10)


def test_set_topology_rejects_a_mismatch_and_changes_nothing(rng):
    layer = linear("csr", density=0.5)
    before = layer.values.data
    with pytest.raises(ValueError, match="new_weight must be a CSR"):
        layer.set_topology(layer.weight.to_masked(), np.arange(48))
    with pytest.raises(ValueError, match="new_from_old must be an integer array"):
        layer.set_topology(layer.weight, np.arange(3))
    assert layer.values.data is before


def test_growth_uses_kept_arrays_only_when_asked(rng):
    x = rng.standard_normal((4, 8))
    plain = linear("nm")
    run(plain, x)
    assert plain.growth_arrays is None
    with pytest.raises(RuntimeError, match="keep_for_growth"):
        plain.dense_grad_topk(k=1)
    kept = linear("nm", keep_for_growth=True)
    xt = Tensor(x, requires_grad=False)
    out = kept(xt)
    grad_out = np.ones(out.shape)
    out.backward(grad_out)
    counts = np.ones(kept.weight.n_groups, dtype=np.int64)
    a = kept.dense_grad_topk(k=counts)
    b = kept.dense_grad_topk(grad_out, x, counts)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    conv = SparseConv2d(2, 4, 3, padding=1, density=0.5, dtype=np.float64, rng=rng,
                        keep_for_growth=True)
    images = rng.standard_normal((2, 2, 5, 5))
    out = conv(Tensor(images))
    grad_out = rng.standard_normal(out.shape)
    out.backward(grad_out)
    rows, cols, scores = conv.dense_grad_topk(k=4)
    dense_grad = np.abs(np.einsum("bohw,bchwij->ocij", grad_out, np.lib.stride_tricks
                                  .sliding_window_view(np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1))),
                                                       (3, 3), axis=(2, 3)))).reshape(4, -1)
    np.testing.assert_allclose(scores, dense_grad[rows, cols])
    np.testing.assert_array_equal(conv.dense_grad_topk(grad_out, images, 4)[0], rows)
    assert not conv.weight.mask()[rows, cols].any()


# ----- state, save and load ------------------------------------------------------------------
def test_state_dict_loads_a_different_topology(rng):
    source, target = linear("csr", density=0.5, seed=1), linear("csr", density=0.2, seed=2)
    target.load_state_dict(source.state_dict())
    assert target.weight.nnz == source.weight.nnz
    x = rng.standard_normal((3, 8))
    np.testing.assert_array_equal(run(target, x)[0], run(source, x)[0])
    assert set(source.state_dict()) == {"values", "bias", "indptr", "indices"}
    assert set(linear("nm").state_dict()) == {"values", "bias", "idx"}
    assert set(linear("masked").state_dict()) == {"values", "bias", "mask"}


def test_invalid_state_is_rejected_before_anything_changes(rng):
    model = sn.nn.Sequential(linear("csr", density=0.5), linear("block", 6, 4, density=0.5))
    before = model.state_dict()
    bad = dict(before)
    bad["0.values"] = bad["0.values"] * 2
    # 3 blocks in 2 block rows: some row holds two, which all-zero indices make a duplicate
    bad["1.indices"] = np.zeros_like(bad["1.indices"])
    with pytest.raises(ValueError, match="1.*invalid|sorted|duplicate"):
        model.load_state_dict(bad)
    for name, arr in model.state_dict().items():
        np.testing.assert_array_equal(arr, before[name])


@pytest.mark.parametrize("fmt, options", [("csr", {}), ("block", {"block_size": 4}),
                                          ("nm", {"n": 2, "m": 4}), ("masked", {})])
def test_save_and_load_a_sparsified_lenet300(fmt, options, tmp_path, rng):
    model = sparsify(sn.nn.build_model("lenet300"), sparsity=None if fmt == "nm" else 0.9,
                     format=fmt, keep_dense=("last",) if fmt == "block" else (), **options)
    path = tmp_path / "model.safetensors"
    sn.save(model, path)
    loaded = sn.load(path)
    x = Tensor(rng.standard_normal((3, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    assert repr(loaded) == repr(model)
    if fmt == "csr":
        dense_path = tmp_path / "dense.safetensors"
        sn.save(sn.nn.build_model("lenet300"), dense_path)
        assert os.path.getsize(path) < 0.25 * os.path.getsize(dense_path)


# ----- sparsify ------------------------------------------------------------------------------
def test_sparsify_keeps_dense_values_at_kept_positions():
    model = sn.nn.build_model("lenet300")
    dense = {name: m.weight.data.copy() for name, m in model.named_modules() if isinstance(m, Linear)}
    sparsify(model, sparsity=0.8, density_per_layer={"3": 0.5}, keep_dense=("last",))
    assert isinstance(model[5], Linear) and isinstance(model[1], SparseLinear)
    assert model[1].weight.density == pytest.approx(0.2, abs=1e-3)
    assert model[3].weight.density == pytest.approx(0.5, abs=1e-3)
    for name in ("1", "3"):
        rows, cols = model.get_submodule(name).weight.coords()
        np.testing.assert_array_equal(model.get_submodule(name).values.data, dense[name][rows, cols])


def test_sparsify_from_dense_keeps_the_largest_and_converts_convs(rng):
    model = sn.nn.build_model("lenet5")
    conv_weight = model[0].weight.data.reshape(20, -1).copy()
    sparsify(model, sparsity=0.5, format="masked", from_dense=True)
    assert all(not isinstance(m, (Linear, sn.nn.Conv2d)) for m in model.modules())
    kept = np.abs(conv_weight[model[0].weight.mask()])
    assert kept.min() >= np.abs(conv_weight[~model[0].weight.mask()]).max()
    assert model(Tensor(rng.standard_normal((2, 1, 28, 28)).astype(np.float32))).shape == (2, 10)


def test_sparsify_rejects_bad_requests():
    with pytest.raises(ValueError, match="no Linear or Conv2d layer named"):
        sparsify(sn.nn.build_model("lenet300"), layers=["7"])
    with pytest.raises(ValueError, match="block_size 16 must divide"):
        sparsify(sn.nn.build_model("lenet300"), format="block")
    with pytest.raises(TypeError, match="takes the options"):
        sparsify(sn.nn.build_model("lenet300"), format="csr", block_size=4)
    with pytest.raises(ValueError, match="not sparsified"):
        sparsify(sn.nn.build_model("lenet300"), density_per_layer={"5": 0.5}, keep_dense=("last",))
    with pytest.raises(ValueError, match="has density 0.5"):
        sparsify(sn.nn.build_model("lenet300"), format="nm", sparsity=0.9)


def test_save_and_load_a_sparsified_convnet(tmp_path, rng):
    model = sparsify(sn.nn.build_model("lenet5"), sparsity=0.8, format="csr", constant_fan_in=True)
    path = tmp_path / "lenet5.safetensors"
    sn.save(model, path)
    loaded = sn.load(path)
    assert isinstance(loaded[0], SparseConv2d) and loaded[0].weight.constant_fan_in
    x = Tensor(rng.standard_normal((2, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
