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
# # 11 · Conditional computation: experts, routing, balance, capacity
#
# A sparse weight matrix skips the same connections for every input. A **mixture of experts**
# (Shazeer et al. 2017) skips different ones for each input: a small router sends every token
# to k of N feed-forward "experts", so the layer holds N experts' weights but each token pays
# for k. Parameters and FLOPs come apart, which is why the largest language models are MoEs.
#
# **You will learn**, on a character-level transformer trained on Shakespeare's plays:
#
# 1. what a token's route looks like: gates, top-k, and the group-by-expert buffer;
# 2. why routing needs a balancing loss, by training with and without one;
# 3. what a capacity factor does (Switch Transformer, Fedus et al. 2021): drops, and dropless;
# 4. what sparse FFNs and experts each buy, from the benchmark's records.
#
# **Time**: reading and running it takes about 20 minutes (the two training runs of section 2 take a
# few minutes on a laptop core). As a script, `SPARSENET_FAST=1 python
# tutorials/11_conditional_computation.py` runs in under a minute: its training runs are a
# handful of steps, and the numbers they print say nothing about MoE; it says so where it
# matters. Figures go to `tutorials/figures/` when run as a script.

# %%
import math
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
from sparsenet import Tensor  # noqa: E402
from sparsenet.data import load_text  # noqa: E402
from sparsenet.kernels import cpu as kernels  # noqa: E402
from sparsenet.nn.moe import MoE, capacity_of  # noqa: E402
from sparsenet.plotting import Figures  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, train_model  # noqa: E402

FAST = fast_mode()
STEPS = 8 if FAST else 600
corpus = load_text("shakespeare")
vocabulary = corpus.vocabulary
print(f"{len(corpus.train):,} training characters, {len(vocabulary)} distinct; fast mode: {FAST}")


figures = Figures("11")            # inline in Jupyter; always saved to figures/11_*.png


# %% [markdown]
# ## 1. A token's route
#
# Every character is a token. Before any model, two baselines in bits per character (the
# score of every model here): a uniform guess over the vocabulary, and the character
# frequencies of the training text (a model with no context at all).

# %%
counts = np.bincount(corpus.train, minlength=len(vocabulary))
frequencies = counts / counts.sum()
unigram_bits = -np.sum(frequencies[frequencies > 0] * np.log2(frequencies[frequencies > 0]))
print(f"uniform guess: {math.log2(len(vocabulary)):.3f} bits/char; "
      f"character frequencies: {unigram_bits:.3f} bits/char")
print("a line of the validation play:", repr(vocabulary.decode(corpus.valid[1600:1660])))

# %% [markdown]
# The layer: 8 experts, each a 32-64-32 FFN, 2 per token, Shazeer's noisy top-k router. The
# router scores the experts (x W_g), adds noise whose size it also learns (softplus(x W_noise)),
# keeps the k best and turns their scores into gates with a softmax. We give W_g random values
# (training starts it at zero) to see distinct routes.

# %%
sn.manual_seed(0)
moe = MoE(width=32, hidden=64, n_experts=8, k=2)
moe.w_gate.data = np.random.default_rng(0).normal(0, 0.3, moe.w_gate.shape).astype(np.float32)
tokens = Tensor(np.random.default_rng(1).standard_normal((6, 32)).astype(np.float32))
expert_index, gates, losses = moe.route(tokens)
for t in range(6):
    route = ", ".join(f"expert {e} × {g:.2f}" for e, g in zip(expert_index[t], gates.data[t]))
    print(f"token {t}: {route}")

# %% [markdown]
# The data movement runs in three kernels. `moe_plan` groups the (token, choice) pairs by
# expert into one buffer, first choices first; each expert then multiplies only its slice of
# rows (one dense product per expert); `moe_combine` adds every token's expert outputs back,
# weighted by its gates.

# %%
position, offsets = kernels.moe_plan(expert_index, 8, capacity_of(None, 2, 6, 8),
                                     np.empty((6, 2), np.int64), np.empty(9, np.int64))
for e in range(8):
    rows = [(int(t), int(s)) for t, s in zip(*np.nonzero(
        (position >= offsets[e]) & (position < offsets[e + 1])))]
    print(f"expert {e}: buffer rows {offsets[e]}-{offsets[e + 1]}, (token, choice) {rows}")

# %% [markdown]
# **Try it**: Set `k=1` (and `router="switch"`): each token now names one expert, and the gate
# is the router's probability of it, not a softmax over one score (which would be 1). With
# `k=8` every token visits every expert and the layer is a (wasteful) weighted ensemble.

# %% [markdown]
# ## 2. Balance
#
# A router learns where to send tokens, and the experts learn from what they are sent: an
# expert that gets more tokens improves faster, so it gets more tokens still. Shazeer et al.
# add two losses against that: the squared coefficient of variation of each expert's
# **importance** (sum of its gates over the batch) and of its **load** (a smooth estimate of
# how many tokens it receives), each weighted 0.1. We train the same small MoE transformer
# twice, with (`B0.1`, the default) and without (`B0`) them, and watch the most-loaded
# expert's share: max/mean of tokens per expert, 1 when perfectly even.

# %%
SPEC = "gpt:L1-D64-H4-T64-E8-K2"
runs = {}
for label, spec in (("with balancing losses", SPEC), ("without (B0)", SPEC + "-B0")):
    config = TrainConfig(model=spec, dataset="shakespeare", optimizer="adamw", lr=3e-3,
                         weight_decay=0.1, batch_size=16, steps=STEPS, progress=False)
    _, record = train_model(config, log=None)
    runs[label] = record
    summary = record["moe"]["summary"]["load_max_mean"]
    print(f"{label:22s} validation {record['val_bpc']:.3f} bits/char; expert load max/mean: "
          f"{summary['mean']:.2f} over the run, {summary['last_tenth']:.2f} in its last tenth")
if FAST:
    print("(fast mode: 8 steps, the router has barely moved; run without SPARSENET_FAST)")

fig, (ax_load, ax_final) = plt.subplots(1, 2, figsize=(11, 3.2))
for label, record in runs.items():
    ax_load.plot(record["moe"]["per_step"]["load_max_mean"], label=label)
    load = record["moe"]["last_step_load"]["blocks.0.ffn"]
    ax_final.plot(sorted(load, reverse=True), "o-", label=label)
ax_load.set(xlabel="step", ylabel="load max / mean", title="most-loaded expert, per step")
ax_final.set(xlabel="expert (sorted)", ylabel="tokens x choices", title="load at the last step")
ax_load.legend()
fig.tight_layout()
figures.show(fig, "balance")

# %% [markdown]
# Without the losses the load drifts away from even: a few experts take most tokens and the
# others starve (Shazeer et al. Table 6 measure max/mean 17.8 without, 1.14 with, on a far
# larger model). The balanced run pays a little in loss for the evenness, and gets in return
# experts that all learn and a layer whose work splits evenly over devices.
#
# **Try it**: Put `-B1` on the spec (ten times the weight): the load gets flatter still, and
# the validation loss a little worse, since the router may no longer pick freely. Or set
# `-E16-K2`: more experts, each sees fewer tokens, and balance matters more.

# %% [markdown]
# ## 3. Capacity
#
# On real hardware every expert gets a fixed buffer: `capacity = ceil(factor · k · tokens /
# experts)` rows (Switch Transformer, Section 2.2). Tokens past it are **dropped** for that
# choice: the MoE adds nothing and the token continues through the residual connection. Here
# a freshly initialised Switch router (top-1), uneven by chance as untrained routers are, at
# several capacity factors; `None` is the dropless mode (a buffer for every token).

# %%
sn.manual_seed(0)
switch = MoE(width=32, hidden=64, n_experts=4, k=1, router="switch")
x = Tensor(np.abs(np.random.default_rng(2).standard_normal((64, 32))).astype(np.float32))
for factor in (0.5, 1.0, 1.25, 2.0, None):
    switch.capacity_factor = factor
    switch(x)
    s = switch.stats
    print(f"capacity factor {str(factor):>4}: capacity {s['capacity']:3d} rows per expert, "
          f"tokens wanted per expert {s['load']}, dropped {s['dropped']:.0%}")

# %% [markdown]
# At factor 1 a perfectly even router would drop nothing; a skewed one drops the excess. The
# Switch paper trains at 1.0-1.25 with its auxiliary loss α·N·Σ f_i·P_i (α = 0.01) keeping the
# router near even; dropless MoEs (MegaBlocks) avoid the trade with variable-size buffers,
# which is what `moe_plan`'s compact layout is.
#
# **Try it**: Run the cell with `k=2` and `router="noisy_topk"`: the second choices are placed
# after every first choice, so a full expert drops second choices first.

# %% [markdown]
# ## 4. What sparse FFNs and experts each buy
#
# `benchmarks/lm.py` trains the 2-block, width-128 transformer five ways, `--steps` steps
# each: dense; 8 experts top-2 (each expert half the dense FFN's width, so a token uses the
# same number of weights); the same without balancing; RigL at 90 % on the attention and FFN
# weights; SR-STE 2:4 on the FFNs. It writes records under `benchmarks/results/lm/`, named
# `<cell>-<steps>steps-s<seed>.json` (compare runs of the same length only); here are their
# numbers, read from those records (no number below is typed by hand).

# %%
import json  # noqa: E402

root = Path(sn.__file__).resolve().parent.parent / "benchmarks" / "results" / "lm"
records = {}
for path in sorted(root.glob("*.json")) if root.is_dir() else []:
    record = json.loads(path.read_text())
    records.setdefault(path.stem.rsplit("-s", 1)[0], []).append(record)
if not records:
    print("no benchmark records found (run python benchmarks/lm.py from a source checkout)")
print(f"{'run':14s} {'val bits/char':>13s} {'weights stored':>15s} {'used per token':>15s} "
      f"{'load max/mean':>13s}")
for cell, rs in records.items():
    load = [r["moe"]["summary"]["load_max_mean"]["last_tenth"] for r in rs if "moe" in r]
    print(f"{cell:14s} {np.mean([r['val_bpc'] for r in rs]):13.4f} "
          f"{np.mean([r['weights_stored'] for r in rs]):15,.0f} "
          f"{np.mean([r['active_weights_per_token'] for r in rs]):15,.0f} "
          f"{(f'{np.mean(load):.2f}' if load else ''):>13s}")

# %% [markdown]
# Read the columns against each other:
#
# - **Sparse FFNs** (RigL, SR-STE) store *and* use fewer weights: they save memory and FLOPs
#   for every token, and cost some loss for it; 2:4 is the structure NVIDIA's sparse tensor
#   cores run at twice the dense speed.
# - **Experts** store *more* weights (about 3x the dense model here) but use the same number per
#   token: the extra capacity is paid in memory, not in FLOPs, and buys loss at equal compute.
#   The router and the data movement around the experts are the overhead
#   (`benchmarks/results/lm.md` times the layer against the dense FFN).
#
# The two compose: each expert could itself be a 2:4 or RigL-sparse FFN.
#
# **Try it**: Train `gpt:L2-D128-H4-T64-E8-K1-switch` with `sparsenet train --dataset
# shakespeare --optimizer adamw --lr 3e-3 --batch-size 16 --steps 2000`: one expert per token
# at full FFN width (`F512`) is the Switch Transformer's choice; compare its record with the
# top-2 run's. To see how fast a long run goes before committing to it, add `--max-steps 50`:
# it stops after 50 steps of the 2,000-step schedule, and its record says `stopped_early`.

