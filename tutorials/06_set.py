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
# # 06 · SET: sparse from the first step, rewired while it learns
#
# Pruning (tutorials 03–05) starts from a dense network, or at least from dense gradients at
# initialization. Mocanu et al. (2018, *Scalable training of artificial neural networks with
# adaptive sparse connectivity inspired by network science*) never build the dense network:
# they start from a random sparse graph and, while training, **remove the connections closest
# to zero and add as many at random**. The number of weights never changes; which weights exist
# does. They call it Sparse Evolutionary Training (SET).
#
# This notebook:
#
# 1. computes SET's Erdős–Rényi layer densities (the ε of the paper);
# 2. performs one rewiring step on one layer and looks at what it removed;
# 3. compares the paper's schedule (every epoch) with the one used here by default;
# 4. trains SET against a static sparse network of the same size;
# 5. measures how far the topology moved during training.
#
# As a script: `SPARSENET_FAST=1 python tutorials/06_set.py` uses a slice of the data and two
# epochs.

# %%
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
from sparsenet.algorithms.common import layer_densities, lowest_units, prunable_layers  # noqa: E402
from sparsenet.algorithms.set import SET, er_density  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.train import (TrainConfig, epochs_for, fast_mode, load_arrays,  # noqa: E402
                             train_phase)

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
DELTA_T = 2 if FAST else 100       # fast mode has only a few steps: rewire often to see it
DATA = load_arrays("auto")
print("fast mode:", FAST, " training images:", len(DATA[1]))

# %% [markdown]
# ## 1. A random sparse graph per layer: Erdős–Rényi densities
#
# SET gives a layer with n_in inputs and n_out outputs ε·(n_in + n_out) connections, a density
# of ε·(n_in + n_out)/(n_in·n_out): small layers are kept denser than big ones. The paper uses
# ε = 20 for its MLPs. `get_method("set", epsilon=20)` does exactly that; by default sparsenet
# asks for a sparsity instead and shares it with ERK (RigL's extension of the same formula), so
# that every method can be compared at the same number of weights.

# %%
model = build_model("lenet300")
shapes = {name: layer.weight.shape for name, layer in prunable_layers(model)}
erk = layer_densities(model, 0.9, "erk")
for name, shape in shapes.items():
    print(f"layer {name} {shape}:  ER with ε=20 -> density {er_density(shape, 20):.3f}   "
          f"ERK at 90 % sparsity -> density {erk[name]:.3f}")
kept = sum(er_density(s, 20) * s[0] * s[1] for s in shapes.values())
print(f"ε = 20 keeps {kept / sum(s[0] * s[1] for s in shapes.values()):.1%} of LeNet-300-100")

# %% [markdown]
# ## 2. One rewiring step, up close
#
# SET's reference code sorts a layer's weights and removes the fraction ζ of the **negative**
# weights closest to zero and the fraction ζ of the **positive** weights closest to zero, then
# adds the same number of connections at random empty places, starting at zero. Here a SET
# method is set up on LeNet-300-100 (90 % sparse); its first layer gets weights drawn from a
# normal distribution (a stand-in for trained ones) and is rewired once with ζ = 0.3.

# %%
sn.manual_seed(0)
method = SET(sparsity=0.9, zeta=0.3, decay="constant")
model = build_model("lenet300")
method.setup(model, None, None, total_steps=1000)
name, layer = method.layers[0]
values = layer.values.data
values[:] = np.random.default_rng(0).normal(0, 0.05, values.size).astype(values.dtype)

count = int(0.3 * layer.weight.n_units)
dropped = lowest_units(method.drop_scores(layer), count)
print(f"layer {name}: {layer.weight.nnz} weights, rewiring {count} of them")
print(f"  negative weights: {(values < 0).sum()}, dropped {(values[dropped] < 0).sum()}"
      f" ({(values[dropped] < 0).sum() / (values < 0).sum():.1%})")
print(f"  positive weights: {(values >= 0).sum()}, dropped {(values[dropped] >= 0).sum()}"
      f" ({(values[dropped] >= 0).sum() / (values >= 0).sum():.1%})")

fig, ax = plt.subplots(figsize=(7, 3))
bins = np.linspace(values.min(), values.max(), 80)
ax.hist(values[~dropped], bins=bins, color="C0", label="kept")
ax.hist(values[dropped], bins=bins, color="C3", label="dropped (ζ = 0.3 of each sign)")
ax.set(xlabel="weight", ylabel="count", title=f"SET's drop on layer {name}")
ax.legend()
fig.tight_layout()

before = layer.weight.mask()
method.update_layer(name, layer, 0.3)
after = layer.weight.mask()
print(f"after the rewiring: {layer.weight.nnz} weights (unchanged), "
      f"{(after & ~before).sum()} new positions, all starting at "
      f"{np.unique(layer.weight.to_dense()[after & ~before])}")

# %% [markdown]
# ## 3. When to rewire
#
# The paper rewires once at the end of every epoch (except the last) with a constant ζ. RigL's
# authors later ran SET with their own schedule: every ΔT = 100 steps, ζ decaying along a cosine
# and no change in the last quarter of training, so that connections added late still have
# time to grow. sparsenet uses the latter by default (`delta_t=100, decay="cosine",
# t_end=0.75`); the paper's is `delta_t="epoch", decay="constant", t_end=1.0`. These are the
# method's options: `sparsenet methods set` lists them all with their defaults and sources, and
# `sparsenet train --method set --opt delta_t=epoch ...` sets them (SET's fraction is `zeta`,
# where RigL says `alpha`). A run too short for its ΔT warns that it makes no update at all.
# Below: the fraction rewired at each update of a 20-epoch run on the full training set, under
# each.

# %%
from sparsenet.algorithms.options import method_options  # noqa: E402

for option in method_options(SET):                   # what `sparsenet methods set` prints
    if option.name in ("zeta", "delta_t", "decay", "t_end"):
        print(f"{option.name} = {option.default!r}: {option.help}")

steps_per_epoch = -(-60000 // 128)
total = 20 * steps_per_epoch
schedules = {"paper: every epoch, constant ζ": dict(delta_t="epoch", decay="constant", t_end=1.0),
             "default: ΔT = 100, cosine, T_end = 75 %": {}}
fig, ax = plt.subplots(figsize=(7, 3))
for label, options in schedules.items():
    m = SET(sparsity=0.9, **options)
    m.setup(build_model("lenet300"), None, [None] * steps_per_epoch, total)
    steps = [s for s in range(total) if m.is_update_step(s)]
    ax.plot(steps, [m.drop_fraction(s) for s in steps], ".",
            label=f"{label} ({len(steps)} updates)")
ax.set(xlabel="training step", ylabel="fraction rewired", title="SET schedules, 20 epochs")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 4. SET against a static sparse network
#
# The control for any dynamic method is the same random sparse network trained without ever
# changing its connections (`static`). Both start from the same random pattern (same seed).


# %%
def train(method, seed=0):
    """Train LeNet-300-100 with `method`; returns (model, history, flops)."""
    config = TrainConfig(model="lenet300", epochs=EPOCHS, seed=seed, progress=False)
    sn.manual_seed(seed)
    model = build_model("lenet300")
    history, flops, _ = train_phase(model, method, config, DATA, epochs_for(config), log=None)
    return model, history, flops


class Watched(SET):
    """SET that remembers the first layer's mask at the start and after every update."""

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.masks = [(0, self.layers[0][1].weight.mask())]

    def update(self, step):
        super().update(step)
        self.masks.append((step, self.layers[0][1].weight.mask()))


static_model, static_history, _ = train(get_method("static", sparsity=0.9))
set_method = Watched(sparsity=0.9, delta_t=DELTA_T)
set_model, set_history, set_flops = train(set_method)

fig, ax = plt.subplots(figsize=(6, 3))
for label, history in (("static", static_history), ("SET", set_history)):
    ax.plot([h["epoch"] for h in history], [h["test_accuracy"] for h in history], "o-",
            label=label)
ax.set(xlabel="epoch", ylabel="test accuracy", title="LeNet-300-100 at 90 % sparsity")
ax.legend()
fig.tight_layout()
print(f"static: {static_history[-1]['test_accuracy']:.4f}   "
      f"SET: {set_history[-1]['test_accuracy']:.4f}   "
      f"({set_method.describe()['n_updates']} topology updates)")
print(f"SET's training FLOPs: {set_flops['training_relative']:.3f} of dense (random growth "
      "needs no dense gradient)")

# %% [markdown]
# ## 5. How far did the topology move?
#
# The first layer's connections after each update, compared with its initial ones: the share
# still present. Rewiring ζ = 30 % at a time does not replace 30 % of the network each time:
# a new connection that turns out useful grows away from zero and stays.

# %%
start = set_method.masks[0][1]
steps = [s for s, _ in set_method.masks]
shared = [(mask & start).sum() / start.sum() for _, mask in set_method.masks]
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(steps, shared, "o-")
ax.set(xlabel="training step", ylabel="share of initial connections",
       title="SET, first layer", ylim=(0, 1.05))
fig.tight_layout()
print(f"after the last update, {shared[-1]:.1%} of the first layer's initial connections remain")
if matplotlib.get_backend().lower() != "agg":
    plt.show()

# %% [markdown]
# ## What's next
#
# SET grows connections blindly. Tutorial 07 (RigL) grows them where the loss gradient says
# they would help most, at the price of a dense gradient every ΔT steps.
