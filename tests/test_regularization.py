"""L1 and group-lasso regularization: gradients, formats, effect, and the `regularized` method."""
import numpy as np
import pytest

from sparsenet import optim
from sparsenet.algorithms import get_method
from sparsenet.algorithms.regularization import group_norms, layer_entries, penalty, regularize
from sparsenet.nn import Conv2d, Linear, Sequential
from sparsenet.nn.sparse_layers import SparseConv2d, SparseLinear
from sparsenet.tensor import Tensor
from sparsenet.train import TrainConfig, train_model

OPTIONS = [dict(l1=0.3), dict(group_lasso=0.7, groups="rows"),
           dict(group_lasso=0.7, groups="columns"), dict(group_lasso=0.7, groups="blocks", block_size=3),
           dict(l1=0.2, group_lasso=0.5, groups="rows")]


def layers64(rng):
    """One float64 layer of each kind: dense Linear and Conv2d, sparse csr/block/masked/nm."""
    linear = Linear(12, 8, dtype=np.float64, rng=rng)
    conv = Conv2d(3, 4, 3, dtype=np.float64, rng=rng)
    sparse = [SparseLinear(12, 8, format=f, sparsity=0.5, block_size=4, dtype=np.float64, rng=rng)
              for f in ("csr", "block", "masked")]
    sparse.append(SparseLinear(12, 8, format="nm", n=2, m=4, dtype=np.float64, rng=rng))
    sparse.append(SparseConv2d(3, 4, 3, format="csr", sparsity=0.5, dtype=np.float64, rng=rng))
    return [linear, conv] + sparse


@pytest.mark.parametrize("options", OPTIONS)
def test_penalty_gradient_matches_central_differences(options, rng):
    eps = 1e-6
    for layer in layers64(rng):
        model = Sequential(layer)
        param = layer_entries(layer)[0]
        param.grad = np.zeros_like(param.data)
        value = regularize(model, **options)
        assert value == pytest.approx(penalty(model, **options))
        flat = param.data.reshape(-1)
        stored = np.flatnonzero(flat)                   # Masked keeps zeros off its mask
        for i in rng.choice(stored, size=min(12, stored.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = penalty(model, **options)
            flat[i] = old - eps
            down = penalty(model, **options)
            flat[i] = old
            assert param.grad.reshape(-1)[i] == pytest.approx((up - down) / (2 * eps),
                                                               rel=1e-6, abs=1e-8), type(layer)


def test_penalty_value_by_hand():
    layer = Linear(2, 2, dtype=np.float64)
    layer.weight.data = np.array([[3.0, -4.0], [0.0, 0.0]])
    model = Sequential(layer)
    assert penalty(model, l1=0.5) == pytest.approx(0.5 * 7)
    assert penalty(model, group_lasso=2.0, groups="rows") == pytest.approx(2.0 * 5)
    assert penalty(model, group_lasso=1.0, groups="columns") == pytest.approx(3 + 4)
    layer.weight.grad = None
    regularize(model, group_lasso=1.0)                   # the zero row gets a zero subgradient
    np.testing.assert_allclose(layer.weight.grad, [[0.6, -0.8], [0.0, 0.0]])


@pytest.mark.parametrize("fmt", ["csr", "block", "masked"])
def test_sparse_layer_gets_the_dense_gradient_at_its_stored_positions(fmt, rng):
    sparse = SparseLinear(16, 8, format=fmt, sparsity=0.5, block_size=4, dtype=np.float64, rng=rng)
    dense = Linear(16, 8, dtype=np.float64)
    dense.weight.data = sparse.weight.to_dense()
    for layer in (sparse, dense):
        regularize(Sequential(layer), l1=0.1, group_lasso=0.4, groups="columns")
    rows, cols = sparse.weight.coords()
    np.testing.assert_allclose(sparse.values.grad, dense.weight.grad[rows, cols], atol=1e-15)


def test_group_lasso_drives_unneeded_rows_to_zero(rng):
    """Rows 3-5 of the true map are zero; noise makes plain least squares use them anyway."""
    true = np.zeros((6, 10))
    true[:3] = rng.normal(size=(3, 10))
    x = rng.normal(size=(40, 10))
    y = x @ true.T + 0.3 * rng.normal(size=(40, 6))

    def fit(group_lasso):
        layer = Linear(10, 6, bias=False, dtype=np.float64, rng=np.random.default_rng(1))
        opt = optim.SGD([layer.weight], lr=0.05)
        for step in range(1500):      # a decaying step lets the subgradient method settle at 0
            opt.param_groups[0]["lr"] = 0.05 * (1 - step / 1500)
            opt.zero_grad()
            err = layer(Tensor(x)) - Tensor(y)
            ((err * err).sum() * (1.0 / len(x))).backward()
            regularize(Sequential(layer), group_lasso=group_lasso)
            opt.step()
        return group_norms(layer)

    plain, lasso = fit(0.0), fit(0.6)
    assert plain[3:].min() > 0.05                        # noise is fitted without the penalty
    assert lasso[3:].max() < 0.05 * plain[3:].min()      # whole rows pushed to ~0
    assert lasso[:3].min() > 0.5                         # the needed rows stay


@pytest.mark.parametrize("options, words", [
    (dict(l1=-1.0), "l1"), (dict(group_lasso=float("nan")), "group_lasso"),
    (dict(group_lasso=1.0, groups="diagonal"), "groups"), (dict(l1=1.0, block_size=0), "block_size"),
    (dict(l1=1.0, layers=["9"]), "not weighted layers"),
])
def test_regularize_rejects_bad_options(options, words):
    with pytest.raises(ValueError, match=words):
        regularize(Sequential(Linear(3, 2)), **options)


@pytest.mark.parametrize("options, words", [
    (dict(), "l1 > 0 or group_lasso > 0"), (dict(l1=1e-4, threshold=-1), "threshold"),
    (dict(l1=1e-4, threshold=0.1, sparsity=0.5), "not both"),
    (dict(group_lasso=1e-4, format="nm"), "cannot hold"),
    (dict(group_lasso=1e-4, format="block"), "cannot hold"),
])
def test_regularized_rejects_bad_options(options, words):
    with pytest.raises(ValueError, match=words):
        get_method("regularized", **options)


def run_regularized(**options):
    config = TrainConfig(model="mlp:784-64-32-10", method="regularized", data="subset",
                         progress=False, sparsity=options.pop("sparsity", 0.0),
                         method_options=options)
    return train_model(config, log=None)


def test_regularized_threshold_removes_exactly_the_small_rows():
    model = Sequential(Linear(20, 6), Linear(6, 3))
    w = model[0].weight.data
    w[[1, 4]] *= 1e-3                                     # two rows far below the threshold
    norms = np.linalg.norm(w, axis=1)
    method = get_method("regularized", group_lasso=1e-3, threshold=0.5 * norms.min(where=norms > 1e-2,
                                                                                  initial=np.inf))
    method.setup(model, None, loader=[None], total_steps=1)     # one epoch of one step
    method.after_epoch(1)                                       # the end of training
    layer = model[0]
    assert isinstance(layer, SparseLinear) and layer.format == "csr"
    assert method.topology_changed() and not method.topology_changed()
    np.testing.assert_array_equal(layer.weight.to_dense(), np.where([[1], [0], [1], [1], [0], [1]], w, 0))
    assert method.describe()["units_removed_per_layer"] == {"0": 2}
    assert isinstance(model[1], Linear)                         # nothing small there: kept dense


def test_regularized_sparsity_keeps_each_layers_share(fast_mode):
    _, record = run_regularized(l1=1e-5, sparsity=0.9, format="masked")
    assert record["density"] == pytest.approx(0.1, abs=1e-3)
    assert all(layer["format"] == "masked" for layer in record["layers"])
    _, record = run_regularized(group_lasso=1e-5, sparsity=0.5)       # rows: half of each layer
    assert [layer["nnz"] for layer in record["layers"]] == [32 * 784, 16 * 64, 5 * 32]
