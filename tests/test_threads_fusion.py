"""The thread policy (sparsenet/threads.py), the fused sparse-layer + ReLU path, and
`max_steps`: checks of what is set and computed, not of speed."""
import numba
import numpy as np
import pytest

import sparsenet as sn
import sparsenet.nn.functional as F
from sparsenet import threads
from sparsenet.nn import ReLU, Sequential, SparseLinear
from sparsenet.train import TrainConfig, train_model


@pytest.fixture
def restore_threads():
    numba_before, blas_before = numba.get_num_threads(), threads.blas_threads()
    yield
    numba.set_num_threads(numba_before)
    from threadpoolctl import threadpool_limits
    threadpool_limits(blas_before, user_api="blas")


def test_sparse_model_gives_numba_the_cores(fast_mode, restore_threads):
    _, record = train_model(TrainConfig(method="set", sparsity=0.9, epochs=1, data="subset",
                                        progress=False), log=None)
    cores = threads.check_threads(None)
    assert record["threads"]["owner"] == "numba"
    assert numba.get_num_threads() == cores and threads.blas_threads() == 1


def test_dense_model_gives_blas_the_cores(fast_mode, restore_threads):
    _, record = train_model(TrainConfig(epochs=1, data="subset", progress=False), log=None)
    cores = threads.check_threads(None)
    assert record["threads"]["owner"] == "blas"
    assert threads.blas_threads() == cores and numba.get_num_threads() == 1


def test_threads_flag_sets_both_pools(fast_mode, restore_threads):
    _, record = train_model(TrainConfig(method="rigl", sparsity=0.9, epochs=1, data="subset",
                                        progress=False, threads=1), log=None)
    assert record["threads"]["threads"] == 1
    assert numba.get_num_threads() == 1 and threads.blas_threads() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", numba.config.NUMBA_NUM_THREADS + 1])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads"):
        threads.check_threads(bad)


def test_masked_layers_count_as_blas_work():
    model = Sequential(SparseLinear(50, 40, sparsity=0.5, format="masked"), ReLU(),
                       SparseLinear(40, 10, sparsity=0.5))
    assert threads.kernel_share(model) == pytest.approx(200 / (2000 + 200))


@pytest.mark.parametrize("format", ["csr", "block", "nm", "masked"])
def test_fused_relu_gives_the_unfused_numbers(format):
    """Sequential runs a sparse layer and its ReLU as one operation; calling the layers one by
    one runs them separately. Outputs and every gradient must agree exactly."""
    rng = np.random.default_rng(0)
    options = dict(format=format, rng=rng, **({"block_size": 8} if format == "block" else {}))
    if format != "nm":
        options["sparsity"] = 0.7
    model = Sequential(SparseLinear(64, 32, **options), ReLU(),
                       SparseLinear(32, 16, **dict(options, rng=rng)), ReLU())
    for layer in (model[0], model[2]):
        layer.bias.data[:] = rng.standard_normal(layer.bias.shape).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])

    def grads(fused):
        for p in model.parameters():
            p.grad = None
        h = sn.Tensor(x)
        if fused:
            h = model(h)
        else:
            for layer in model:
                h = layer(h)
        loss = F.cross_entropy(h, labels)
        loss.backward()
        return h.data.copy(), [p.grad.copy() for p in model.parameters()]

    out_fused, g_fused = grads(True)
    out_plain, g_plain = grads(False)
    np.testing.assert_array_equal(out_fused, out_plain)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)   # bias sums: another order


def test_max_steps_stops_and_says_so(fast_mode):
    _, record = train_model(TrainConfig(method="set", sparsity=0.9, epochs=2, data="subset",
                                        progress=False, max_steps=3), log=None)
    assert record["steps"] == 3 and record["stopped_early"]
    assert len(record["history"]) == 1 and record["history"][0]["partial"]
    assert record["history"][0]["samples"] == 3 * 128


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_bad_max_steps_is_refused(bad):
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=bad).validate()
