"""SR-STE: the masked forward, the sparse-refined straight-through backward, every model kind,
the final N:M model, and bad options."""
import numpy as np
import pytest

import sparsenet
from sparsenet import Tensor
from sparsenet.algorithms import get_method
from sparsenet.algorithms.sr_ste import SparseRefinedSTE, SRSTELinear, nm_mask
from sparsenet.nn import build_model
from sparsenet.nn import functional as F
from sparsenet.nn.sparse_layers import SparseConv2d, SparseLinear
from sparsenet.sparse import NM


def test_mask_keeps_the_n_largest_of_every_m_ties_to_the_lower_input():
    w = np.array([[0.1, -0.9, 0.5, 0.2, 3.0, 3.0, 3.0, -1.0]])
    np.testing.assert_array_equal(nm_mask(w, 2, 4), [[0, 1, 1, 0, 1, 1, 0, 0]])
    conv = np.random.default_rng(0).standard_normal((3, 2, 2, 2))    # 8 inputs per output
    assert nm_mask(conv, 2, 4).reshape(3, -1, 4).sum(axis=-1).tolist() == [[2, 2]] * 3


def test_forward_masks_and_backward_is_straight_through_plus_the_decay_of_pruned_weights():
    w = np.random.default_rng(1).standard_normal((3, 8))
    g = np.random.default_rng(2).standard_normal((3, 8))
    wt = Tensor(w, requires_grad=True)
    out = SparseRefinedSTE.apply(wt, n=2, m=4, decay=0.1)
    mask = nm_mask(w, 2, 4)
    np.testing.assert_array_equal(out.data, w * mask)
    out.backward(g)
    np.testing.assert_allclose(wt.grad, g + 0.1 * (1 - mask) * w)    # Eq. 6 of the paper


def test_decay_zero_is_the_plain_straight_through_estimator():
    w = np.random.default_rng(3).standard_normal((2, 4))
    wt = Tensor(w, requires_grad=True)
    SparseRefinedSTE.apply(wt, n=2, m=4, decay=0.0).backward(np.ones((2, 4)))
    np.testing.assert_array_equal(wt.grad, np.ones((2, 4)))         # pruned weights learn too


def run(model, x, y, steps=3, **options):
    method = get_method("sr_ste", **options)
    method.setup(model, None, None, steps)
    opt = sparsenet.optim.SGD(model.parameters(), lr=0.1)
    method.optimizer = opt
    for step in range(steps):
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        method.after_backward(step)
        opt.step()
        method.after_step(step)
    return method


def test_an_mlp_trains_and_ends_as_a_true_2_4_model():
    sparsenet.manual_seed(0)
    model = build_model("mlp:16-12-8-4", input_shape=(1, 4, 4), num_classes=4)
    x = np.random.default_rng(0).standard_normal((10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 4
    method = run(model, x, y)
    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert len(layers) == 3 and all(isinstance(m.weight, NM) for m in layers)
    assert all(m.weight.density == 0.5 for m in layers)
    details = method.describe()
    assert details["n"] == 2 and details["decay"] == 2e-4 and "mask_changes" in details


def test_a_convnet_needs_its_9_input_first_layer_kept_dense():
    sparsenet.manual_seed(0)
    model = build_model("conv2", input_shape=(1, 8, 8), num_classes=3)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="9 inputs per output, not a multiple of m = 4"):
        run(model, x, y)
    run(model, x, y, dense_layers=["first"])
    convs = [m for m in model.modules() if isinstance(m, SparseConv2d)]
    assert len(convs) == 1 and isinstance(convs[0].weight, NM)       # the second convolution


def test_a_transformer_with_only_its_ffns_at_2_4():
    sparsenet.manual_seed(0)
    model = build_model("gpt:L1-D16-H2-T8", num_classes=11)
    method = get_method("sr_ste", layers="*ffn*")
    method.setup(model, None, None, 2)
    assert [n for n, _ in method.layers] == ["blocks.0.ffn.fc1", "blocks.0.ffn.fc2"]
    assert isinstance(model.get_submodule("blocks.0.ffn.fc1"), SRSTELinear)
    ids = np.random.default_rng(0).integers(0, 11, (2, 8))
    for step in range(2):
        F.sequence_cross_entropy(model(ids), ids).backward()
        method.after_step(step)
    assert isinstance(model.get_submodule("blocks.0.ffn.fc2").weight, NM)
    assert type(model.get_submodule("blocks.0.attn.qkv")).__name__ == "Linear"


def test_training_flops_count_the_dense_weight_gradient():
    sparsenet.manual_seed(0)
    model = build_model("mlp:16-8-4", input_shape=(1, 4, 4), num_classes=4)
    x = np.zeros((5, 1, 4, 4), np.float32)
    method = run(model, x, np.zeros(5, np.int64), steps=1)
    assert method.extra_flops() == 2.0 * ((8 * 16 - 64) + (4 * 8 - 16)) * 5


@pytest.mark.parametrize("options, words", [
    (dict(sparsity=0.9), "cannot be N:M"),
    (dict(decay=-1.0), "decay"),
    (dict(format="csr"), "format must be 'nm'"),
    (dict(layers=[]), "layers must be"),
])
def test_bad_options(options, words):
    with pytest.raises(ValueError, match=words):
        get_method("sr_ste", **options)


def test_no_matching_layer_is_an_error():
    model = build_model("mlp:16-8-4", input_shape=(1, 4, 4), num_classes=4)
    with pytest.raises(ValueError, match="no layer matches"):
        get_method("sr_ste", layers="*ffn*").setup(model, None, None, 2)


def test_left_out_sparsity_is_n_over_m_without_a_warning():
    import warnings

    from sparsenet.guards import make_method
    from sparsenet.train import TrainConfig
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, config = make_method(TrainConfig(method="sr_ste"))
        _, one_of_four = make_method(TrainConfig(method="sr_ste",
                                                 method_options={"n": 1, "m": 4}))
    assert config.sparsity == 0.5 and one_of_four.sparsity == 0.75
