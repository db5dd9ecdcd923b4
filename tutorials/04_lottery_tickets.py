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
# # 04 · Lottery tickets
#
# Tutorial 03 found sparse networks by pruning a trained dense one. Could such a sparse network
# have been trained *from the start*? Frankle & Carbin (2019, *The Lottery Ticket Hypothesis*)
# say yes, provided it starts from the right values: the ones the dense network started from.
#
# Their procedure, iterative magnitude pruning (IMP) with rewinding:
#
# 1. train the dense network, remembering its weights $\theta_k$ after $k$ steps;
# 2. remove 20 % of each layer's remaining weights, the smallest |w| (the output layer 10 %);
# 3. set the survivors back to $\theta_k$ and train again from step $k$ (the learning-rate
#    schedule resumes where $\theta_k$ was taken, for the steps left); repeat from 2.
#
# $k = 0$ is the original paper's reset to initialization; Frankle et al. (2019, 2020) found
# that rewinding to an early iteration instead keeps tickets working where the reset fails.
# The control: the same masks with freshly drawn random values (`reinit=True`). If the ticket
# beats the control, the initial values matter, not only the sparse structure. The algorithm
# file is `sparsenet/algorithms/lottery.py`.
#
# **You will learn**
#
# 1. how many rounds of pruning reach a sparsity, counted in whole weights;
# 2. how to run IMP with rewinding, the reset to initialization, and the random-reinit control;
# 3. how to read accuracy per round, and what the ticket's first layer kept.
#
# **Prerequisites**: tutorial 03 (magnitude pruning). **Time**: about 20 minutes to read and try
# the exercises; the last line prints how long the code itself took (each round is a whole
# training, so the full run is the longest of tutorials 01-08).
#
# As a script, `SPARSENET_FAST=1 python tutorials/04_lottery_tickets.py` runs on a slice of the
# data with one epoch per round; its figures go to `figures/` (the output names each file).

# %%
import time

from sparsenet.plotting import Figures

figures = Figures("04")            # inline in Jupyter; always saved to figures/04_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.algorithms.common import prunable_layers  # noqa: E402
from sparsenet.algorithms.lottery import LotteryTicket  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, load_arrays, train_model  # noqa: E402

FAST = fast_mode()
SPARSITY = 0.8 if FAST else 0.964          # 15 rounds: 3.6 % of the weights remain
ROUND_EPOCHS = 1 if FAST else 5            # each round is a whole training: keep it short
started = time.perf_counter()
sn.manual_seed(0)
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
data = (x_train, y_train, x_test, y_test, origin)          # what `train_model` takes
print(f"fast mode: {FAST} | training images: {len(y_train):,} | data from: {origin}")


# %% [markdown]
# ## 1. How many rounds?
#
# Each round keeps 80 % of every hidden layer and 90 % of the output layer, so after $r$
# rounds a fraction of about $0.8^r$ remains. The method works out how many rounds reach the
# requested sparsity, counting whole weights:

# %%
method = LotteryTicket(sparsity=SPARSITY)
model = build_model("lenet300")
keeps = method.schedule(model)
total = sum(layer.weight.size for _, layer in prunable_layers(model))
print("rates per layer:", method.rates(model))
for round_number, keep in enumerate(keeps, start=1):
    print(f"round {round_number:2d}: {100 * sum(keep.values()) / total:6.2f} % remain   {keep}")

# %% [markdown]
# **Try it**
#
# - `LotteryTicket(sparsity=0.99).schedule(model)`: about 20 rounds, since 0.8^20 ≈ 1.2 %; each
#   would be a whole training.
# - `LotteryTicket(sparsity=SPARSITY, rate=0.5)` prunes half of what is left per round: fewer
#   rounds to the same sparsity, each a bigger cut.

# %% [markdown]
# ## 2. Tickets, resets and random reinitialization
#
# Three runs of `sparsenet train --method lottery`, each round trained for `ROUND_EPOCHS`:
# rewinding to 5 % of a round (the default `rewind_step`) with the reinit control trained
# beside it, and the original reset to initialization (`rewind_step=0`).


# %%
def lottery(**options):
    config = TrainConfig(model="lenet300", method="lottery", sparsity=SPARSITY,
                         epochs=ROUND_EPOCHS, progress=False, method_options=options)
    return train_model(config, log=None, data=data)


ticket_model, rewound = lottery(reinit=True)
_, reset = lottery(rewind_step=0)
k = rewound["method_details"]["rewind_step"]
print(f"rewind step k = {k} steps")
print(" round  remain %   ticket (rewound)   ticket (k=0)   random reinit")
for ticket, reset_round in zip(rewound["rounds"], reset["rounds"]):
    control = ticket.get("reinit_test_accuracy")
    print(f"{ticket['round']:6d}  {100 * ticket['density']:8.2f}   "
          f"{ticket['test_accuracy']:16.4f}   {reset_round['test_accuracy']:12.4f}   "
          + ("     -" if control is None else f"{control:13.4f}"))
if FAST:
    print("(fast mode: one epoch on 1,000 images per round, so the columns differ by noise as "
          "much as by method; the full run is where tickets and controls part)")

# %% [markdown]
# ## 3. Accuracy per round
#
# Read from right to left: each round removes a fifth of what is left. Round 0 is the dense
# network (dashed line).

# %%
remain = [100 * r["density"] for r in rewound["rounds"]]
fig, ax = plt.subplots(figsize=(7, 3.8))
ax.axhline(rewound["dense_test_accuracy"], color="k", ls="--", lw=1, label="dense")
ax.plot(remain, [r["test_accuracy"] for r in rewound["rounds"]], marker="o",
        label=f"ticket, rewound to k = {k} steps")
ax.plot([100 * r["density"] for r in reset["rounds"]],
        [r["test_accuracy"] for r in reset["rounds"]], marker="^", label="ticket, reset to k = 0")
ax.plot(remain[1:], [r["reinit_test_accuracy"] for r in rewound["rounds"][1:]], marker="s",
        label="same masks, random reinit")
ax.set_xscale("log")
ax.invert_xaxis()
ax.set(xlabel="weights remaining (%)", ylabel="test accuracy",
       title=f"LeNet-300-100, {ROUND_EPOCHS} epoch(s) per round")
ax.legend()
figures.show(fig, "accuracy_per_round")

# %% [markdown]
# ## 4. What the ticket kept
#
# The first layer connects 784 pixels to 300 units. Summing each pixel's surviving
# connections shows where the ticket looks. The border pixels are nearly always 0 in
# Fashion-MNIST, so their weights get almost no gradient and keep their initial size, while
# the weights of informative pixels grow or shrink with training: compare the two averages.

# %%
(_, first), (_, second), _ = prunable_layers(ticket_model)     # the three (name, layer)
per_pixel = first.weight.mask().sum(axis=0).reshape(28, 28)
fig, ax = plt.subplots(figsize=(3.6, 3.4))
image = ax.imshow(per_pixel, cmap="viridis")
fig.colorbar(image, ax=ax, label="connections kept")
ax.set(title=f"layer 1 at {100 * first.weight.density:.1f} % density", xticks=[], yticks=[])
figures.show(fig, "first_layer_kept")
print(f"border pixels keep {per_pixel[[0, -1], :].mean():.2f} connections on average, "
      f"the central 14x14 {per_pixel[7:21, 7:21].mean():.2f}")
if FAST:
    print("(fast mode: one epoch per round on 1,000 images moves the weights little from their "
          "initial sizes, so the two averages need not differ; run the full tutorial to see "
          "where the ticket looks)")

# %% [markdown]
# **Try it**
#
# - `lottery(rewind_step=0, reinit=True)`: the reset ticket with its own control; compare the
#   two columns round by round.
# - Draw the ticket's second layer (`second.weight.mask()`, a
#   100×300 image) with `plt.imshow`: rows are neurons; some keep many more inputs than others.

# %% [markdown]
# ## What to take away
#
# - IMP finds sparse networks that train, from (nearly) the start, to the dense accuracy at a
#   fraction of the weights; the structure alone (random reinit) does worse at high sparsity.
# - The price is many full trainings: here one per round. Tutorial 05's methods find their
#   sparse networks in a single training.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
