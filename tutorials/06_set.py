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
# does. They call it Sparse Evolutionary Training (SET). The algorithm file is
# `sparsenet/algorithms/set.py`; the schedule and update step it shares with RigL and SRigL are
# in `sparsenet/algorithms/dst.py`.
#
# **You will learn**
#
# 1. SET's Erdős–Rényi layer densities (the ε of the paper), and how a model is built sparse;
# 2. one rewiring step by hand: a training loop that calls SET's hooks where `sparsenet.train`
#    calls them, what the update dropped and grew, and the layer's mask before and after;
# 3. the shortcut, `run`, which trains the same network to the same numbers;
# 4. the paper's schedule (every epoch) against the one used here by default;
# 5. SET against a static sparse network of the same size, and how far its topology moves.
#
# **Prerequisites**: tutorial 01 (the training loop) and 02 (what CSR stores).
# **Time**: about 30 minutes to read and try the exercises; the last line prints how long the
# code itself took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/06_set.py` uses a slice of the data and two
# epochs, and rewires every 2 steps instead of 100 so that the few steps still show updates;
# its figures go to `figures/` (the output names each file).

# %%
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("06")            # inline in Jupyter; always saved to figures/06_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet import optim  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.algorithms.set import SET  # noqa: E402
from sparsenet.data import BatchLoader  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.nn.functional import cross_entropy  # noqa: E402
from sparsenet.nn.models import architecture, sparse_densities, weight_shapes  # noqa: E402
from sparsenet.train import (TrainConfig, epochs_for, fast_mode, load_arrays, run,  # noqa: E402
                             train_phase)

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
DELTA_T = 2 if FAST else 100       # fast mode has only a few steps: rewire often to see it
started = time.perf_counter()
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
data = (x_train, y_train, x_test, y_test, origin)          # what `train_phase` takes
print(f"fast mode: {FAST}, training images: {len(y_train):,}, data from: {origin}")

# %% [markdown]
# ## 1. A random sparse graph per layer: Erdős–Rényi densities
#
# SET gives a layer with n_in inputs and n_out outputs ε·(n_in + n_out) connections, a density
# of ε·(n_in + n_out)/(n_in·n_out): small layers are kept denser than big ones. The paper uses
# ε = 20 for its MLPs. `get_method("set", epsilon=20)` does exactly that; by default sparsenet
# asks for a sparsity instead and shares it with ERK (RigL's extension of the same formula), so
# that every method can be compared at the same number of weights.
#
# `architecture` describes a model without building it, so the densities can be worked out
# before a single weight exists; `build_model(..., sparsity=...)` (or `epsilon=...`) then builds
# each layer sparse directly, sampling its pattern and drawing only the stored values.

# %%
shapes = weight_shapes(architecture("lenet300"))          # {layer name: (out, in)}
er = sparse_densities(shapes, epsilon=20)
erk = sparse_densities(shapes, sparsity=0.9)              # ERK, the default distribution
for name, shape in shapes.items():
    print(f"layer {name} {shape}:  ER with ε=20 -> density {er[name]:.3f}   "
          f"ERK at 90 % sparsity -> density {erk[name]:.3f}")
dense_weights = sum(out * inp for out, inp in shapes.values())
kept = sum(er[name] * out * inp for name, (out, inp) in shapes.items())
print(f"ε = 20 keeps {kept / dense_weights:.1%} of LeNet-300-100's weights "
      "(a layer whose ER density passes 1 stays dense)")

# %% [markdown]
# **Try it**
#
# - `print(build_model("lenet300", epsilon=20))`: the paper's network. The two hidden layers
#   print as `SparseLinear` at the densities above (ε = 20 stores a few more weights than
#   90 % sparsity does), the output layer as a dense `Linear`.
# - `sparse_densities(shapes, sparsity=0.9, distribution="uniform")`: every layer at 0.1,
#   the small output layer included; ERK moves weights from the big first layer to it.
#
# ## 2. One rewiring step, by hand
#
# `sparsenet.train` calls a method's hooks at fixed places in the loop of tutorial 01
# (`sparsenet/algorithms/base.py` lists them):
#
#     method.setup(model, optimizer, loader, total_steps)    once, before the optimizer exists
#     every step t:  forward, loss, zero_grad, backward
#                    method.after_backward(t)                 edit gradients (SET: nothing)
#                    optimizer.step()
#                    method.after_step(t)                     every ΔT steps: drop and grow
#     every epoch:   method.after_epoch(epoch)                (SET: nothing)
#
# Below, that loop is written out for one epoch of SET at 90 % sparsity. SET's update is in
# `after_step`: every ΔT steps (until 75 % of training) it drops the fraction ζ_t of each
# layer's weights closest to zero, ζ_t of the negative and ζ_t of the positive ones, and grows
# as many at random empty positions, starting at 0. ζ starts at 0.3 and decays along a cosine.
# `method.optimizer = optimizer` lets the update move each weight's momentum with it, and
# discard a dropped weight's: a weight that is gone cannot come back through its momentum.
# The loop keeps a copy of the first layer just before its first update, and one just after.

# %%
sn.manual_seed(0)
method = SET(sparsity=0.9, delta_t=DELTA_T)               # ζ = 0.3, cosine decay, T_end = 75 %
model = build_model("lenet300", **method.build_options(shapes))   # as `run` builds it
print(model)
loader = BatchLoader(x_train, y_train, batch_size=128, shuffle=True, seed=0)
total_steps = EPOCHS * len(loader)                         # the whole run's, for the schedule

method.setup(model, None, loader, total_steps)            # hook: once
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
method.optimizer = optimizer
scheduler = optim.CosineLR(optimizer, total=total_steps)
name, layer = method.layers[0]                            # the first sparse layer, 784 -> 300

step, loss_sum, seen, first_update = 0, 0.0, 0, None
for images, labels in loader:                             # one epoch
    loss = cross_entropy(model(sn.Tensor(images)), labels)
    optimizer.zero_grad()
    loss.backward()
    method.after_backward(step)                           # hook
    optimizer.step()
    if first_update is None and method.is_update_step(step):
        weights_before = layer.weight.to_dense()          # (300, 784), 0 where nothing is stored
        mask_before = layer.weight.mask()                 # (300, 784) bool: stored or not
    method.after_step(step)                               # hook: rewires on update steps
    if first_update is None and method.updates:
        first_update = method.updates[0]
        weights_after, mask_after = layer.weight.to_dense(), layer.weight.mask()
    scheduler.step()
    loss_sum += loss.item() * len(labels)
    seen += len(labels)
    step += 1
method.after_epoch(1)                                     # hook
print(f"epoch 1: {step} steps, mean training loss {loss_sum / seen:.4f}, "
      f"{len(method.updates)} topology updates")
for update in method.updates[:5]:
    print(f"  step {update['step']:4d}: ζ_t = {update['fraction']:.3f}, weights replaced per "
          f"layer {update['replaced']}")

# %% [markdown]
# What the first update did to the first layer. The drop took the weights closest to zero on
# each side of zero, the same fraction of each sign; the growth drew new positions at random
# and set them to 0. A position can be dropped and drawn again in the same update: SET's
# reference code restarts such a weight, so it counts as replaced without changing the mask.

# %%
dropped = mask_before & ~mask_after                       # stored before, gone after
grown = mask_after & ~mask_before                         # new positions
kept = mask_before & mask_after
replaced = first_update["replaced"][name]
negative, positive = weights_before[mask_before] < 0, weights_before[mask_before] >= 0
print(f"step {first_update['step']}, layer {name}: {mask_before.sum():,} weights, "
      f"ζ_t = {first_update['fraction']:.3f} -> {replaced:,} replaced")
print(f"  dropped {dropped.sum():,}: {(weights_before[dropped] < 0).sum():,} of the "
      f"{negative.sum():,} negative and {(weights_before[dropped] >= 0).sum():,} of the "
      f"{positive.sum():,} positive weights")
print(f"  largest |w| dropped {np.abs(weights_before[dropped]).max():.4f}; median |w| kept "
      f"{np.median(np.abs(weights_before[kept])):.4f}")
print(f"  grown {grown.sum():,} new positions, their values: {np.unique(weights_after[grown])}")
print(f"  dropped and drawn again at once (restarted at 0): {replaced - dropped.sum():,}")
print(f"  weights stored after the update: {mask_after.sum():,} (unchanged)")

fig, ax = plt.subplots(figsize=(7, 3))
values = weights_before[mask_before]
bins = np.linspace(values.min(), values.max(), 80)
ax.hist(weights_before[kept], bins=bins, color="C0", label="kept")
ax.hist(weights_before[dropped], bins=bins, color="C3", label="dropped")
ax.set(xlabel="weight", ylabel="count", title=f"SET's drop on layer {name}, step "
       f"{first_update['step']}")
ax.legend()
fig.tight_layout()
figures.show(fig, "drop_histogram")


# %%
def picture(mask, highlight, color):
    """An RGB image of a mask: stored weights black, `highlight` in `color`, empty white."""
    image = np.ones(mask.shape + (3,))
    image[mask] = 0.0
    image[highlight] = color
    return image


rows, cols = slice(0, 40), slice(350, 430)                # 40 neurons x 80 input pixels
fig, (ax_before, ax_after) = plt.subplots(1, 2, figsize=(11, 3.2))
ax_before.imshow(picture(mask_before, dropped, (0.85, 0.1, 0.1))[rows, cols],
                 interpolation="nearest")
ax_before.set_title(f"before: {dropped[rows, cols].sum()} to drop (red)")
ax_after.imshow(picture(mask_after, grown, (0.1, 0.65, 0.1))[rows, cols], interpolation="nearest")
ax_after.set_title(f"after: {grown[rows, cols].sum()} grown (green)")
for ax in (ax_before, ax_after):
    ax.set(xlabel="input pixel 350-429", ylabel="neuron 0-39", xticks=[], yticks=[])
fig.suptitle(f"layer {name}'s mask around SET's first update (step {first_update['step']}), "
             "a corner of it")
fig.tight_layout()
figures.show(fig, "mask_before_after")

# %% [markdown]
# **Try it**
#
# - Start again from `sn.manual_seed(0)` with `SET(sparsity=0.9, zeta=0.1, delta_t=DELTA_T)`:
#   the first update replaces about a third as many weights.
# - Print `method.drop_scores(layer)[:10]`: one score per stored weight, its rank by |w| among
#   the weights of its sign divided by how many have that sign. The lowest scores go first,
#   which is how the drop takes the same fraction from each side of zero.
# - Build both the model and the method with `format="masked"` (a dense weight times a mask,
#   tutorial 02): the update replaces the same number of weights, and training gives the same
#   losses to float precision; only the storage differs.
#
# ## 3. The shortcut
#
# `run(TrainConfig(method="set", ...))` builds the same sparse model from the same seed and
# runs the loop above, hooks included, for every epoch; the method's options go in
# `method_options`. Its first epoch is the one trained by hand:

# %%
config = TrainConfig(model="lenet300", method="set", sparsity=0.9, epochs=EPOCHS, seed=0,
                     progress=False, method_options={"delta_t": DELTA_T})
record = run(config, log=None)
print(f"epoch 1 mean training loss: by hand {loss_sum / seen:.6f}, "
      f"by run {record['history'][0]['loss']:.6f}")
print(f"first update: by hand {first_update['replaced']}, "
      f"by run {record['method_details']['updates'][0]['replaced']}")
print(f"after {record['epochs']} epochs: test accuracy {record['test_accuracy']:.4f}, "
      f"{record['method_details']['n_updates']} topology updates, density "
      f"{record['density']:.4f}" + (" (fast mode: too little training to mean much)"
                                     if FAST else ""))

# %% [markdown]
# ## 4. When to rewire
#
# The paper rewires once at the end of every epoch (except the last) with a constant ζ. RigL's
# authors later ran SET with their own schedule: every ΔT = 100 steps, ζ decaying along a cosine
# and no change in the last quarter of training, so that connections added late still have
# time to grow. sparsenet uses the latter by default (`delta_t=100, decay="cosine",
# t_end=0.75`); the paper's is `delta_t="epoch", decay="constant", t_end=1.0`. These are the
# method's options: `sparsenet methods set` lists them all with their defaults and sources, and
# `sparsenet train --method set --opt delta_t=epoch ...` sets them (SET's fraction is `zeta`,
# where RigL says `alpha`). A run too short for its ΔT warns that it makes no update at all.
# Below: the fraction rewired at each update of a 20-epoch run on the full training set (469
# steps per epoch), under each. Only the schedule is set up here: nothing is trained.

# %%
from sparsenet.algorithms.options import method_options  # noqa: E402

for option in method_options(SET):                   # what `sparsenet methods set` prints
    if option.name in ("zeta", "delta_t", "decay", "t_end"):
        print(f"{option.name} = {option.default!r}: {option.help}")

steps_per_epoch = -(-60000 // 128)
schedule_steps = 20 * steps_per_epoch
schedules = {"paper: every epoch, constant ζ": dict(delta_t="epoch", decay="constant", t_end=1.0),
             "default: ΔT = 100, cosine, T_end = 75 %": {}}
fig, ax = plt.subplots(figsize=(7, 3))
for label, options in schedules.items():
    schedule = SET(sparsity=0.9, **options)
    schedule.setup(build_model("lenet300", sparsity=0.9), None, [None] * steps_per_epoch,
                   schedule_steps)                       # a list stands in for the loader's length
    update_steps = [s for s in range(schedule_steps) if schedule.is_update_step(s)]
    ax.plot(update_steps, [schedule.drop_fraction(s) for s in update_steps], ".",
            label=f"{label} ({len(update_steps)} updates)")
ax.set(xlabel="training step", ylabel="fraction rewired", title="SET schedules, 20 epochs")
ax.legend(fontsize=8)
fig.tight_layout()
figures.show(fig, "schedules")

# %% [markdown]
# ## 5. SET against a static sparse network
#
# The control for any dynamic method is the same random sparse network trained without ever
# changing its connections (`static`). Both start from the same random pattern (same seed).
# `train_phase` is the part of `run` that trains a model with a method *object*, so a subclass
# of SET can watch the first layer's mask after every update.


# %%
def train(method, seed=0):
    """Train a LeNet-300-100 built sparse for `method`; returns (model, history, flops)."""
    config = TrainConfig(model="lenet300", epochs=EPOCHS, seed=seed, progress=False)
    sn.manual_seed(seed)
    model = build_model("lenet300", **method.build_options(weight_shapes(architecture("lenet300"))))
    history, flops, _ = train_phase(model, method, config, data, epochs_for(config), log=None)
    return model, history, flops


class Watched(SET):
    """SET that remembers the first layer's mask at the start and after every update."""

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.masks = [(0, self.first_mask())]

    def first_mask(self):
        _, first_layer = self.layers[0]          # self.layers: the (name, layer) pairs it edits
        return first_layer.weight.mask()

    def update(self, step):
        super().update(step)
        self.masks.append((step, self.first_mask()))


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
figures.show(fig, "set_vs_static")
print(f"static: {static_history[-1]['test_accuracy']:.4f}   "
      f"SET: {set_history[-1]['test_accuracy']:.4f}   "
      f"({set_method.describe()['n_updates']} topology updates)")
if FAST:
    print("(fast mode: 1,000 images and two epochs are too few to tell the two apart; run "
          "without SPARSENET_FAST for a comparison that means something)")
print(f"SET's training FLOPs: {set_flops['training_relative']:.3f} of dense (random growth "
      "needs no dense gradient)")

# %% [markdown]
# ## 6. How far did the topology move?
#
# The first layer's connections after each update, compared with its initial ones: the share
# still present. Rewiring ζ = 30 % at a time does not replace 30 % of the network each time:
# a new connection that turns out useful grows away from zero and stays.

# %%
_, start = set_method.masks[0]                # (step 0, the initial mask)
update_steps = [s for s, _ in set_method.masks]
shared = [(mask & start).sum() / start.sum() for _, mask in set_method.masks]
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(update_steps, shared, "o-")
ax.set(xlabel="training step", ylabel="share of initial connections",
       title="SET, first layer", ylim=(0, 1.05))
fig.tight_layout()
figures.show(fig, "topology_drift")
print(f"after the last update, {shared[-1]:.1%} of the first layer's initial connections remain")

# %% [markdown]
# **Try it**
#
# - Train `Watched(sparsity=0.9, delta_t="epoch", decay="constant", t_end=1.0)`, the paper's
#   schedule: one update at the end of every epoch but the last (in fast mode a single one, at
#   step 7), each replacing ζ = 30 % of every layer, so the drift curve falls in a few big
#   steps instead of many small ones.
# - Train both at `sparsity=0.98`: with a fiftieth of the weights left, compare the two
#   accuracies again (on the full data, run without fast mode).
#
# ## What's next
#
# SET grows connections blindly. Tutorial 07 (RigL) grows them where the loss gradient says
# they would help most, at the price of a dense gradient every ΔT steps.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
