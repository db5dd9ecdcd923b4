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
# # 01 · Autograd from scratch, and a training loop by hand
#
# Every method in sparsenet, from magnitude pruning to RigL, stands on one small engine:
# a `Tensor` that remembers how it was computed, and `backward()`, which walks that record
# in reverse to get gradients. This notebook builds the idea up and then trains a real network
# with it, one line of the training loop at a time.
#
# **You will learn**
#
# 1. what a `Tensor` and a `Function` are, by writing a `Function` of your own;
# 2. the chain rule, followed through a small graph by hand;
# 3. how to check a gradient by central differences, the test every op in sparsenet passes;
# 4. the minibatch training loop, written out: forward, loss, `zero_grad`, `backward`, `step`,
#    evaluation, on a dense LeNet-300-100 and Fashion-MNIST;
# 5. `sparsenet.train.run`, the shortcut that runs exactly that loop, and its loss curve.
#
# **Time**: about 30 minutes to read and try the exercises. No prerequisites beyond NumPy and
# the idea of a derivative. The cells take seconds each; the last line of the notebook prints
# how long the whole run took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/01_autograd_from_scratch.py` uses a small
# slice of the data and two epochs; its figures go to `figures/` (the output names each file).

# %%
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("01")            # inline in Jupyter; always saved to figures/01_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet import optim  # noqa: E402
from sparsenet.data import BatchLoader  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.nn.functional import cross_entropy  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, load_arrays, run  # noqa: E402

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
started = time.perf_counter()
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
# **Try it**
#
# - Write `Cube`, $y = a^3$, with `backward` returning $3a^2 \cdot$ `grad`, and apply it to
#   `x`: `x.grad` should read `[3, 12, 27]` (run `x.grad = None` first, or the new gradient
#   adds to the old one: that accumulation is why the training loop below calls `zero_grad`).
# - Return `(self.a * grad,)` from `Square.backward` (a forgotten factor 2): `backward` now
#   prints half of `2x`, and nothing else complains. Section 3 shows how to catch such a bug.

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
# **Try it**
#
# - Call `show_graph(z)`: `u` (a `Mul`) appears three times, once under the addition and twice
#   under `u * u`, the repeats marked as the same tensor; `backward` adds up the gradients of
#   all three uses.
# - Call `z.backward()` a second time without resetting `x.grad`: the printed gradient doubles.

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
# **Try it**
#
# - Rerun the check with `eps=1e-2`: the largest difference grows by many orders of magnitude
#   (the error of central differences shrinks like $\varepsilon^2$, so a large step is coarse).
# - Make `w` float32 (`np.array(..., dtype=np.float32)`, and the same for `inputs` and `b`)
#   and keep `eps=1e-6`: now rounding wins and the difference grows to about 1e-2 or more.

# %% [markdown]
# ## 4. Data and a model
#
# The same engine trains real networks. `load_arrays` loads Fashion-MNIST: the full set when it
# is installed, the small subset bundled with sparsenet otherwise, and a slice of either in fast
# mode. Images arrive as float32 arrays of shape (N, 1, 28, 28), labels as int64 classes 0-9.
# `build_model("lenet300")` is LeNet-300-100: flatten, then fully connected 784-300-100-10 with
# ReLU between, its weights drawn with Kaiming's uniform rule (`sn.manual_seed` fixes the draw).

# %%
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
print(f"data from: {origin}")
print(f"training images {x_train.shape} {x_train.dtype}, labels {y_train.shape} {y_train.dtype}")
print(f"test images     {x_test.shape}, classes {sorted(set(y_train.tolist()))}")

sn.manual_seed(0)
model = build_model("lenet300")
print(model)
print(f"{model.num_parameters():,} parameters")

# %% [markdown]
# ## 5. The training loop, by hand
#
# One *step* of minibatch stochastic gradient descent, for a batch of 128 images:
#
# 1. **forward**: `model(Tensor(images))` gives the logits, shape (128, 10), and records the graph;
# 2. **loss**: `cross_entropy(logits, labels)`, the mean of −log softmax at the true class;
# 3. **`optimizer.zero_grad()`**: gradients *add up* (section 1's exercise), so clear the last
#    step's first;
# 4. **`loss.backward()`**: the chain rule through the whole network fills every `.grad`;
# 5. **`optimizer.step()`**: SGD with momentum 0.9 and weight decay 1e-4 moves each weight
#    against its gradient; `scheduler.step()` then lowers the learning rate along a cosine.
#
# An *epoch* is one pass over the training images, in a new random order each time
# (`BatchLoader`). After each epoch we **evaluate**: predict the test images in evaluation mode
# without recording a graph (`sn.no_grad()`), and count the right answers.


# %%
def accuracy(model, images, labels):
    """The fraction of `images` that `model` classifies right (no graph, evaluation mode)."""
    model.eval()
    with sn.no_grad():
        logits = model(sn.Tensor(images))                 # (N, 10)
    model.train()
    return float((logits.data.argmax(axis=1) == labels).mean())


loader = BatchLoader(x_train, y_train, batch_size=128, shuffle=True, seed=0)
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
scheduler = optim.CosineLR(optimizer, total=EPOCHS * len(loader))
print(f"{len(loader)} steps per epoch, {EPOCHS} epochs")

history = []
for epoch in range(1, EPOCHS + 1):
    loss_sum, seen = 0.0, 0
    for images, labels in loader:                         # (128, 1, 28, 28), (128,)
        logits = model(sn.Tensor(images))                 # 1. forward        (128, 10)
        loss = cross_entropy(logits, labels)              # 2. loss           a scalar
        optimizer.zero_grad()                             # 3. clear old gradients
        loss.backward()                                   # 4. backward
        optimizer.step()                                  # 5. update the weights
        scheduler.step()                                  #    and the learning rate
        loss_sum += loss.item() * len(labels)
        seen += len(labels)
    test_accuracy = accuracy(model, x_test, y_test)       # evaluation
    history.append({"epoch": epoch, "loss": loss_sum / seen, "test_accuracy": test_accuracy})
    print(f"epoch {epoch:2d}: mean training loss {loss_sum / seen:.4f}, "
          f"test accuracy {test_accuracy:.4f}")
if FAST:
    print(f"(fast mode: {len(y_train):,} training images and {EPOCHS} epochs, so this accuracy "
          "is far below what the full run reaches; it only shows the loop works)")

# %% [markdown]
# **Try it**
#
# - Delete `optimizer.zero_grad()` and rerun the cell (after rerunning the one above it, for a
#   fresh model): each step now follows the sum of every gradient so far, and after a few
#   steps the loss grows instead of falling.
# - Set `lr=1.0`: the loss grows by orders of magnitude at every step until it is `nan`, and
#   the accuracy falls to about 10 %, what guessing gets (`run`, below, stops at the first
#   non-finite loss instead, with an error that names the learning rate).
# - Use `batch_size=32`: four times as many steps per epoch; the first epoch's loss ends lower,
#   and each epoch takes longer.
#
# ## 6. The shortcut: `sparsenet.train.run`
#
# `run(TrainConfig(...))` is the same loop, with the same defaults (batch 128, SGD with momentum
# 0.9, lr 0.05, weight decay 1e-4, cosine schedule, shuffling seeded by `seed`), plus what a
# real run needs: a progress bar, the method's hooks (tutorials 03-08), FLOP and memory
# counting, checkpoints, and a record, a plain dictionary that can be written as JSON.
# From the same seed it trains the same weights, so its numbers match the hand-written loop's:

# %%
config = TrainConfig(model="lenet300", epochs=EPOCHS, seed=0, progress=False)
record = run(config, log=None)
for mine, theirs in zip(history, record["history"]):
    print(f"epoch {mine['epoch']:2d}: loss by hand {mine['loss']:.6f}, by run "
          f"{theirs['loss']:.6f}; test accuracy by hand {mine['test_accuracy']:.4f}, "
          f"by run {theirs['test_accuracy']:.4f}")
difference = max(abs(m["loss"] - t["loss"]) for m, t in zip(history, record["history"]))
print(f"largest difference in the epoch losses: {difference:.2e}")
print("the record also holds:", ", ".join(sorted(record)[:12]), "...")

# %% [markdown]
# A long run can be stopped and continued: `sparsenet train --checkpoint runs/ck` saves it at
# every epoch (and on Ctrl-C), and `sparsenet train --resume runs/ck` with the same settings
# picks it up and ends with the record the run would have had without the stop.
#
# Watching the test accuracy is fine for learning; *choosing* anything by it (a learning rate,
# a number of epochs) turns the test set into training data. `TrainConfig(val=5000)` (or
# `sparsenet train --val 5000`) holds out 5,000 training images and scores on those instead;
# the record then carries `val_accuracy` and no test accuracy at all.
#
# ## 7. Loss curve and test accuracy
#
# The record's `history` has one entry per epoch: the mean training loss and the accuracy on
# the test set at the end of that epoch (with the number of steps, seconds and learning rate).

# %%
epochs = [h["epoch"] for h in record["history"]]
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(epochs, [h["loss"] for h in record["history"]], marker="o", label="run")
ax_loss.plot([h["epoch"] for h in history], [h["loss"] for h in history], "x", ms=10,
             label="loop by hand")
ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
ax_loss.legend()
ax_acc.plot(epochs, [h["test_accuracy"] for h in record["history"]], marker="o", color="C1")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="test accuracy")
fig.suptitle(f"LeNet-300-100, dense, {record['data']['train']:,} training images"
             + (" (fast mode)" if FAST else ""))
fig.tight_layout()
figures.show(fig, "lenet300_dense")

# %% [markdown]
# **Try it**
#
# - `run(TrainConfig(model="lenet300", epochs=EPOCHS, schedule="constant"))`: print each
#   epoch's `h["lr"]` from its history; it stays at 0.05, where the cosine run's falls towards
#   0 by the last epoch. Which of the two ends with the lower loss, and the better accuracy?
# - `run(TrainConfig(model="lenet300", epochs=EPOCHS, progress=True))` shows the progress bar
#   the shortcut draws for every epoch (loss, accuracy and samples per second as it goes).
#
# ## What's next
#
# Everything above is dense: every one of LeNet-300-100's weights is stored and multiplied.
# Tutorial 02 looks at how a sparse weight is stored and multiplied; tutorials 03-08 remove most
# of the weights, and measure what that saves in memory, FLOPs and seconds, and what it costs
# in accuracy.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
