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
# # 09 · A million neurons on a laptop
#
# The network is SET's (Mocanu et al. 2018, tutorial 06): fully connected layers replaced by
# Erdős–Rényi random graphs with ε = 20, so a layer with n_in inputs and n_out outputs keeps
# about 20·(n_in + n_out) connections however wide it is. Liu et al. (2021, *Sparse
# evolutionary deep learning with over one million artificial neurons on commodity hardware*)
# trained such a network with a million neurons; this notebook shows how sparsenet does it.
# The code it explains is `sparsenet/nn/models.py` and `sparsenet/nn/memory.py` (models
# described before they are built, and their memory estimated), and
# `sparsenet/sparse/sampling.py` (sparse patterns sampled in O(connections)).
#
# **You will learn**
#
# 1. why a dense network of a million hidden neurons cannot even be built on an ordinary
#    machine;
# 2. what one sparse connection costs in bytes and in FLOPs;
# 3. how sparsenet builds and trains a network that wide without ever making its dense weights;
# 4. why a very sparse network needs its initialisation scaled to the inputs each neuron
#    really has;
# 5. what the cost curve looks like as the width grows.
#
# **Prerequisites**: tutorial 06 (SET); 02 helps (what a CSR weight stores). **Time**: about
# 15 minutes to read and try the exercises; the cells run in under a minute
# (`SPARSENET_FAST=1`: a few seconds), and the last line prints how long they took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/09_a_million_neurons.py` trains for 4 steps
# only; its figures go to `figures/` (the output names each file).

# %%
import glob
import json
import os
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("09")            # inline in Jupyter; always saved to figures/09_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.limits import TooLarge, human_bytes, memory_limit  # noqa: E402
from sparsenet.nn.memory import estimate  # noqa: E402
from sparsenet.nn.models import architecture, weight_shapes  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, train_model  # noqa: E402

FAST = fast_mode()
started = time.perf_counter()
MILLION = "mlp:784-333334-333334-333334-10"      # 1,000,002 hidden neurons
WIDE = "mlp:784-20000-20000-20000-10"            # 60,000: what we train in this notebook
print("fast mode:", FAST)

# %% [markdown]
# ## 1. Why dense cannot
#
# A model is described before it is built (`architecture`), so its memory can be estimated
# first. Dense, the million-neuron network has 2.2·10¹¹ weights; training holds each one three
# times (value, gradient, momentum: 12 bytes). `build_model` refuses it before allocating a
# byte, with the estimate:

# %%
shapes = weight_shapes(architecture(MILLION))
dense_weights = sum(int(np.prod(s)) for s in shapes.values())
print(f"dense weights: {dense_weights:,}")
try:
    sn.nn.build_model(MILLION)
except TooLarge as error:
    print("refused:", error)

# %% [markdown]
# ## 2. What a connection costs
#
# SET's densities (ε = 20) keep 36.7 million of those 2.2·10¹¹ weights. Stored in CSR, a
# connection holds a 4-byte value and a 4-byte column index; training adds the transposed
# index the backward pass walks (a 4-byte row index and an 8-byte position), a 4-byte gradient
# and a 4-byte momentum: 28 bytes. Its FLOPs: 2 in the forward pass (a multiply and an add),
# 6 in a training step (the forward, the input gradient, the weight gradient).

# %%
set_method = get_method("set", epsilon=20)
densities = set_method.layout(shapes)
stored = {name: round(d * np.prod(shapes[name])) if d < 1 else int(np.prod(shapes[name]))
          for name, d in densities.items()}
need = estimate(shapes, densities)
for name, shape in shapes.items():
    print(f"layer {name} {str(shape):>18}: density {densities[name]:.2e}, "
          f"{stored[name]:>12,} connections, {human_bytes(need[name]):>10} to train")
connections = sum(stored.values())
print(f"total: {connections:,} connections ({connections / dense_weights:.4%} of dense), "
      f"{human_bytes(need['total'])} to train, "
      f"{6 * connections / 1e9:.2f} GFLOP per image per training step")

# %% [markdown]
# Side by side, per layer: what training holds for the dense layer (12 bytes a weight) and for
# the SET layer (28 bytes a connection), against the memory this process may use at all
# (`limits.memory_limit`: physical memory, or a lower ulimit or cgroup limit).

# %%
dense_need = estimate(shapes, {name: 1.0 for name in shapes})
limit = memory_limit()
layer_names = list(shapes)
positions = np.arange(len(layer_names))
fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.bar(positions - 0.2, [dense_need[name] for name in layer_names], 0.4, label="dense")
ax.bar(positions + 0.2, [need[name] for name in layer_names], 0.4, label="SET, ε = 20")
if limit is not None:
    ax.axhline(limit, color="k", ls="--", lw=1, label=f"this machine: {human_bytes(limit)}")
ax.set(yscale="log", ylabel="bytes to train", xticks=positions,
       xticklabels=[f"{shapes[name][1]:,}→{shapes[name][0]:,}" for name in layer_names],
       title="the million-neuron network, per layer")
ax.legend(fontsize=8)
fig.tight_layout()
figures.show(fig, "bytes_per_layer")
print(f"dense: {human_bytes(dense_need['total'])} to train; SET: {human_bytes(need['total'])}")

# %% [markdown]
# **Try it**
#
# - `estimate(shapes, densities, format="masked")`: the masked twin keeps every dense position
#   (13 bytes each), so its total is above the dense one; sparse storage is what makes the
#   network fit, not the mask.
# - `get_method("set", epsilon=5).layout(shapes)`: a quarter of the connections per layer, so
#   about a quarter of the bytes and FLOPs above.

# %% [markdown]
# ## 3. Built sparse from the start
#
# `build_model` takes the sparsity (here SET's ε) and builds each sparse layer directly: the
# pattern is sampled in O(connections) (candidate positions drawn at random, repeats rejected:
# `sparsenet/sparse/sampling.py`), and the values are drawn for each neuron. No dense weight
# exists at any moment. We build the 60,000-neuron network here (the million-neuron one takes
# about half a minute and 1.5 GB; `benchmarks/scale.py` runs it).

# %%
wide_shapes = weight_shapes(architecture(WIDE))
model = sn.nn.build_model(WIDE, **set_method.build_options(wide_shapes))
for name, layer in model.named_modules():
    if hasattr(layer, "weight") and hasattr(layer.weight, "nnz"):
        print(f"layer {name}: {layer.weight!r}, {layer.weight.nbytes:,} bytes stored")

# %% [markdown]
# **Try it**
#
# - Ask `sn.nn.build_model("mlp:784-10000-10000-10", epsilon=20)` for its layers and compare
#   `layer.weight.nbytes` with what the dense layer would hold (4 bytes × n_in × n_out).
#   Expect about 1/250 for the middle layer.
# - Time `sn.nn.build_model(WIDE, ...)` above, then with every width doubled: the time and
#   bytes about double (they follow the connections), where a dense layer's would quadruple.

# %% [markdown]
# ## 4. Initialisation: scale each neuron to the inputs it has
#
# Kaiming initialisation draws a weight with variance 2/fan_in so that a ReLU layer keeps the
# variance of its input. A dense layer's fan-in is n_in; a sparse neuron has only d·n_in
# inputs, so drawn for the dense fan-in its output variance is d times too small, and after
# three layers of d ≈ 0.002 the signal is gone: the network starts with logits of zero and
# gradients of almost nothing (Evci et al. 2022, *Gradient Flow in Sparse Neural Networks and
# How Lottery Tickets Win*). Drawn for each neuron's stored fan-in, it keeps its scale.
# `sparse_init="auto"` (the default of the sparse-from-scratch methods) uses the stored fan-in
# where the dense one would shrink the network's output below 10⁻³ of the dense network's.

# %%
x = np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32)
for fan_in in ("dense", "stored"):
    sn.manual_seed(0)
    net = sn.nn.build_model(WIDE, density_per_layer=set_method.layout(wide_shapes),
                            init_fan_in=fan_in)
    with sn.no_grad():
        logits = net(sn.Tensor(x)).data
    print(f"values drawn for the {fan_in:>6} fan-in: logits std {logits.std():.2e}")
print(f"signal scale of this network (base.signal_scale): {set_method.signal_scale:.1e}, "
      f"so auto used the stored fan-in: {set_method.sparse_init_used}")

# %% [markdown]
# **Try it**
#
# - Build the wide network with `init_fan_in="dense"` and train it with `max_steps=40`
#   (section 5): the loss stays near ln 10 = 2.30 and the accuracy near 10 %, where the stored
#   fan-in learns.
# - `small = get_method("set", epsilon=20)`, then
#   `small.build_options(weight_shapes(architecture("mlp:784-1000-1000-10")))` and print
#   `small.signal_scale, small.sparse_init_used`: a denser network, whose signal scale (about
#   0.04) stays above 10⁻³, so `auto` keeps the dense fan-in there (`False`).

# %% [markdown]
# ## 5. Train it
#
# One epoch of the bundled subset (6,000 images) at the engine's defaults. `--max-steps`
# (`max_steps` here) stops a run early and still writes its record: the way to probe a run you
# cannot afford to finish. The thread policy (`sparsenet/threads.py`) gives both cores to the
# sparse kernels, since they do nearly all the work.

# %%
config = TrainConfig(model=WIDE, method="set", method_options={"epsilon": 20}, epochs=1,
                     data="subset", progress=False, max_steps=4 if FAST else None)
trained, record = train_model(config, log=print)
print(f"test accuracy {record['test_accuracy']:.2%} after {record['steps']} steps"
      + (" (fast mode: 4 steps, not a meaningful accuracy)" if FAST else ""))
print(f"built in {record['build_seconds']:.1f} s, trained at "
      f"{record['history'][0]['samples_per_second']:,.0f} images/s, peak memory "
      f"{human_bytes(record['peak_rss_bytes'])}, "
      f"{record['bytes']['total'] / record['parameters']:.1f} bytes per connection held")
print("threads:", record["threads"]["reason"])

# %% [markdown]
# ## 6. The cost curve, and the million-neuron run
#
# `python benchmarks/scale.py` measures the same network from 1,000 to 333,334 neurons per
# layer (a bounded number of steps each, the epoch projected from them), with the dense model
# and PyTorch's CSR beside it where they fit; `--full-epoch` trains the million-neuron network
# for a whole epoch. Their committed records are read here (run the script to make your own).

# %%
# the records of a source checkout (where sparsenet is installed from, with `make`)
results = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sn.__file__))),
                       "benchmarks", "results")
sweeps = sorted(glob.glob(os.path.join(results, "scale-*.json")))
sweeps = [p for p in sweeps if "scale-epoch" not in os.path.basename(p)]
if sweeps:
    with open(sweeps[-1]) as f:
        rows = json.load(f)["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("sparsenet", "sparsenet SET"), ("torch_csr", "PyTorch CSR"),
                       ("dense", "dense")):
        points = [(row["hidden_neurons"], row[key]["epoch_seconds"]) for row in rows
                  if "epoch_seconds" in row[key]]
        if points:
            neurons, seconds = zip(*points)
            ax.loglog(neurons, seconds, "o-", label=label)
    ax.set_xlabel("hidden neurons")
    ax.set_ylabel("seconds per epoch (projected)")
    ax.legend()
    print(f"cost curve from {os.path.basename(sweeps[-1])}")
    figures.show(fig, "cost_curve")
    for row in rows:
        ours = row["sparsenet"]
        if "seconds_per_step" in ours:
            print(f"{row['hidden_neurons']:>9,} neurons: {ours['connections']:>11,} connections, "
                  f"{ours['seconds_per_step']:.3f} s/step, "
                  f"peak {human_bytes(ours['peak_rss_bytes'])}")
else:
    print("no scale record yet: run `python benchmarks/scale.py`")
epochs = sorted(glob.glob(os.path.join(results, "scale-epoch-*.json")))
if epochs:
    with open(epochs[-1]) as f:
        run = json.load(f)["record"]
    if "history" in run:
        first_epoch = run["history"][0]
        print(f"the million-neuron run ({os.path.basename(epochs[-1])}): one epoch in "
              f"{first_epoch['seconds'] / 60:.1f} min, test accuracy {run['test_accuracy']:.2%}, "
              f"peak memory {human_bytes(run['peak_rss_bytes'])}")

# %% [markdown]
# **Try it**
#
# - Run `python benchmarks/scale.py --widths 1000,3333,10000 --no-torch` and look at the
#   seconds per step: they grow with the number of connections, not with the square of the
#   width.
# - In section 5, set `max_steps=20`: the record still comes back, and 6,000 images divided by
#   `record["history"][0]["samples_per_second"]` projects the epoch's seconds from 20 steps,
#   as the benchmark does for the widths it cannot afford to finish.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
