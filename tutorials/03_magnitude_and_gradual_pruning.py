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
# The algorithm files are `sparsenet/algorithms/magnitude.py` and `sparsenet/algorithms/gmp.py`
# (its schedule in `sparsenet/algorithms/schedules.py`).
#
# **You will learn**
#
# 1. what a trained network's weights look like: most sit near zero;
# 2. how to prune one by magnitude, at once (`sparsenet.algorithms.magnitude`), and fine-tune it;
# 3. Zhu & Gupta's cubic schedule, and the densities a `gmp` run really goes through;
# 4. how one-shot and gradual pruning compare across sparsities.
#
# **Prerequisites**: tutorial 01 (the training loop); 02 helps (what a CSR layer stores).
# **Time**: about 25 minutes to read and try the exercises; the last line prints how long the
# code itself took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/03_magnitude_and_gradual_pruning.py` uses a
# slice of the data and two epochs; its figures go to `figures/` (the output names each file).

# %%
import copy
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("03")            # inline in Jupyter; always saved to figures/03_*.png
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
DELTA_T = 1 if FAST else 100       # gmp's steps between prunings (fast mode: 16 steps in all)
started = time.perf_counter()
sn.manual_seed(0)
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
data = (x_train, y_train, x_test, y_test, origin)          # what `train_phase` and `run` take
config = TrainConfig(model="lenet300", epochs=EPOCHS, progress=False)
print(f"fast mode: {FAST} | training images: {len(y_train):,} | data from: {origin}")


# %% [markdown]
# ## 1. Where a trained network's weights sit
#
# `train_phase` is one phase of the training loop of tutorial 01: it builds the optimizer (SGD
# with momentum 0.9, cosine learning rate) and calls the method's hooks at every step. A plain
# `Method()` has no hooks: this is ordinary dense training. A copy taken before it keeps the
# initial weights to compare with.

# %%
dense = build_model("lenet300")
initial = copy.deepcopy(dense)
history, _, _ = train_phase(dense, Method(), config, data, EPOCHS, log=None)
dense_accuracy = evaluate(dense, x_test, y_test)[0]
print(f"dense LeNet-300-100 after {EPOCHS} epochs: test accuracy {dense_accuracy:.4f}")

# %% [markdown]
# Kaiming's uniform initialization draws each layer's weights from a flat block, ±√(6 / fan-in)
# (the grey outline). Training moves them, and a few grow beyond the block. Keeping 10 % of a
# layer by magnitude means cutting at the 90th percentile of |w|, the dashed lines: everything
# between them goes. The rule is that small weights matter least to the output: whether that
# holds is what the accuracy after pruning, below, measures.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (name, layer), (_, start) in zip(axes, prunable_layers(dense), prunable_layers(initial)):
    w, w0 = layer.weight.data.ravel(), start.weight.data.ravel()
    cut = np.quantile(np.abs(w), 0.9)
    bins = np.linspace(min(w.min(), w0.min()), max(w.max(), w0.max()), 120)
    ax.hist(w, bins=bins, color="C0", label="trained")
    ax.hist(w0, bins=bins, histtype="step", color="grey", label="initial")
    for x in (-cut, cut):
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.set(title=f"layer {name}: {layer.weight.shape[0]}x{layer.weight.shape[1]}", xlabel="w")
    moved = np.abs(w - w0).mean() / np.abs(w0).mean()
    print(f"layer {name}: 90 % of |w| lie below {cut:.4f} (largest |w| {np.abs(w).max():.4f}, "
          f"at initialization {np.abs(w0).max():.4f}); mean change {moved:.0%} of the mean |w0|")
axes[0].set_ylabel("weights")
axes[0].legend(fontsize=8)
fig.tight_layout()
figures.show(fig, "dense_weights")

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
# out, and fine-tuning moves them on from there.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (name, layer) in zip(axes, prunable_layers(pruned)):
    ax.hist(layer.values.data, bins=120, color="C1")
    ax.set(title=f"layer {name}: {layer.weight.nnz:,} weights kept", xlabel="w")
axes[0].set_ylabel("weights")
fig.tight_layout()
figures.show(fig, "pruned_weights")

# %% [markdown]
# **Try it**
#
# - Prune a copy with `MagnitudePruning(sparsity=0.99)`: every layer meets the floor
#   `min_density=0.01`, so each keeps exactly 1 %, the accuracy right after pruning falls to
#   about chance (10 %), and in fast mode two epochs of fine-tuning do not bring it back.
# - Prune a copy with `scope="layerwise"` and `print(pruned)`: every layer now keeps 10 %,
#   where the global threshold left the layers different densities.
#
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


gmp = TracedGMP(sparsity=0.9, delta_t=DELTA_T)
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
figures.show(fig, "cubic_schedule")
print(f"t0 = {gmp.t0}, last update = {gmp.t_end} of {len(steps)} steps; final density "
      f"{gmp.trace[-1]:.4f}, test accuracy {gmp_history[-1]['test_accuracy']:.4f}")

# %% [markdown]
# **Try it**
#
# - `TracedGMP(sparsity=0.9, delta_t=DELTA_T, begin=0.0, end=0.9)` (and `gmp.trace = []`):
#   pruning starts at step 0 and ends at 90 % of training, so the measured curve is stretched
#   over almost the whole run, with little time left to recover.
# - Set `delta_t` to a tenth of the training steps (2 in fast mode, about 470 on the full
#   data): the measured sparsity climbs in a few big stairs instead of following the curve.

# %% [markdown]
# ## 4. One-shot against gradual, across sparsities
#
# The one-shot runs share the dense network above (prune a copy, fine-tune it); each gradual
# run is a full training with `sparsenet train --method gmp`'s defaults, Δt aside: in fast mode
# it prunes at every step (`DELTA_T`), since with the default 100 a 16-step run would prune only
# once, everything at one step, and that is one-shot pruning without the fine-tuning. Both end
# with the same number of weights per layer (the one-shot runs prune `scope="layerwise"` here,
# as gmp does).

# %%
one_shot, gradual = [], []
for s in SPARSITIES:
    model = copy.deepcopy(dense)
    MagnitudePruning(sparsity=s, scope="layerwise").prune(model)   # gmp's per-layer shares
    h, _, _ = train_phase(model, Method(), config, data, FINETUNE_EPOCHS, log=None,
                          seed_offset=1)
    one_shot.append(h[-1]["test_accuracy"])
    record = run(TrainConfig(model="lenet300", method="gmp", sparsity=s, epochs=EPOCHS,
                             progress=False, method_options={"delta_t": DELTA_T}),
                 log=None, data=data)
    gradual.append(record["test_accuracy"])
    print(f"sparsity {s:.2f}: one-shot + fine-tune {one_shot[-1]:.4f}   gradual {gradual[-1]:.4f}")
if FAST:
    print(f"(fast mode: gradual pruning has {gmp.t_end - gmp.t0} steps to remove the weights and "
          f"{len(steps) - 1 - gmp.t_end} to recover, so at high sparsity its accuracy can fall "
          "to about chance, 10 %, or below it when the network predicts a few classes only, "
          "and mostly wrong. These numbers show that the code runs, not which method is better)")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.axhline(dense_accuracy, color="k", ls="--", lw=1, label="dense")
ax.plot(SPARSITIES, one_shot, marker="o", label=f"one-shot + {FINETUNE_EPOCHS} epochs fine-tune")
ax.plot(SPARSITIES, gradual, marker="s", label="gradual (gmp)")
ax.set(xlabel="sparsity", ylabel="test accuracy", title="LeNet-300-100, magnitude pruning")
ax.legend()
figures.show(fig, "one_shot_vs_gradual")

# %% [markdown]
# **Try it**
#
# - Add 0.99 to `SPARSITIES`: both methods lose more. Which holds up better there? Run without
#   fast mode to find out; fast mode is too short to tell.
# - Print `record["per_class_accuracy"]` of the last gradual run: one accuracy per class. In fast
#   mode at 98 % a few classes keep most of theirs while several fall to 0.
#
# ## What to take away
#
# - Cutting the smallest weights of a trained network costs little once the survivors are
#   fine-tuned, up to high sparsity: at 90 % on the full data, `magnitude` and `gmp` each end
#   within half a point of dense (`benchmarks/results/accuracy-pruning-lenet300.md`, made by
#   `python benchmarks/accuracy.py --suite pruning`).
# - Pruning gradually gives the network time to adapt while it loses weights; one-shot pruning
#   gets the time afterwards, as fine-tuning. Section 4 on the full data compares the two; the
#   fast mode's thousand images and 16 steps are too few to tell.
# - Both need the dense network first. Tutorial 04 asks whether the sparse network found this
#   way could have been trained from the start: the lottery ticket hypothesis.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
