"""The masked twin is the definition: SET, RigL (and SRigL) run on format="masked" and on
format="csr" from the same seed choose the same topologies and reach the same losses.

Both formats draw the initial pattern and SET's random growth from the same random numbers and
rank drop and grow scores with the same tie rule, so the runs may only differ by the order of
floating-point sums (dense BLAS against the CSR kernels); float64 keeps that far below what
could flip a choice over a few hundred steps.
"""
import numpy as np
import pytest

import sparsenet as sn
from sparsenet.algorithms import get_method
from sparsenet.nn import Flatten, Linear, ReLU, Sequential
from sparsenet.nn.functional import cross_entropy
from sparsenet.optim import SGD
from sparsenet.tensor import Tensor
from sparsenet.train import load_arrays

STEPS, BATCH = 300, 32


pytestmark = pytest.mark.usefixtures("one_thread")      # tiny products: see conftest.py


@pytest.fixture(scope="module")
def data():
    x, y = load_arrays("subset")[:2]
    return x[:512].astype(np.float64), y[:512]


def run(name, fmt, data, **options):
    """Losses of every step and every layer's mask after every topology update."""
    x, y = data
    sn.manual_seed(3)
    model = Sequential(Flatten(), Linear(784, 64, dtype=np.float64), ReLU(),
                       Linear(64, 32, dtype=np.float64), ReLU(), Linear(32, 10, dtype=np.float64))
    method = get_method(name, format=fmt, sparsity=0.9, delta_t=10, **options)
    method.setup(model, None, None, STEPS)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    method.optimizer = opt
    losses, masks = [], [[layer.weight.mask() for _, layer in method.layers]]
    for step in range(STEPS):
        i = (step * BATCH) % len(x)
        loss = cross_entropy(model(Tensor(x[i:i + BATCH])), y[i:i + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(step)
        losses.append(loss.item())
        if method.is_update_step(step):
            masks.append([layer.weight.mask() for _, layer in method.layers])
    return np.array(losses), masks, method


@pytest.mark.parametrize("name,options", [("set", {}), ("rigl", {}), ("srigl", {"gamma_sal": 0.3})],
                         ids=["set", "rigl", "srigl"])
def test_masked_and_csr_agree(name, options, data):
    loss_csr, masks_csr, method_csr = run(name, "csr", data, **options)
    loss_masked, masks_masked, method_masked = run(name, "masked", data, **options)
    assert len(masks_csr) == len(masks_masked) == 1 + len(range(10, 225, 10))
    for update, (a, b) in enumerate(zip(masks_csr, masks_masked)):
        for layer, (mask_a, mask_b) in enumerate(zip(a, b)):
            assert np.array_equal(mask_a, mask_b), f"update {update}, layer {layer}: masks differ"
    assert not np.array_equal(masks_csr[0][0], masks_csr[-1][0])       # the topology did move
    np.testing.assert_allclose(loss_masked, loss_csr, rtol=1e-9)
    assert loss_csr[-20:].mean() < loss_csr[:20].mean()                 # and it learned
    assert method_csr.updates == method_masked.updates
