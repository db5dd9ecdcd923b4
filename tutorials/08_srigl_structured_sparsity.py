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
# # 08 · SRigL: dynamic sparse training with structure
#
# Unstructured sparsity saves FLOPs on paper, but its irregular rows make it hard to run fast:
# one output neuron may have 3 inputs, the next 300. Lasby et al. (2023, *Dynamic Sparse
# Training with Structured Sparsity*) keep RigL's rule and add one constraint: **every output
# neuron has the same number K of inputs** (constant fan-in). A layer is then an (out, K)
# matrix of values plus an (out, K) matrix of input indices: dense arrays and the same work for
# every neuron, the "condensed" layout the paper runs fast at batch 1 (online inference). To
# keep the budget where it is useful, SRigL also **ablates**
# neurons with too few salient weights and hands their share to the others.
#
# The algorithm file is `sparsenet/algorithms/srigl.py`; the rule it shares with RigL is in
# `sparsenet/algorithms/dst.py`.
#
# **You will learn**
#
# 1. what a constant fan-in layer stores, and its "condensed" form;
# 2. how it times at batch 1 against the dense layer;
# 3. how neuron ablation shrinks a layer during training;
# 4. how SRigL compares with RigL at the same sparsity.
#
# **Prerequisites**: tutorials 02 (CSR) and 07 (RigL). **Time**: about 25 minutes to read and try
# the exercises; the last line prints how long the code itself took.
#
# As a script, `SPARSENET_FAST=1 python tutorials/08_srigl_structured_sparsity.py` uses a slice
# of the data, two epochs and smaller timing layers; its figures go to `figures/` (the output
# names each file).

# %%
import time

import numpy as np

from sparsenet.plotting import Figures

figures = Figures("08")            # inline in Jupyter; always saved to figures/08_*.png
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.nn import SparseLinear, build_model  # noqa: E402
from sparsenet.nn.models import architecture, weight_shapes  # noqa: E402
from sparsenet.train import (TrainConfig, epochs_for, fast_mode, load_arrays,  # noqa: E402
                             train_phase)

FAST = fast_mode()                 # SPARSENET_FAST=1: tiny data, at most two epochs
EPOCHS = 2 if FAST else 10
DELTA_T = 2 if FAST else 100       # fast mode has only a few steps: update often to see it
started = time.perf_counter()
x_train, y_train, x_test, y_test, origin = load_arrays("auto")
data = (x_train, y_train, x_test, y_test, origin)          # what `train_phase` takes
print(f"fast mode: {FAST}, training images: {len(y_train):,}, data from: {origin}")

# %% [markdown]
# ## 1. Constant fan-in, and its condensed form
#
# `constant_fan_in=True` (formats csr and masked) makes the format itself keep every non-empty
# row at the same length: a topology update that would leave two rows unequal is refused (an
# empty row, an ablated neuron, is allowed: section 3). In CSR the rows then sit at equal
# strides, so `values` and `indices` reshape to (out, K) without a copy (to (active, K) with
# the list of active rows once some are empty).

# %%
layer = SparseLinear(784, 300, density=0.1, constant_fan_in=True, rng=np.random.default_rng(0))
w = layer.weight
K = w.nnz // w.shape[0]
print(w)
print("inputs per neuron:", np.unique(w.row_lengths()), " K =", K)
values, inputs = w.values.reshape(-1, K), w.indices.reshape(-1, K)      # (300, K) each
print("condensed values", values.shape, "and input indices", inputs.shape)
x = np.random.default_rng(1).standard_normal((784, 1)).astype(np.float32)
condensed = (values * x[inputs, 0]).sum(axis=1)        # y_i = sum_k values[i, k] * x[inputs[i, k]]
print("condensed product equals the CSR product:",
      np.allclose(condensed, w.spmm(x)[:, 0], atol=1e-5))

# %% [markdown]
# **Try it**
#
# - Build the same layer without `constant_fan_in=True` and print
#   `np.unique(layer.weight.row_lengths())`: the rows now hold different numbers of inputs
#   (around 78 on average, a binomial spread), so `values` no longer reshapes to (300, K).
# - `SparseLinear(784, 300, density=0.1, constant_fan_in=True, format="masked")`: the masked
#   twin keeps the same rule; `layer.weight.mask().sum(axis=1)` is K in every row.

# %% [markdown]
# ## 2. One sample at a time
#
# At batch 1 a layer is a matrix-vector product: the dense one reads every weight once; the
# sparse ones read only 10 % of them, plus their indices. Timed here on one square layer,
# median of repeated calls, in this process and on this machine (numbers vary with it). A
# product this small gains nothing from threads (on a busy machine it loses a lot), so every
# version runs on one thread: the kernels' (Numba) and BLAS's (through threadpoolctl, if
# installed).


# %%
def median_seconds(fn, repeat):
    fn()                                                   # warm-up (and kernel compilation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


import numba  # noqa: E402

threads = numba.get_num_threads()
numba.set_num_threads(1)
try:
    from threadpoolctl import threadpool_limits
    blas_limit = threadpool_limits(1)
except ImportError:                      # BLAS keeps its threads
    blas_limit = None

def time_layer(n, density=0.1, repeat=20):
    """Median seconds of y = W x for one (n, n) layer in each form."""
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((n, n)).astype(np.float32)
    constant = SparseLinear(n, n, density=density, constant_fan_in=True, rng=rng).weight
    unstructured = SparseLinear(n, n, density=density, rng=rng).weight
    x = rng.standard_normal((n, 1)).astype(np.float32)
    c_values, c_inputs = constant.values.reshape(n, -1), constant.indices.reshape(n, -1)
    return {
        "dense W @ x (BLAS)": median_seconds(lambda: dense @ x, repeat),
        "CSR, constant fan-in": median_seconds(lambda: constant.spmm(x), repeat),
        "CSR, unstructured": median_seconds(lambda: unstructured.spmm(x), repeat),
        "condensed, NumPy gather": median_seconds(lambda: (c_values * x[c_inputs, 0]).sum(1),
                                                  repeat),
    }


sizes = (512, 1024) if FAST else (1024, 4096)
timings = {n: time_layer(n, repeat=20 if FAST else 100) for n in sizes}
numba.set_num_threads(threads)
if blas_limit is not None:
    blas_limit.restore_original_limits()
for n, times in timings.items():
    print(f"layer {n} x {n}, density 0.1, batch 1, one thread:")
    for label, seconds in times.items():
        print(f"  {label:26s} {seconds * 1e6:9.1f} µs   "
              f"{times['dense W @ x (BLAS)'] / seconds:5.2f}x the speed of dense")
if FAST:
    print("(fast mode: smaller layers and 20 repeats; on a busy machine these timings are "
          "rough, and the full run's larger layer is the one that shows the trend)")

fig, axes = plt.subplots(1, len(sizes), figsize=(11, 2.8))
for ax, (n, times) in zip(axes, timings.items()):
    ax.barh(list(times), [t * 1e6 for t in times.values()], color=["C7", "C2", "C0", "C1"])
    ax.set(xlabel="µs per product (median)", title=f"batch 1, {n}×{n}, 90 % sparse")
    ax.invert_yaxis()
fig.tight_layout()
figures.show(fig, "batch1_timings")

# %% [markdown]
# The sparse product reads a tenth of the weights, but also their indices, and pays for the
# Python call around the kernel. On a small layer whose dense matrix sits in cache, BLAS can
# still be as fast or faster; as the layer grows past the cache the dense product is bound by
# memory, and reading less of it is what counts. The NumPy gather shows the condensed layout
# itself, not a fast kernel: it builds an (out, K) temporary on every call. sparsenet runs
# both CSR variants through the same kernel, so they time alike here; what constant fan-in adds
# is the regularity a dedicated condensed kernel (the paper's) builds on.

# %% [markdown]
# ## 3. Neuron ablation
#
# With a small K a neuron can end up with only a handful of useful inputs. At each update SRigL
# counts a neuron's **salient** weights: those the magnitude drop keeps, together with the
# positions among the layer's k largest gradients (k = the number dropped). A neuron with fewer
# than γ_sal·K salient weights (γ_sal = 0.3 in the paper) is ablated: all its weights go, and
# the layer's budget is shared by the others, whose fan-in rises to K' = budget // active
# neurons. The output layer never ablates.
#
# Storage: an ablated neuron *is* an empty row, which the constant fan-in format accepts (rows
# of 0 or K), so every layer keeps the flag and the format refuses any update that would leave
# two active rows unequal; SRigL checks in addition that the empty rows are exactly the ablated
# neurons. Below, γ_sal = 0.3 and a deliberately harsh γ_sal = 0.9, at 95 % sparsity.
#
# `method.build_options(shapes)` gives the `build_model` options of the method's starting
# network (densities, format, and for SRigL the constant fan-in flag): the model is built sparse
# from the start, as `run` builds it.


# %%
def train(method, seed=0):
    """Train a LeNet-300-100 built sparse for `method`; returns (model, history, flops)."""
    config = TrainConfig(model="lenet300", epochs=EPOCHS, seed=seed, progress=False)
    sn.manual_seed(seed)
    shapes = weight_shapes(architecture("lenet300"))      # {layer: (out, in)}, nothing built
    model = build_model("lenet300", **method.build_options(shapes))
    history, flops, _ = train_phase(model, method, config, data, epochs_for(config), log=None)
    return model, history, flops


runs = {}
for gamma_sal in (0.3, 0.9):
    method = get_method("srigl", sparsity=0.95, gamma_sal=gamma_sal, delta_t=DELTA_T)
    model, history, _ = train(method)
    runs[gamma_sal] = (method, history)
    details = method.describe()
    print(f"γ_sal = {gamma_sal}: test accuracy {history[-1]['test_accuracy']:.4f}, "
          f"ablated neurons {details['ablated_neurons']}, fan-in {details['constant_fan_in']}")
    print("   stored with the constant fan-in flag:",
          {name: layer.weight.constant_fan_in for name, layer in method.layers})

fig, (ax_count, ax_rows) = plt.subplots(1, 2, figsize=(10, 3))
for gamma_sal, (method, _) in runs.items():
    first, first_layer = method.layers[0]                 # (name, layer) of the first layer
    ax_count.plot([u["step"] for u in method.updates],
                  [u["ablated"][first] for u in method.updates], "o-", label=f"γ_sal = {gamma_sal}")
    lengths = np.sort(first_layer.weight.row_lengths())[::-1]
    ax_rows.plot(lengths, label=f"γ_sal = {gamma_sal}")
ax_count.set(xlabel="training step", ylabel="ablated neurons", title="first layer (300 neurons)")
ax_rows.set(xlabel="neuron (sorted)", ylabel="inputs", title="first layer fan-in at the end")
ax_count.legend()
ax_rows.legend()
fig.tight_layout()
figures.show(fig, "ablation")

# %% [markdown]
# **Try it**
#
# - `get_method("srigl", sparsity=0.95, gamma_sal=0.0, delta_t=DELTA_T)`: no neuron can fall
#   below a threshold of 0, so none is ablated and every row keeps the initial K.
# - Print `method.describe()["constant_fan_in"]` for γ_sal = 0.9: the fan-in K' of each layer,
#   higher than at the start wherever neurons were ablated (the budget is shared by fewer).

# %% [markdown]
# ## 4. SRigL against RigL
#
# The same network at 90 % sparsity, the paper's defaults for both. The constraint costs
# little accuracy; what it buys is the regular layout of sections 1 and 2.

# %%
for name in ("rigl", "srigl"):
    method = get_method(name, sparsity=0.9, delta_t=DELTA_T)
    _, history, flops = train(method)
    print(f"{name:6s} test accuracy {history[-1]['test_accuracy']:.4f}, "
          f"training FLOPs {flops['training_relative']:.4f} of dense")
if FAST:
    print("(fast mode: two epochs on 1,000 images, too few to compare the two; run without "
          "SPARSENET_FAST for numbers that mean something)")

# %% [markdown]
# ## What's next
#
# Constant fan-in is one structure a format can enforce; N:M (tutorial on `--pattern nm:2:4`)
# and blocks are others. Every dynamic method in sparsenet runs on them unchanged: the rule
# is stated once and the format keeps its structure at every update.

# %%
print(f"this notebook ran in {time.perf_counter() - started:.0f} s"
      + (" (fast mode)" if FAST else ""))
