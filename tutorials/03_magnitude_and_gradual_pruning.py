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
# # 03 · Magnitude pruning, at once and gradually
#
# The oldest working recipe for a sparse network is also the simplest: train it dense, then
# remove the weights closest to zero. Han et al. (2015, *Learning both Weights and Connections
# for Efficient Neural Networks*) prune a trained network once and fine-tune what is left;
# Zhu & Gupta (2017, *To prune, or not to prune*) prune a little every Δt steps *during*
# training, along a cubic schedule, so the network adapts as it loses weights.
#
# This notebook:
#
# 1. trains a dense LeNet-300-100 and looks at its weights: most sit near zero;
# 2. prunes it once by magnitude (`sparsenet.algorithms.magnitude`) and fine-tunes it;
# 3. plots Zhu & Gupta's cubic schedule, and the densities a `gmp` run really goes through;
# 4. compares one-shot and gradual pruning across sparsities.
#
# As a script: `SPARSENET_FAST=1 python tutorials/03_magnitude_and_gradual_pruning.py` uses a
# slice of the data and two epochs.

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
from sparsenet.algorithms import Method  # noqa: E402
from sparsenet.algorithms.common import prunable_layers  # noqa: E402
from sparsenet.algorithms.gmp import GradualMagnitudePruning  # noqa: E402
from sparsenet.algorithms.magnitude import MagnitudePruning  # noqa: E402
from sparsenet.algorithms.schedules import CubicSparsity  # noqa: E402
from sparsenet.metrics import sparsity_summary  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.train import (TrainConfig, evaluate, fast_mode, load_arrays, run,  # noqa: E402
                             train_phase)

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
FINETUNE_EPOCHS = 2 if FAST else 5
SPARSITIES = [0.5, 0.9, 0.98] if FAST else [0.5, 0.8, 0.9, 0.95, 0.98]
sn.manual_seed(0)
data = load_arrays("auto")
x_test, y_test = data[2], data[3]
config = TrainConfig(model="lenet300", epochs=EPOCHS, progress=False)
print("fast mode:", FAST, "| training images:", len(data[1]), "| data from:", data[4])


def show(fig):
    if matplotlib.get_backend().lower() != "agg":
        plt.show()
    plt.close(fig)


# %% [markdown]
# ## 1. A trained network is mostly small weights
#
# `train_phase` is one phase of the training loop: it builds the optimizer (SGD with momentum
# 0.9, cosine learning rate) and calls the method's hooks at every step. A plain `Method()`
# has no hooks: this is ordinary dense training.

# %%
dense = build_model("lenet300")
history, _, _ = train_phase(dense, Method(), config, data, EPOCHS, log=None)
dense_accuracy = evaluate(dense, x_test, y_test)[0]
print(f"dense LeNet-300-100 after {EPOCHS} epochs: test accuracy {dense_accuracy:.4f}")

# %% [markdown]
# Each layer's weights form a peak around zero. Keeping 10 % of a layer means cutting at the
# 90th percentile of |w|, the dashed lines: everything between them goes.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (name, layer) in zip(axes, prunable_layers(dense)):
    w = layer.weight.data.ravel()
    cut = np.quantile(np.abs(w), 0.9)
    ax.hist(w, bins=120, color="C0")
    for x in (-cut, cut):
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.set(title=f"layer {name}: {layer.weight.shape[0]}x{layer.weight.shape[1]}", xlabel="w")
    print(f"layer {name}: 90 % of |w| lie below {cut:.4f} (largest |w| {np.abs(w).max():.4f})")
axes[0].set_ylabel("weights")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 2. One-shot pruning, then fine-tuning
#
# `MagnitudePruning.prune` swaps every layer for a sparse one that keeps its largest |w|
# (`scope="global"`, the default: one threshold over all layers, so a layer of small weights
# gives up more; `scope="layerwise"`: the same 10 % in each layer). The pruned weights are
# *gone*: the CSR layer stores only the survivors, so fine-tuning with momentum and weight decay
# cannot bring any of them back.
#
# Both defaults, global ranking and fine-tuning at the training rate, were chosen on a
# validation split (`benchmarks/tune.py --grid pruning`): on the full data set, layerwise
# pruning or a rate ten times smaller each cost about half a point.

# %%
pruned = copy.deepcopy(dense)
MagnitudePruning(sparsity=0.9).prune(pruned)
print(pruned)
print(f"density {sparsity_summary(pruned)['density']:.4f}, test accuracy right after pruning "
      f"{evaluate(pruned, x_test, y_test)[0]:.4f} (dense: {dense_accuracy:.4f})")

# %%
tuned_history, _, _ = train_phase(pruned, Method(), config, data, FINETUNE_EPOCHS,
                                  log=None, seed_offset=1)
print(f"after {FINETUNE_EPOCHS} fine-tuning epochs at lr {config.lr}: "
      f"test accuracy {tuned_history[-1]['test_accuracy']:.4f}")

# %% [markdown]
# The survivors keep their trained values: their histogram is the dense one with the middle cut
# out, and fine-tuning moves it only a little.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (name, layer) in zip(axes, prunable_layers(pruned)):
    ax.hist(layer.values.data, bins=120, color="C1")
    ax.set(title=f"layer {name}: {layer.weight.nnz:,} weights kept", xlabel="w")
axes[0].set_ylabel("weights")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 3. The cubic schedule
#
# Gradual magnitude pruning raises the sparsity from $s_i$ to $s_f$ between steps $t_0$ and
# $t_0 + n\Delta t$:
#
# $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{n\Delta t}\right)^3$$
#
# and every Δt steps it removes the lowest-|w| weights of each layer down to $s_t$. The curve
# is steep at first, while there are many redundant weights, and flat near the end.
# `GradualMagnitudePruning` starts pruning at 10 % of training and stops at 60 % by default.
# Below, a subclass records the real density of the model after every step of a run.


# %%
class TracedGMP(GradualMagnitudePruning):
    """gmp that writes down the model's density after every step."""

    def after_step(self, step):
        super().after_step(step)
        self.trace.append(sparsity_summary(self.model)["density"])


gmp = TracedGMP(sparsity=0.9, delta_t=10 if FAST else 100)
gmp.trace = []
gmp_model = build_model("lenet300")
gmp_history, _, _ = train_phase(gmp_model, gmp, config, data, EPOCHS, log=None)
steps = np.arange(len(gmp.trace))
schedule = CubicSparsity(0.9, gmp.t0, gmp.t_end, gmp.delta_t)

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(steps, [schedule(t) for t in steps], label="$s_t$ (cubic schedule)")
ax.step(steps, 1 - np.array(gmp.trace), where="post", label="measured sparsity", alpha=0.8)
ax.axvline(gmp.t0, color="k", ls=":", lw=1)
ax.axvline(gmp.t_end, color="k", ls=":", lw=1)
ax.set(xlabel="training step", ylabel="sparsity", title=f"gmp, Δt = {gmp.delta_t} steps")
ax.legend()
show(fig)
print(f"t0 = {gmp.t0}, last update = {gmp.t_end} of {len(steps)} steps; final density "
      f"{gmp.trace[-1]:.4f}, test accuracy {gmp_history[-1]['test_accuracy']:.4f}")

# %% [markdown]
# ## 4. One-shot against gradual, across sparsities
#
# The one-shot runs share the dense network above (prune a copy, fine-tune it); each gradual
# run is a full training with `sparsenet train --method gmp`'s defaults. Both end with the
# same number of weights per layer (the one-shot runs prune `scope="layerwise"` here, as gmp
# does).

# %%
one_shot, gradual = [], []
for s in SPARSITIES:
    model = copy.deepcopy(dense)
    MagnitudePruning(sparsity=s, scope="layerwise").prune(model)   # gmp's per-layer shares
    h, _, _ = train_phase(model, Method(), config, data, FINETUNE_EPOCHS, log=None,
                          seed_offset=1)
    one_shot.append(h[-1]["test_accuracy"])
    record = run(TrainConfig(model="lenet300", method="gmp", sparsity=s, epochs=EPOCHS,
                             progress=False), log=None, data=data)
    gradual.append(record["test_accuracy"])
    print(f"sparsity {s:.2f}: one-shot + fine-tune {one_shot[-1]:.4f}   gradual {gradual[-1]:.4f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.axhline(dense_accuracy, color="k", ls="--", lw=1, label="dense")
ax.plot(SPARSITIES, one_shot, marker="o", label=f"one-shot + {FINETUNE_EPOCHS} epochs fine-tune")
ax.plot(SPARSITIES, gradual, marker="s", label="gradual (gmp)")
ax.set(xlabel="sparsity", ylabel="test accuracy", title="LeNet-300-100, magnitude pruning")
ax.legend()
show(fig)

# %% [markdown]
# ## What to take away
#
# - A trained network has most of its weights near zero: cutting them costs little once the
#   survivors are fine-tuned, up to high sparsity.
# - Pruning gradually gives the network time to adapt; at the highest sparsities it tends to
#   hold up better than pruning everything at once (on the full data set; the fast mode's
#   thousand images are too few to tell).
# - Both need the dense network first. Tutorial 04 asks whether the sparse network found this
#   way could have been trained from the start: the lottery ticket hypothesis.
