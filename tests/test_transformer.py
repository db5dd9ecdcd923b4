"""The transformer: its spec, causality, gradients end to end, MoE inside it, bad input."""
import numpy as np
import pytest

import sparsenet
from gradcheck import gradcheck
from sparsenet import Tensor
from sparsenet.nn import build_model
from sparsenet.nn import functional as F
from sparsenet.nn.moe import MoE
from sparsenet.nn.transformer import GPTConfig, parse_spec


def test_spec_reads_every_field():
    assert parse_spec("gpt:L4-D128-H4-T64") == GPTConfig(4, 128, 4, 64)
    assert parse_spec("gpt:L4-D128-H4-T64").ffn_hidden == 512
    moe = parse_spec("gpt:L2-D64-H2-T32-E8-K2-B0-P0.1")
    assert (moe.experts, moe.k, moe.ffn_hidden, moe.balance, moe.dropout) == (8, 2, 128, 0.0, 0.1)
    assert moe.capacity_factor is None                          # noisy top-k: dropless
    switch = parse_spec("gpt:L2-D64-H2-T32-E4-K1-switch")
    assert (switch.router, switch.capacity_factor) == ("switch", 1.25)
    assert parse_spec("gpt:L2-D64-H2-T32-E4-K1-switch-dropless").capacity_factor is None
    assert parse_spec("gpt:L2-D64-H2-T32-E4-K1-C2.0-F100").capacity_factor == 2.0


@pytest.mark.parametrize("spec, words", [
    ("gpt:L2-D64-H2", "lacks T"),
    ("gpt:L2-D64-H3-T32", "multiple of the heads"),
    ("gpt:L2-D64-H2-T32-E4", "both E<experts> and K<top-k>"),
    ("gpt:L2-D64-H2-T32-switch", "options of mixture-of-experts"),
    ("gpt:L2-D64-H2-T32-X5", "cannot read 'X5'"),
    ("gpt:L2-D64-H2-T32-L3", "cannot read 'L3'"),
    ("gpt:L2-D64-H2-T32-E4-K1-C1.0-dropless", "not both"),
    ("gpt:L0-D64-H2-T32", "positive"),
])
def test_bad_specs_are_clear_errors(spec, words):
    with pytest.raises(ValueError, match=words):
        parse_spec(spec)


def test_topk_larger_than_experts_and_a_bad_capacity_factor_are_errors():
    with pytest.raises(ValueError, match="larger than the number of experts"):
        build_model("gpt:L1-D16-H2-T8-E4-K5", num_classes=10)
    with pytest.raises(ValueError, match="capacity_factor must be a number > 0"):
        build_model("gpt:L1-D16-H2-T8-E4-K1-C0", num_classes=10)


def tiny(spec="gpt:L2-D16-H2-T8", vocabulary=11):
    sparsenet.manual_seed(0)
    return build_model(spec, num_classes=vocabulary)


def test_logits_shape_and_layer_names():
    model = tiny()
    ids = np.random.default_rng(0).integers(0, 11, (3, 8))
    assert model(ids).shape == (3, 8, 11)
    names = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.ffn.fc1",
                     "blocks.0.ffn.fc2", "blocks.1.attn.qkv", "blocks.1.attn.proj",
                     "blocks.1.ffn.fc1", "blocks.1.ffn.fc2", "head"]


@pytest.mark.parametrize("spec", ["gpt:L2-D16-H2-T8", "gpt:L1-D16-H2-T8-E4-K2"])
def test_no_position_sees_the_future(spec):
    model = tiny(spec)
    model.eval()
    ids = np.random.default_rng(1).integers(0, 11, (2, 8))
    changed = ids.copy()
    changed[:, 5:] = (changed[:, 5:] + 3) % 11
    a, b = model(ids).data, model(changed).data
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_a_shorter_input_is_fine_and_a_longer_one_is_an_error():
    model = tiny()
    assert model(np.zeros((1, 3), np.int64)).shape == (1, 3, 11)
    with pytest.raises(ValueError, match="longer than the model's context of 8"):
        model(np.zeros((1, 9), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        model(np.full((1, 4), 11))                              # a token outside the vocabulary
    with pytest.raises(ValueError, match="integer token ids"):
        model(np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("spec", ["gpt:L1-D8-H2-T4", "gpt:L1-D8-H2-T4-E3-K2"])
def test_gradient_of_the_whole_model_by_central_differences(spec):
    """Every parameter of a tiny model (float64), the MoE balancing losses included."""
    model = tiny(spec, vocabulary=5)
    ids = np.array([[0, 3, 1, 4], [2, 2, 0, 1]])
    targets = np.array([[3, 1, 4, 0], [2, 0, 1, 3]])
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    arrays = [params[n].data.astype(np.float64) + np.random.default_rng(i).normal(0, 0.3,
              params[n].shape) for i, n in enumerate(names)]
    modules = dict(model.named_modules())

    def loss_of(*tensors):
        for name, t in zip(names, tensors):
            owner, _, leaf = name.rpartition(".")
            object.__setattr__(modules[owner], leaf, t)
        sparsenet.manual_seed(5)                       # the same router noise every call
        loss = F.sequence_cross_entropy(model(ids), targets)
        aux = model.aux_loss()
        return loss if aux is None else loss + aux
    assert gradcheck(loss_of, arrays, atol=1e-5)


def test_moe_model_has_experts_in_every_block_and_sums_their_losses():
    model = tiny("gpt:L2-D16-H2-T8-E4-K2")
    moes = model.moe_layers()
    assert [n for n, _ in moes] == ["blocks.0.ffn", "blocks.1.ffn"]
    assert all(isinstance(m, MoE) and m.hidden == 32 for _, m in moes)
    model(np.zeros((2, 8), np.int64))
    total = sum(m.aux_loss.item() for _, m in moes)
    assert model.aux_loss().item() == pytest.approx(total)


def test_dropout_only_in_training():
    model = tiny("gpt:L1-D16-H2-T8-P0.5")
    ids = np.zeros((1, 8), np.int64)
    model.eval()
    np.testing.assert_array_equal(model(ids).data, model(ids).data)
    model.train()
    assert not np.array_equal(model(ids).data, model(ids).data)


def test_a_sparse_transformer_trains_through_sparse_layers():
    model = tiny()
    sparsenet.sparsify(model, sparsity=0.5, layers=["blocks.0.ffn.fc1", "blocks.1.attn.qkv"])
    ids = np.random.default_rng(0).integers(0, 11, (2, 8))
    loss = F.sequence_cross_entropy(model(ids), ids)
    loss.backward()
    assert model.get_submodule("blocks.0.ffn.fc1").values.grad is not None
    assert np.isfinite(loss.item()) and Tensor(loss.data).item() > 0


def test_a_transformer_is_built_dense_and_a_sparse_construction_is_refused():
    with pytest.raises(ValueError, match="built dense"):
        build_model("gpt:L1-D16-H2-T8", num_classes=10, sparsity=0.5)
    from sparsenet.nn.models import architecture
    with pytest.raises(ValueError, match="transformer"):
        architecture("gpt:L1-D16-H2-T8", num_classes=10)
