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
# dense matrix never exists whole. The algorithm file is `sparsenet/algorithms/rigl.py`, the
# schedule and update step it shares with SET in `sparsenet/algorithms/dst.py`.
#
# **You will learn**
#
# 1. why the gradient is a good guide, with a one-step experiment;
# 2. one RigL update by hand: the training loop with RigL's hooks where `sparsenet.train` calls
#    them, what the update dropped and grew (and the gradient there), the mask before and after;
# 3. the shortcut, `run`, which trains the same network to the same numbers;
# 4. RigL, SET and a static network at the same sparsity;
# 5. the first layer's connections drawn on the 28×28 input image as RigL moves them;
# 6. what the dense gradients cost in FLOPs.
#
# **Prerequisites**: tutorials 01 (the training loop) and 06 (SET: the hooks, the schedule).
# **Time**: about 30 minutes to read and try the exercises; the last line prints how long the
# code itself took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/07_rigl.py` uses a slice of the data and two
# epochs, and updates every 2 steps instead of 100 so that the few steps still show updates;
# its figures go to `figures/` (the output names each file).

# %%
import copy
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("07")            # inline in Jupyter; always saved to figures/07_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet import optim  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.algorithms.common import change_topology  # noqa: E402
from sparsenet.algorithms.rigl import RigL  # noqa: E402
from sparsenet.data import BatchLoader  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.nn.functional import cross_entropy  # noqa: E402
from sparsenet.nn.models import architecture, weight_shapes  # noqa: E402
from sparsenet.sparse.topology import random_empty_units  # noqa: E402
from sparsenet.train import (TrainConfig, epochs_for, fast_mode, load_arrays, run,  # noqa: E402
                             train_phase)

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
DELTA_T = 2 if FAST else 100       # fast mode has only a few steps: update often to see it
started = time.perf_counter()
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
data = (x_train, y_train, x_test, y_test, origin)          # what `train_phase` takes
print(f"fast mode: {FAST}, training images: {len(y_train):,}, data from: {origin}")


def train(method, seed=0):
    """Train a LeNet-300-100 built sparse for `method`; returns (model, history, flops)."""
    config = TrainConfig(model="lenet300", epochs=EPOCHS, seed=seed, progress=False)
    sn.manual_seed(seed)
    shapes = weight_shapes(architecture("lenet300"))      # {layer: (out, in)}, nothing built
    model = build_model("lenet300", **method.build_options(shapes))   # as `run` builds it
    history, flops, _ = train_phase(model, method, config, data, epochs_for(config), log=None)
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
x_batch, y_batch = x_train[:256], y_train[:256]
layer = static_model.get_submodule("1")            # the first (sparse) layer, 784 -> 300
layer.keep_for_growth = True                       # keep (G, X) of the next backward
loss = cross_entropy(static_model(sn.Tensor(x_batch)), y_batch)
loss.backward()
G, X = layer.growth_arrays                         # (300, batch), (784, batch)
k, lr = 1000, 0.05
choices = {"largest |gradient| (RigL)": layer.dense_grad_topk(k=k)[:2],
           "random (SET)": random_empty_units(layer.weight, k, np.random.default_rng(0))[:2]}
print(f"loss on the batch before: {loss.item():.4f}")
for label, (rows, cols) in choices.items():
    g = np.einsum("ib,ib->i", G[rows], X[cols])    # the gradient at each chosen position
    grown_model = copy.deepcopy(static_model)
    change_topology(grown_model.get_submodule("1"), np.zeros(layer.weight.n_units, bool), rows,
                    cols, grow_values=(-lr * g).astype(np.float32))
    with sn.no_grad():
        after = cross_entropy(grown_model(sn.Tensor(x_batch)), y_batch).item()
    print(f"grow {k} {label:27s}: mean |g| {np.abs(g).mean():.2e}, loss after one step "
          f"{after:.4f} (first-order estimate {loss.item() - lr * (g ** 2).sum():.4f})")
layer.keep_for_growth = False

# %% [markdown]
# **Try it**
#
# - Set `k = 10000`: RigL's loss falls further, and the first-order estimate drifts away from
#   the true loss (ten thousand steps taken at once no longer add up linearly).
# - Set `lr = 0.5`: the estimate promises a much lower loss than the real one after the step;
#   a first-order guess holds only for small steps.
#
# ## 2. One RigL update, by hand
#
# The loop of tutorial 06, with RigL in place of SET. The hooks are the same and sit where
# `sparsenet.train` calls them:
#
#     method.setup(model, optimizer, loader, total_steps)    once, before the optimizer exists
#     every step t:  forward, loss, zero_grad, backward
#                    method.after_backward(t)                 edit gradients (RigL: nothing)
#                    optimizer.step()
#                    method.after_step(t)                     every ΔT steps: drop and grow
#     every epoch:   method.after_epoch(epoch)                (RigL: nothing)
#
# What RigL adds is inside `after_step`: on the step *before* an update it asks each sparse
# layer to keep (G, X) of the next backward (`keep_for_growth`), so that on the update step it
# can score the empty positions by |G·Xᵀ|, a chunk of rows at a time. The update drops the
# fraction α_t of each layer's weights with the smallest |w| and grows as many where |G·Xᵀ| is
# largest, at 0 (α = 0.3, decaying along a cosine). Here the loop also builds the first layer's
# dense gradient once, just before the first update, to look at what RigL chose; RigL itself
# never does.

# %%
sn.manual_seed(0)
method = RigL(sparsity=0.9, delta_t=DELTA_T)              # α = 0.3, cosine decay, T_end = 75 %
shapes = weight_shapes(architecture("lenet300"))          # {layer: (out, in)}, nothing built
model = build_model("lenet300", **method.build_options(shapes))   # as `run` builds it
loader = BatchLoader(x_train, y_train, batch_size=128, shuffle=True, seed=0)
total_steps = EPOCHS * len(loader)                         # the whole run's, for the schedule

method.setup(model, None, loader, total_steps)            # hook: once
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
method.optimizer = optimizer                               # momentum follows each weight
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
        G, X = layer.growth_arrays                        # kept for this step: (300, b), (784, b)
        dense_gradient = G @ X.T                          # (300, 784): for looking only
        weights_before, mask_before = layer.weight.to_dense(), layer.weight.mask()
    method.after_step(step)                               # hook: drops and grows on update steps
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
    print(f"  step {update['step']:4d}: α_t = {update['fraction']:.3f}, weights replaced per "
          f"layer {update['replaced']}")

# %% [markdown]
# What the first update did to the first layer. The dropped weights are the smallest in
# magnitude; the grown positions are the empty ones (the dropped positions count as empty) of
# largest |gradient|. A position both dropped and chosen for growth simply stays, with its
# weight and momentum (RigL's reference code does the same), so the mask changes by exactly
# the number replaced.

# %%
dropped = mask_before & ~mask_after                       # stored before, gone after
grown = mask_after & ~mask_before                         # new positions
kept = mask_before & mask_after
candidates = ~kept                                         # where growth could choose from
magnitude = np.abs(dense_gradient)
print(f"step {first_update['step']}, layer {name}: {mask_before.sum():,} weights, "
      f"α_t = {first_update['fraction']:.3f} -> {first_update['replaced'][name]:,} replaced")
threshold = np.abs(weights_before[dropped]).max()
print(f"  dropped {dropped.sum():,}, none with |w| above {threshold:.4f}; of the weights kept, "
      f"{(np.abs(weights_before[kept]) <= threshold).sum():,} are as small: dropped and chosen "
      "for growth in the same update, they stay")
print(f"  grown {grown.sum():,}, all at {np.unique(weights_after[grown])}: |gradient| there "
      f"{magnitude[grown].min():.2e} to {magnitude[grown].max():.2e}")
print(f"  the largest |gradient| at a candidate not grown: "
      f"{magnitude[candidates & ~grown].max():.2e}; mean over all candidates "
      f"{magnitude[candidates].mean():.2e}")
print(f"  weights stored after the update: {mask_after.sum():,} (unchanged)")


# %%
def picture(mask, highlight, color):
    """An RGB image of a mask: stored weights black, `highlight` in `color`, empty white."""
    image = np.ones(mask.shape + (3,))
    image[mask] = 0.0
    image[highlight] = color
    return image


rows, cols = slice(0, 40), slice(350, 430)                # 40 neurons x 80 input pixels
fig, (ax_grad, ax_before, ax_after) = plt.subplots(1, 3, figsize=(14, 3.0))
ax_grad.imshow(magnitude[rows, cols], cmap="magma", interpolation="nearest")
ax_grad.set_title("|dense gradient| (bright: large)")
ax_before.imshow(picture(mask_before, dropped, (0.85, 0.1, 0.1))[rows, cols],
                 interpolation="nearest")
ax_before.set_title(f"before: {dropped[rows, cols].sum()} to drop (red)")
ax_after.imshow(picture(mask_after, grown, (0.1, 0.65, 0.1))[rows, cols], interpolation="nearest")
ax_after.set_title(f"after: {grown[rows, cols].sum()} grown (green)")
for ax in (ax_grad, ax_before, ax_after):
    ax.set(xlabel="input pixel 350-429", ylabel="neuron 0-39", xticks=[], yticks=[])
fig.suptitle(f"layer {name} around RigL's first update (step {first_update['step']}), "
             "a corner of it")
fig.tight_layout()
figures.show(fig, "mask_before_after")

# %% [markdown]
# Growth follows the bright stripes of the gradient. They run along rows: a neuron whose
# output gradient G is large on this batch has a large gradient at all its inputs, brighter
# where the input pixels are bright (the pattern repeats every 28 pixels, one image row).
#
# **Try it**
#
# - Compare with tutorial 06's picture: SET's green squares are scattered uniformly; RigL's
#   cluster on a few rows and columns.
# - Rerun from `sn.manual_seed(0)` with `RigL(sparsity=0.9, delta_t=DELTA_T, alpha=0.1)`: a
#   third as many weights replaced, and only the very brightest positions grown.
#
# ## 3. The shortcut
#
# `run(TrainConfig(method="rigl", ...))` builds the same sparse model from the same seed and
# runs the loop above, hooks included, for every epoch. Its first epoch is the one trained by
# hand:

# %%
config = TrainConfig(model="lenet300", method="rigl", sparsity=0.9, epochs=EPOCHS, seed=0,
                     progress=False, method_options={"delta_t": DELTA_T})
record = run(config, log=None)
print(f"epoch 1 mean training loss: by hand {loss_sum / seen:.6f}, "
      f"by run {record['history'][0]['loss']:.6f}")
print(f"first update: by hand {first_update['replaced']}, "
      f"by run {record['method_details']['updates'][0]['replaced']}")
print(f"after {record['epochs']} epochs: test accuracy {record['test_accuracy']:.4f}, "
      f"{record['method_details']['n_updates']} topology updates"
      + (" (fast mode: too little training to mean much)" if FAST else ""))

# %% [markdown]
# ## 4. RigL, SET and static at 90 % sparsity
#
# The same network, the same number of weights (ERK densities, 10 % overall), the same random
# starting pattern; only the way connections move differs. RigL's defaults are the paper's:
# α = 0.3, ΔT = 100, cosine decay, no update in the last 25 % of training. A subclass of RigL
# remembers, at the start and after every update, how many connections each input pixel has.


# %%
class Watched(RigL):
    """RigL that remembers, at the start and after every update, how many connections each
    input pixel has in the first layer (a 28×28 picture)."""

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.pictures = [(0, self.picture())]

    def picture(self):
        _, first_layer = self.layers[0]          # self.layers: the (name, layer) pairs it edits
        return first_layer.weight.mask().sum(axis=0).reshape(28, 28)

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
figures.show(fig, "accuracy")
for label, history in (("static", static_history), ("SET", set_history), ("RigL", rigl_history)):
    print(f"{label:6s} test accuracy {history[-1]['test_accuracy']:.4f}")
if FAST:
    print("(fast mode: 1,000 images and two epochs are too few to rank the three; run without "
          "SPARSENET_FAST for a comparison that means something)")

# %% [markdown]
# ## 5. Watching the first layer move
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
for ax, (update_step, pixels) in zip(axes, shown):
    ax.imshow(pixels, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(f"step {update_step}", fontsize=9)
    ax.axis("off")
axes[-1].imshow(x_train[:1000].mean(axis=0)[0], cmap="gray")
axes[-1].set_title("mean image", fontsize=9)
axes[-1].axis("off")
fig.suptitle("RigL: first-layer connections per input pixel")
fig.tight_layout()
figures.show(fig, "connections_per_pixel")
border = np.ones((28, 28), bool)
border[4:24, 4:24] = False
for update_step, pixels in (shown[0], shown[-1]):
    print(f"step {update_step:5d}: {pixels[border].sum() / pixels.sum():.1%} of the first layer's "
          f"connections come from the 4-pixel-wide border ({border.mean():.0%} of the pixels)")

# %% [markdown]
# ## 6. What the dense gradients cost
#
# RigL's paper (Appendix H) counts an ordinary sparse step as 3·f_S (forward, input gradient,
# weight gradient) and an update step as 2·f_S + f_D: the weight gradient is dense there. With
# an update every ΔT steps that is a small surcharge over SET, which needs no gradient to grow.

# %%
for label, flops in (("SET", set_flops), ("RigL", rigl_flops)):
    print(f"{label:5s} training FLOPs {flops['training_relative']:.4f} of dense, "
          f"inference {flops['inference_relative']:.4f}")
print(f"RigL made {rigl.describe()['n_updates']} topology updates, one every {DELTA_T} steps")
if FAST:
    print("(fast mode updates every 2 steps, so the surcharge is far larger than at ΔT = 100)")

# %% [markdown]
# **Try it**
#
# - Train `Watched(sparsity=0.9, delta_t=DELTA_T, t_end=1.0)`: updates continue to the last
#   step, so more of them; the border share in the last picture falls further.
# - Set `DELTA_T` larger (4 in fast mode, 200 on the full data): fewer updates (2 instead of 5
#   in fast mode, about half as many on the full data), and RigL's training FLOPs move closer
#   to SET's.
#
# ## What's next
#
# RigL's connections can land anywhere, which is hard to run fast. Tutorial 08 (SRigL) keeps
# the same rule but gives every neuron the same number of inputs, a structure that runs fast
# even one sample at a time.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
