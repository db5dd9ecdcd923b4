"""A plain training loop for the dynamic-sparse-training tests (test_dst, test_mest_autosparse):
it calls a method's hooks in the order `sparsenet.train.fit` does, on a slice of the bundled
data, so a test can look at the network around every step."""
from __future__ import annotations

import numpy as np

import sparsenet as sn
from sparsenet.nn import Flatten, Linear, ReLU, Sequential
from sparsenet.nn.functional import cross_entropy
from sparsenet.optim import SGD
from sparsenet.tensor import Tensor
from sparsenet.train import load_arrays

_DATA = {}


def data(n=256):
    """The first n images and labels of the bundled subset (loaded once)."""
    if "xy" not in _DATA:
        x, y = load_arrays("subset")[:2]
        _DATA["xy"] = (x[:n], y[:n])
    return _DATA["xy"]


def tiny_model(sizes=(784, 48, 24, 10), dtype=np.float32, seed=0):
    """A small ReLU MLP, seeded."""
    sn.manual_seed(seed)
    layers = [Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [Linear(a, b, dtype=dtype)] + ([ReLU()] if i < len(sizes) - 2 else [])
    return Sequential(*layers)


def train(method, steps=40, batch=32, model=None, lr=0.05, seed=0, on_step=None):
    """Train `steps` SGD steps (momentum 0.9, weight decay 1e-4); on_step(when, step) runs
    just before ("before") and after ("after") the method's after_step. Returns (model, method)."""
    x, y = data()
    model = model or tiny_model(seed=seed)
    method.setup(model, None, None, steps)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    method.optimizer = opt
    for step in range(steps):
        i = (step * batch) % len(x)
        loss = cross_entropy(model(Tensor(x[i:i + batch])), y[i:i + batch])
        opt.zero_grad()
        loss.backward()
        method.after_backward(step)
        opt.step()
        if on_step:
            on_step("before", step)
        method.after_step(step)
        if on_step:
            on_step("after", step)
    return model, method
