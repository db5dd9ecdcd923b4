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
# # 07 · RigL: let the gradient choose the new connections
#
# SET (tutorial 06) regrows connections at random. Evci et al. (2020, *Rigging the Lottery:
# Making All Tickets Winners*) keep SET's drop (the smallest magnitudes) but grow where the
# **gradient of the loss with respect to the missing weights** is largest: those are the
# connections that would lower the loss fastest if they existed. The price is a dense gradient
# G·Xᵀ, computed only every ΔT = 100 steps and, in sparsenet, a chunk of rows at a time so the
# dense matrix never exists whole.
#
# This notebook:
#
# 1. shows why the gradient is a good guide, with a one-step experiment;
# 2. trains RigL, SET and a static network at the same sparsity;
# 3. draws the first layer's connections on the 28×28 input image as RigL moves them;
# 4. counts what the dense gradients cost in FLOPs.
#
# As a script: `SPARSENET_FAST=1 python tutorials/07_rigl.py` uses a slice of the data and two
# epochs.

# %%
import copy
import os
import sys

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND") \
        and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")          # a script without a display draws to files only
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.algorithms.common import change_topology  # noqa: E402
from sparsenet.algorithms.rigl import RigL  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.nn.functional import cross_entropy  # noqa: E402
from sparsenet.sparse.topology import random_empty_units  # noqa: E402
from sparsenet.tensor import Tensor, no_grad  # noqa: E402
from sparsenet.train import (TrainConfig, epochs_for, fast_mode, load_arrays,  # noqa: E402
                             train_phase)

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
DELTA_T = 2 if FAST else 100       # fast mode has only a few steps: update often to see it
DATA = load_arrays("auto")
print("fast mode:", FAST, " training images:", len(DATA[1]))


def train(method, seed=0):
    """Train LeNet-300-100 with `method`; returns (model, history, flops)."""
    config = TrainConfig(model="lenet300", epochs=EPOCHS, seed=seed, progress=False)
    sn.manual_seed(seed)
    model = build_model("lenet300")
    history, flops, _ = train_phase(model, method, config, DATA, epochs_for(config), log=None)
    return model, history, flops


# %% [markdown]
# ## 1. Why the gradient knows where to grow
#
# A missing weight w_ij is a weight fixed at 0. Its gradient g_ij = ∂L/∂w_ij exists all the
# same: for a linear layer y = W x it is (G Xᵀ)_ij, the output gradient of neuron i times
# input j. If the connection were added and took one gradient step of size η, the loss would
# change by about −η·g_ij² (first order). So the empty positions with the largest |g| are the
# ones whose addition lowers the loss most: RigL grows those.
#
# The experiment: a static sparse LeNet-300-100 trained for a while; on one batch, add k new
# connections to its first layer, either the k of largest |g| (RigL) or k random ones (SET),
# give them their one gradient step, and compare the loss on that batch.

# %%
static_model, static_history, _ = train(get_method("static", sparsity=0.9))
x, y = DATA[0][:256], DATA[1][:256]
layer = static_model.get_submodule("1")            # the first (sparse) layer, 784 -> 300
layer.keep_for_growth = True                       # keep (G, X) of the next backward
loss = cross_entropy(static_model(Tensor(x)), y)
loss.backward()
G, X = layer.growth_arrays                         # (300, batch), (784, batch)
k, lr = 1000, 0.05
choices = {"largest |gradient| (RigL)": layer.dense_grad_topk(k=k)[:2],
           "random (SET)": random_empty_units(layer.weight, k, np.random.default_rng(0))[:2]}
print(f"loss on the batch before: {loss.item():.4f}")
for label, (rows, cols) in choices.items():
    g = np.einsum("ib,ib->i", G[rows], X[cols])    # the gradient at each chosen position
    grown = copy.deepcopy(static_model)
    change_topology(grown.get_submodule("1"), np.zeros(layer.weight.n_units, bool), rows, cols,
                    grow_values=(-lr * g).astype(np.float32))
    with no_grad():
        after = cross_entropy(grown(Tensor(x)), y).item()
    print(f"grow {k} {label:27s}: mean |g| {np.abs(g).mean():.2e}, loss after one step "
          f"{after:.4f} (first-order estimate {loss.item() - lr * (g ** 2).sum():.4f})")
layer.keep_for_growth = False

# %% [markdown]
# ## 2. RigL, SET and static at 90 % sparsity
#
# The same network, the same number of weights (ERK densities, 10 % overall), the same random
# starting pattern; only the way connections move differs. RigL's defaults are the paper's:
# α = 0.3, ΔT = 100, cosine decay, no update in the last 25 % of training.


# %%
class Watched(RigL):
    """RigL that remembers, at the start and after every update, how many connections each
    input pixel has in the first layer (a 28×28 picture)."""

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.pictures = [(0, self.picture())]

    def picture(self):
        return self.layers[0][1].weight.mask().sum(axis=0).reshape(28, 28)

    def update(self, step):
        super().update(step)
        self.pictures.append((step, self.picture()))


rigl = Watched(sparsity=0.9, delta_t=DELTA_T)
rigl_model, rigl_history, rigl_flops = train(rigl)
set_model, set_history, set_flops = train(get_method("set", sparsity=0.9, delta_t=DELTA_T))

fig, ax = plt.subplots(figsize=(6, 3))
for label, history in (("static", static_history), ("SET", set_history), ("RigL", rigl_history)):
    ax.plot([h["epoch"] for h in history], [h["test_accuracy"] for h in history], "o-",
            label=label)
ax.set(xlabel="epoch", ylabel="test accuracy", title="LeNet-300-100, 90 % sparse")
ax.legend()
fig.tight_layout()
for label, history in (("static", static_history), ("SET", set_history), ("RigL", rigl_history)):
    print(f"{label:6s} test accuracy {history[-1]['test_accuracy']:.4f}")

# %% [markdown]
# ## 3. Watching the first layer move
#
# Each picture counts, for every input pixel, how many of the 300 first-layer neurons are
# connected to it. At the start the pattern is uniformly random. Pixels at the border of a
# Fashion-MNIST image are almost always 0, so X, and with it the gradient G·Xᵀ, is 0 there:
# RigL never grows a connection to them, while the magnitude drop slowly removes the ones they
# had (weight decay pulls them to zero). The connections flow to the middle of the image, where
# the clothes are.

# %%
shown = rigl.pictures if len(rigl.pictures) <= 5 else \
    [rigl.pictures[i] for i in np.linspace(0, len(rigl.pictures) - 1, 5).astype(int)]
fig, axes = plt.subplots(1, len(shown) + 1, figsize=(2.2 * (len(shown) + 1), 2.6))
vmax = max(p.max() for _, p in shown)
for ax, (step, picture) in zip(axes, shown):
    ax.imshow(picture, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(f"step {step}", fontsize=9)
    ax.axis("off")
axes[-1].imshow(DATA[0][:1000].mean(axis=0)[0], cmap="gray")
axes[-1].set_title("mean image", fontsize=9)
axes[-1].axis("off")
fig.suptitle("RigL: first-layer connections per input pixel")
fig.tight_layout()
border = np.ones((28, 28), bool)
border[4:24, 4:24] = False
for step, picture in (shown[0], shown[-1]):
    print(f"step {step:5d}: {picture[border].sum() / picture.sum():.1%} of the first layer's "
          f"connections come from the 4-pixel-wide border ({border.mean():.0%} of the pixels)")

# %% [markdown]
# ## 4. What the dense gradients cost
#
# RigL's paper (Appendix H) counts an ordinary sparse step as 3·f_S (forward, input gradient,
# weight gradient) and an update step as 2·f_S + f_D: the weight gradient is dense there. With
# an update every ΔT steps that is a small surcharge over SET, which needs no gradient to grow.

# %%
for label, flops in (("SET", set_flops), ("RigL", rigl_flops)):
    print(f"{label:5s} training FLOPs {flops['training_relative']:.4f} of dense, "
          f"inference {flops['inference_relative']:.4f}")
print(f"RigL made {rigl.describe()['n_updates']} topology updates, one every {DELTA_T} steps")
if matplotlib.get_backend().lower() != "agg":
    plt.show()

# %% [markdown]
# ## What's next
#
# RigL's connections can land anywhere, which is hard to run fast. Tutorial 08 (SRigL) keeps
# the same rule but gives every neuron the same number of inputs, a structure that runs fast
# even one sample at a time.
