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
# # 05 · Pruning at initialization: SNIP, GraSP, SynFlow and random
#
# Magnitude pruning (tutorial 03) and lottery tickets (04) need a trained network to know which
# weights matter. Pruning *at initialization* decides before the first step, from the random
# initial weights alone, and then trains only the sparse network, so training is cheap from
# the start. Three papers score each weight differently:
#
# | method | score of a weight (higher = keep) | data |
# |---|---|---|
# | SNIP (Lee et al. 2019) | \|∂L/∂w · w\|: the loss change if it goes | a batch |
# | GraSP (Wang et al. 2020) | w · (H g): its removal must keep the gradient flow | a sample |
# | SynFlow (Tanaka et al. 2020) | ∂R/∂w · w, R = 1ᵀ(∏ \|W\|)1, in many steps | none |
# | random (the control) | a coin | none |
#
# The algorithm files are `sparsenet/algorithms/snip.py`, `grasp.py`, `synflow.py` and
# `random_pruning.py`, with what they share in `saliency.py`.
#
# **You will learn**
#
# 1. how each method scores one freshly initialized LeNet-300-100, and what the scores look like;
# 2. how many weights each method leaves in each layer (the global ranking decides it), and
#    SNIP's tendency to starve the first layer (*layer collapse*);
# 3. how SynFlow's synaptic flow R changes through its 100 pruning steps;
# 4. how the four train side by side at the same sparsity.
#
# **Prerequisites**: tutorials 01 (the training loop) and 03 (magnitude pruning).
# **Time**: about 25 minutes to read and try the exercises; the last line prints how long the
# code itself took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/05_pruning_at_initialization.py` uses a slice
# of the data and two epochs; its figures go to `figures/` (the output names each file).

# %%
import os
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("05")            # inline in Jupyter; always saved to figures/05_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.data import BatchLoader  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, load_arrays, train_model  # noqa: E402

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 20
SPARSITY = 0.98                    # where the methods differ most
METHODS = ["snip", "grasp", "synflow", "random"]
started = time.perf_counter()
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
data = (x_train, y_train, x_test, y_test, origin)          # what `train_model` takes
print(f"fast mode: {FAST} | training images: {len(y_train):,} | data from: {origin}")


# %% [markdown]
# ## 1. Scoring one network four ways
#
# A method's `setup(model, optimizer=None, loader, total_steps)` is what the training loop
# calls before the first step: it scores the dense model, keeps the best weights, and swaps
# each layer for a sparse twin holding the *initial* values at the kept positions. We call it
# by hand on identical copies of one initialization (same seed), and read the scores back from
# `last_scores`. SynFlow's scores are those of its last step, on the network already pruned.

# %%
def pruned(name, sparsity=SPARSITY, **options):
    """A LeNet-300-100 initialized with seed 0 and pruned at init by `name`."""
    sn.manual_seed(0)
    model = build_model("lenet300")
    method = get_method(name, sparsity=sparsity, **options)
    loader = BatchLoader(x_train, y_train, batch_size=128, seed=0)
    method.setup(model, None, loader, total_steps=1)
    return model, method


results = {name: pruned(name) for name in METHODS}     # name -> (model, method)
methods = {name: method for name, (_, method) in results.items()}
for name, method in methods.items():
    seconds = method.describe()["scoring_seconds"]
    print(f"{name:8s} scored and pruned in {seconds:.2f} s")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, name in zip(axes, ["snip", "grasp", "synflow"]):
    scores = methods[name].last_scores
    for layer, s in scores.items():
        values = np.abs(s[s != 0]).ravel()
        ax.hist(np.log10(values), bins=60, alpha=0.6, density=True, label=f"layer {layer}")
    ax.set(title=name, xlabel="log10 |score|")
axes[0].legend()
fig.suptitle("Per-weight scores at initialization, by layer")
fig.tight_layout()
figures.show(fig, "scores")

# %% [markdown]
# The layers' scores live on different scales, and all three methods rank them together
# (`scope="global"`), so the ranking, not a rule of thumb, decides each layer's share.
# GraSP's scores are signed (a weight can *help* the gradient flow by leaving); the histogram
# shows their magnitudes.
#
# ## 2. How many weights each layer keeps
#
# `describe()["layers"]` reports, per layer, the density chosen and the number of output units
# left with no incoming weight at all (`dead_outputs`): such a unit only passes its bias on.
# Random pruning follows the run's `distribution` (ERK by default: denser small layers).

# %%
layers = list(methods["snip"].describe()["layers"])
fig, ax = plt.subplots(figsize=(7, 3.4))
width = 0.8 / len(METHODS)
for i, name in enumerate(METHODS):
    report = methods[name].describe()["layers"]
    ax.bar(np.arange(len(layers)) + i * width, [report[n]["density"] for n in layers],
           width, label=name)
ax.axhline(1 - SPARSITY, color="k", lw=0.8, ls="--", label="overall density")
ax.set(xticks=np.arange(len(layers)) + 0.4, xticklabels=["784→300", "300→100", "100→10"],
       yscale="log", ylabel="density kept", title=f"Per-layer density at {SPARSITY:.0%} sparsity")
ax.legend(fontsize=8)
fig.tight_layout()
figures.show(fig, "layer_densities")

for name in METHODS:
    report = methods[name].describe()["layers"]
    print(f"{name:8s}", "  ".join(f"layer {n}: density {r['density']:.4f}, "
                                  f"{r['dead_outputs']:3d} dead outputs"
                                  for n, r in report.items()))

# %% [markdown]
# SNIP gives the big first layer the smallest share, and many of its 300 hidden units end with
# no input at all: the network it trains is effectively narrower. This is the *layer collapse*
# that Tanaka et al. analyse: scores that conserve a quantity (here roughly the gradient
# signal through each layer) make a big layer's weights individually small, so a global
# ranking prunes that layer hardest. When a layer falls below a tenth of the overall density,
# `describe()["layer_collapse"]` names it and a warning is raised; every layer keeps at least
# its best weight, so the network is never cut in two.
#
# **Try it**
#
# - `pruned("snip", sparsity=0.9)`: at a milder sparsity, compare SNIP's `dead_outputs` in the
#   first layer with the 98 % run above; fewer units lose all their inputs.
# - `pruned("snip", scope="layer")`: SNIP's scores, but each layer keeps ERK's share:
#   `describe()["layers"]` shows the first layer about three times denser than under the global
#   ranking, yet with many dead outputs still, since within the layer SNIP's scores favour the
#   inputs of a few neurons.

# %% [markdown]
# ## 3. SynFlow's iterations
#
# SynFlow repeats score → prune n times (100 by default), keeping ρ^(k/n) of the weights at
# step k. Each step rescores the pruned network, so a layer that has lost many weights sees
# its survivors' scores rise: that is how it avoids collapse without looking at any data.
# `method.flow` holds the synaptic flow R that each step scored.

# %%
flow = methods["synflow"].flow
rho = 1 - SPARSITY
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogy(np.arange(1, len(flow) + 1), np.array(flow) / flow[0], label="R / R(dense)")
ax.semilogy(np.arange(1, len(flow) + 1), rho ** (np.arange(len(flow)) / len(flow)), "--",
            label="density before the step")
ax.set(xlabel="pruning step", title="SynFlow: flow kept while pruning")
ax.legend()
fig.tight_layout()
figures.show(fig, "synflow_flow")
print(f"after {len(flow)} steps the flow scored is {flow[-1] / flow[0]:.3e} of the dense "
      f"network's, with {rho ** ((len(flow) - 1) / len(flow)):.4f} of the weights")

# %% [markdown]
# ## 4. Training them side by side
#
# Now the real runs: `train_model` builds the model from the seed, calls the method's `setup`
# before the first step, and trains the sparse network with SGD (momentum 0.9, cosine
# learning rate). The scoring work is added to the training FLOPs of each run.

# %%
records = {}
for name in ["dense"] + METHODS:
    config = TrainConfig(model="lenet300", method=name, epochs=EPOCHS, progress=False, seed=0,
                         sparsity=0.0 if name == "dense" else SPARSITY)
    records[name] = train_model(config, log=None, data=data)[1]
    record = records[name]
    print(f"{name:8s} test accuracy {record['test_accuracy']:.4f}  density "
          f"{record['density']:.4f}  training FLOPs x{record['flops']['training_relative']:.4f}")
if FAST:
    print("(fast mode: two epochs on 1,000 images; at 98 % sparsity that is too little training "
          "to rank the methods, see section 5 for the full-data runs)")

fig, ax = plt.subplots(figsize=(6, 3.2))
names = list(records)
ax.bar(names, [100 * records[n]["test_accuracy"] for n in names],
       color=["grey"] + [f"C{i}" for i in range(len(METHODS))])
low = min(100 * record["test_accuracy"] for record in records.values())
ax.set(ylim=(max(0, low - 5), 100), ylabel="test accuracy (%)",
       title=f"LeNet-300-100, {SPARSITY:.0%} sparse from the start, {EPOCHS} epochs")
fig.tight_layout()
figures.show(fig, "accuracy")

# %% [markdown]
# **Try it**
#
# - Train at `SPARSITY = 0.9` instead: do the methods end closer together, and closer to
#   dense, than at 98 %? Fast mode is too short to tell; the full run answers it.
# - `model, method = pruned("synflow", iterations=10)`: SynFlow with 10 pruning steps instead
#   of 100; `method.flow` has 10 entries, and `method.describe()["scoring_seconds"]` is smaller.

# %% [markdown]
# ## 5. The full-data records
#
# The runs below, on the full Fashion-MNIST with the default 20 epochs, write their records
# to `runs/` (one JSON each). If they exist, this cell reads them back and prints a table:
#
#     sparsenet train --method snip    --sparsity 0.98 --data full --json runs/snip-0.98-s0.json
#     sparsenet train --method random  --sparsity 0.98 --data full --json runs/random-0.98-s0.json
#     sparsenet train --method random  --sparsity 0.98 --distribution uniform --data full \
#         --json runs/random-uniform-0.98-s0.json
#     sparsenet train --method snip    --sparsity 0.98 --opt scope=layer --data full \
#         --json runs/snip-layer-erk-0.98-s0.json
#
# The last two separate the two things a pruning-at-init method decides: *how many* weights
# each layer keeps (random with ERK versus uniform densities) and *which* ones (SNIP's scores
# with ERK's per-layer counts, against random with the same counts).

# %%
import glob  # noqa: E402
import json  # noqa: E402

found = 0
for path in sorted(glob.glob(os.path.join("runs", "*.json"))):
    with open(path) as f:
        saved = json.load(f)
    if saved.get("method") not in ["dense"] + METHODS or saved["data"]["fast_mode"]:
        continue
    found += 1
    first = saved["method_details"].get("layers", {}).get("1", {})
    print(f"{os.path.basename(path):34s} test accuracy {saved['test_accuracy']:.4f}  "
          f"density {saved['density']:.4f}  first layer: density "
          f"{first.get('density', 1.0):.4f}, {first.get('dead_outputs', 0)} dead outputs")
if not found:
    print(f"no full-data records in {os.path.abspath('runs')} (run the commands above from "
          "this folder)")

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
