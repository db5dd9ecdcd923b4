"""Modules: registration, modes, state dicts, safetensors files, named models, initialization."""
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

import sparsenet as sn
from sparsenet import Tensor, nn
from sparsenet.nn import init


def small_net():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(),
                         nn.Sequential(nn.Linear(3, 2, bias=False), nn.Tanh()), nn.Dropout(0.5))


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(2, dtype=np.float32))
        self.body = nn.Linear(2, 2)
        self.register_buffer("mask", np.array([1.0, 0.0], dtype=np.float32))

    def forward(self, x):
        return self.body(x * self.scale) * Tensor(self.mask)


# ----- registration ------------------------------------------------------------------------
def test_named_parameters_in_registration_order():
    names = [name for name, _ in small_net().named_parameters()]
    assert names == ["0.weight", "0.bias", "2.0.weight"]


def test_parameters_are_trainable_leaves():
    params = small_net().parameters()
    assert len(params) == 3
    assert all(isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf for p in params)
    assert small_net().num_parameters() == 4 * 3 + 3 + 3 * 2


def test_custom_module_registers_parameters_modules_and_buffers():
    m = Custom()
    assert [n for n, _ in m.named_parameters()] == ["scale", "body.weight", "body.bias"]
    assert list(m.state_dict()) == ["scale", "mask", "body.weight", "body.bias"]
    m.scale = None                                 # reassigning removes the registration
    assert [n for n, _ in m.named_parameters()] == ["body.weight", "body.bias"]
    del m.body
    assert list(m.parameters()) == []


def test_module_without_super_init_raises():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))
    with pytest.raises(RuntimeError, match="super"):
        Broken()


def test_sequential_rejects_non_modules_and_indexes():
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    net = small_net()
    assert len(net) == 4 and isinstance(net[2], nn.Sequential) and isinstance(net[-1], nn.Dropout)
    assert net.get_submodule("2.0") is net[2][0]


def test_replace_submodule_errors():
    net = small_net()
    with pytest.raises(KeyError):
        net.replace_submodule("7", nn.Linear(3, 2))
    with pytest.raises(KeyError):
        net.get_submodule("2.5")


def test_replace_submodule_keeps_the_layer_order():
    model = nn.build_model("lenet300")
    new = nn.Linear(784, 300)
    model.replace_submodule("1", new)
    assert model[1] is new and list(model._modules) == ["0", "1", "2", "3", "4", "5"]
    with sn.no_grad():
        assert model(Tensor(np.zeros((2, 1, 28, 28), dtype=np.float32))).shape == (2, 10)


def test_backward_reaches_every_parameter():
    net = small_net().eval()
    loss = net(Tensor(np.ones((5, 4), dtype=np.float32))).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_train_and_eval_propagate():
    net = small_net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = Tensor(np.ones((2, 4), dtype=np.float32))
    np.testing.assert_array_equal(net(x).data, net(x).data)     # dropout off in eval
    net.train()
    assert all(m.training for m in net.modules())


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="out_channels"):
        nn.Conv2d(1, 2.5, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)
    with pytest.raises(ValueError, match="init"):
        nn.Linear(2, 2, init="zeros")


# ----- state dicts -------------------------------------------------------------------------
def test_state_dict_round_trip():
    a, b = small_net(), small_net()
    assert not np.array_equal(a[0].weight.data, b[0].weight.data)
    state = a.state_dict()
    b.load_state_dict(state)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    state["0.weight"][:] = 7.0                   # the state dict holds copies
    assert not np.any(a[0].weight.data == 7.0) and not np.any(b[0].weight.data == 7.0)


def test_buffers_round_trip():
    a, b = Custom(), Custom()
    state = a.state_dict()
    state["mask"] = np.array([0.0, 1.0], dtype=np.float32)
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.mask, [0.0, 1.0])
    assert b.state_dict()["mask"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("bad_key, bad_value", [
    ("2.0.weight", np.zeros((3, 2), dtype=np.float32)),     # transposed shape, last entry
    ("0.bias", np.zeros(3, dtype=np.float64)),              # right shape, wrong dtype
], ids=["shape", "dtype"])
def test_load_state_dict_failure_leaves_model_unchanged(bad_key, bad_value):
    net = small_net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    new = {k: v + 1 for k, v in before.items()}              # every other entry is loadable
    new[bad_key] = bad_value
    with pytest.raises(ValueError, match=bad_key.replace(".", r"\.")):
        net.load_state_dict(new)
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)


def test_load_state_dict_strict_keys():
    net = small_net()
    state = net.state_dict()
    missing = {k: v for k, v in state.items() if k != "0.bias"}
    with pytest.raises(KeyError, match="0.bias"):
        net.load_state_dict(missing)
    with pytest.raises(KeyError, match="extra"):
        net.load_state_dict(dict(state, extra=np.zeros(1)))
    missing["0.weight"] = missing["0.weight"] * 0
    net.load_state_dict(missing, strict=False)                # loads what is there
    assert np.all(net[0].weight.data == 0)


# ----- safetensors files -------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    model = nn.build_model("lenet300")
    path = tmp_path / "model.safetensors"
    sn.save(model, path)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    expected = model(x).data

    rebuilt = sn.load(path)                                   # from the spec in the header
    np.testing.assert_array_equal(rebuilt(x).data, expected)
    into = sn.load(path, nn.build_model("lenet300"))         # into a model we hand it
    np.testing.assert_array_equal(into(x).data, expected)

    stored = load_file(str(path))
    assert set(stored) == set(model.state_dict())


def test_saved_file_is_safetensors_not_pickle(tmp_path):
    path = tmp_path / "m.safetensors"
    sn.save(small_net(), path)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and header_len < len(raw)        # length-prefixed JSON header
    assert not raw.startswith(b"\x80")                        # the pickle protocol marker
    assert b"sparsenet" in raw[8:8 + header_len]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        sn.load(tmp_path / "nothing.safetensors")
    path = tmp_path / "anon.safetensors"
    sn.save(small_net(), path)                                # no spec recorded
    with pytest.raises(ValueError, match="spec"):
        sn.load(path)
    with pytest.raises(TypeError, match="Module"):
        sn.save({"w": np.zeros(2)}, path)


# ----- named models ------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["lenet300", "lenet5", "conv2", "conv4", "conv6", "mlp:784-64-10"])
def test_named_models_produce_logits(spec):
    model = nn.build_model(spec)
    assert model.spec == spec
    with sn.no_grad():
        out = model(Tensor(np.zeros((2, 1, 28, 28), dtype=np.float32)))
    assert out.shape == (2, 10) and out.dtype == np.float32


def test_lenet300_shapes():
    shapes = [p.shape for p in nn.build_model("lenet300").parameters()]
    assert shapes == [(300, 784), (300,), (100, 300), (100,), (10, 100), (10,)]


@pytest.mark.parametrize("spec, error", [
    ("resnet50", ValueError), ("mlp:784-x-10", ValueError), ("mlp:784", ValueError),
    ("mlp:784-0-10", ValueError), ("mlp:100-10", ValueError), (300, TypeError),
])
def test_bad_model_specs(spec, error):
    with pytest.raises(error):
        nn.build_model(spec)


# ----- initialization ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["kaiming_uniform", "kaiming_normal"])
def test_kaiming_variance(name):
    w = init.get_init(name)((1000, 1000), rng=np.random.default_rng(0))
    assert w.dtype == np.float32
    # 10^6 draws: the variance estimate is within ~0.2 % (one sigma); allow 3 %
    assert abs(w.var() / (2 / 1000) - 1) < 0.03
    assert abs(w.mean()) < 1e-3


def test_kaiming_fan_in_of_a_convolution():
    w = init.kaiming_normal((256, 64, 3, 3), rng=np.random.default_rng(0))
    assert init.fans(w.shape) == (64 * 9, 256 * 9)
    assert abs(w.var() / (2 / (64 * 9)) - 1) < 0.03


def test_kaiming_uniform_bound():
    w = init.kaiming_uniform((100, 300), rng=np.random.default_rng(0))
    bound = math.sqrt(2) * math.sqrt(3 / 300)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound


def test_glorot_bounds_and_variance():
    w = init.glorot_uniform((400, 600), rng=np.random.default_rng(0))
    bound = math.sqrt(6 / (600 + 400))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    wn = init.glorot_normal((400, 600), rng=np.random.default_rng(0))
    assert abs(wn.var() / (2 / 1000) - 1) < 0.03


def test_init_is_reproducible_from_the_library_seed():
    sn.manual_seed(5)
    a = nn.Linear(3, 4).weight.data
    sn.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(3, 4).weight.data, a)
    with pytest.raises(ValueError, match="seed"):
        sn.manual_seed(-1)


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="2 dimensions"):
        init.fans((5,))
