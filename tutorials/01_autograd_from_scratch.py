# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Autograd from scratch
#
# Every method in sparsenet, from magnitude pruning to RigL, stands on one small engine:
# a `Tensor` that remembers how it was computed, and `backward()`, which walks that record
# in reverse to get gradients. This notebook builds the idea up in five steps:
#
# 1. what a `Tensor` and a `Function` are, by writing a `Function` of our own;
# 2. the chain rule, followed through a small graph by hand;
# 3. a gradient check by central differences, the test every op in sparsenet passes;
# 4. a dense LeNet-300-100 trained on Fashion-MNIST with `sparsenet.train`;
# 5. its loss curve and test accuracy.
#
# It runs as a plain script too: `SPARSENET_FAST=1 python tutorials/01_autograd_from_scratch.py`
# uses a small slice of the data and two epochs.

# %%
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND") \
        and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")          # a script without a display draws to files only
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, run  # noqa: E402

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
sn.manual_seed(0)
print("fast mode:", FAST)

# %% [markdown]
# ## 1. Tensors and Functions
#
# A `Tensor` wraps a NumPy array (`.data`). Floating-point data is stored as float32 unless
# you hand over a float64 array yourself; nothing is converted behind your back.
# With `requires_grad=True` a tensor becomes a *leaf* whose gradient we want.

# %%
x = sn.Tensor([1.0, 2.0, 3.0], requires_grad=True)
print(x, x.dtype)
print(sn.Tensor(np.array([1.0, 2.0])).dtype, "<- a float64 array stays float64")

# %% [markdown]
# Every operation on tensors is a `Function`: a class with a `forward` that computes on plain
# arrays and a `backward` that turns the gradient of the output into gradients of the inputs.
# `Function.apply` runs `forward`, wraps the result in a Tensor, and, when an input requires a
# gradient, stores itself in the result's `_ctx` so that `backward()` can find it later.
#
# Here is one of our own, $y = a^2$, whose derivative is $2a$: `backward` receives
# $\partial L / \partial y$ and returns
# $\partial L / \partial a = 2a \cdot \partial L / \partial y$.


# %%
class Square(sn.Function):
    def forward(self, a):
        self.a = a                      # save what backward needs
        return a * a

    def backward(self, grad):
        return (2 * self.a * grad,)     # one gradient per input


y = Square.apply(x)
print("y =", y.data, " made by", type(y._ctx).__name__)
loss = y.sum()
loss.backward()
print("dL/dx from backward:", x.grad)
print("2x by hand:         ", 2 * x.data)

# %% [markdown]
# ## 2. The chain rule through a graph
#
# A longer computation is a chain of Functions. Each result points to the Function that made it,
# and that Function points to its inputs (`parents`): together they form a graph.
# The next cell follows those pointers from the loss back to the leaves.

# %%
w = sn.Tensor(np.array([[0.5, -1.0], [1.5, 0.25]]), requires_grad=True)   # float64 here
b = sn.Tensor(np.array([0.1, -0.2]), requires_grad=True)
inputs = sn.Tensor(np.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0]]))
h = (inputs @ w + b).tanh()
loss = (h * h).mean()


def show_graph(t, depth=0, seen=None):
    """Print the graph below `t`, one line per tensor (a leaf has no Function)."""
    seen = set() if seen is None else seen
    made_by = type(t._ctx).__name__ if t._ctx is not None else "leaf"
    again = "  (the same tensor as above: used twice)" if id(t) in seen else ""
    print("  " * depth + f"{made_by:<8} shape={t.shape}{again}")
    if t._ctx is not None and not again:
        seen.add(id(t))
        for parent in t._ctx.parents:
            show_graph(parent, depth + 1, seen)


show_graph(loss)

# %% [markdown]
# `loss.backward()` visits these nodes in reverse topological order (every output before the
# inputs it was computed from). At each node it multiplies the incoming gradient by the local
# derivative, its Function's `backward`, and passes the result on. When a tensor feeds two
# operations, like `h` in `h * h`, the two contributions **add up**: that is the multivariate
# chain rule, $\partial L/\partial h = \sum_k \partial L/\partial z_k \; \partial z_k/\partial h$.
#
# A tiny example where we can check the sum by hand: $u = x^2$, $z = u + u^2$, so
# $dz/dx = (1 + 2u) \cdot 2x$.

# %%
x = sn.Tensor(np.array([0.5, -2.0]), requires_grad=True)
u = x * x
z = (u + u * u).sum()
z.backward()
print("backward:", x.grad)
print("by hand: ", (1 + 2 * x.data ** 2) * 2 * x.data)

# %% [markdown]
# ## 3. Checking gradients by central differences
#
# How do we know a `backward` is right? Nudge one input element by $\pm\varepsilon$ and watch
# the output: $\dfrac{f(x + \varepsilon e_i) - f(x - \varepsilon e_i)}{2\varepsilon}$ approximates
# $\partial f / \partial x_i$ with an error of order $\varepsilon^2$. In float64 with
# $\varepsilon = 10^{-6}$ the two agree to many digits; float32 would drown the difference in
# rounding error, which is why sparsenet's tests run their gradient checks in float64.


# %%
def central_differences(f, array, eps=1e-6):
    """d f(array) / d array, one element at a time."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        up, down = array.copy(), array.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (f(up) - f(down)) / (2 * eps)
    return grad


def f(w_array):
    h = (inputs @ sn.Tensor(w_array) + b).tanh()
    return (h * h).mean().item()


w.grad = None
h = (inputs @ w + b).tanh()
(h * h).mean().backward()
numeric = central_differences(f, w.data)
print("backward:\n", w.grad)
print("central differences:\n", numeric)
print("largest difference:", np.abs(w.grad - numeric).max())

# %% [markdown]
# ## 4. Training a dense network
#
# The same engine trains real networks. `sparsenet.train.run` loads Fashion-MNIST (the full set
# when it is installed, the small subset bundled with sparsenet otherwise), builds LeNet-300-100
# (784-300-100-10, ReLU), trains it with SGD and momentum under a cosine learning-rate schedule,
# and returns a record: a plain dictionary that can be written as JSON.
#
# A long run can be stopped and continued: `sparsenet train --checkpoint runs/ck` saves it at
# every epoch (and on Ctrl-C), and `sparsenet train --resume runs/ck` with the same settings
# picks it up and ends with the record the run would have had without the stop.

# %%
config = TrainConfig(model="lenet300", epochs=2 if FAST else 10, data="auto", progress=False)
record = run(config)
print("data:", record["data"])
print("epochs:", record["epochs"], " test accuracy:", f"{record['test_accuracy']:.4f}")

# %% [markdown]
# ## 5. Loss curve and test accuracy
#
# The record's `history` has one entry per epoch: the mean training loss and the accuracy on
# the test set at the end of that epoch.
#
# Watching the test accuracy is fine for learning; *choosing* anything by it (a learning rate,
# a number of epochs) turns the test set into training data. `TrainConfig(val=5000)` (or
# `sparsenet train --val 5000`) holds out 5,000 training images and scores on those instead;
# the record then carries `val_accuracy` and no test accuracy at all.

# %%
epochs = [h["epoch"] for h in record["history"]]
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(epochs, [h["loss"] for h in record["history"]], marker="o")
ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
ax_acc.plot(epochs, [h["test_accuracy"] for h in record["history"]], marker="o", color="C1")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="test accuracy")
fig.suptitle(f"LeNet-300-100, dense, {record['data']['train']:,} training images")
fig.tight_layout()

if not FAST:
    try:
        figures = Path(__file__).resolve().parent / "figures"
    except NameError:                     # inside Jupyter there is no __file__
        figures = Path("figures")
    figures.mkdir(exist_ok=True)
    fig.savefig(figures / "01_lenet300_dense.png", dpi=120)
    print("figure saved to", figures / "01_lenet300_dense.png")
if matplotlib.get_backend().lower() != "agg":
    plt.show()

for h in record["history"]:
    print(f"epoch {h['epoch']:2d}: loss {h['loss']:.4f}, test accuracy {h['test_accuracy']:.4f}")

# %% [markdown]
# ## What's next
#
# Everything above is dense: every one of LeNet-300-100's weights is stored and multiplied.
# The next tutorials remove most of them, and measure what that saves in memory, FLOPs
# and seconds, and what it costs in accuracy.
