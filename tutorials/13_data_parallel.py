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
# # 13 · Data-parallel sparse training on MPI
#
# **You will learn**: why N processes that each see part of a batch can take exactly the
# step one process with the whole batch would take, why a sparse network sends so little per
# step (its stored values, not its dense matrices), how every process is made to agree on the
# mask when the topology changes, and how to run `sparsenet train --distributed` under
# `mpiexec`.
#
# **Time**: about 5 minutes to read; the cells run in well under a minute
# (`SPARSENET_FAST=1`: the real 2-rank run is a few steps long).
#
# sparsenet's distributed runs use MPI through mpi4py, and its buffer collectives on NumPy
# arrays (`Allreduce`): nothing is pickled. Install it with `pip install -e ".[mpi]"` (mpi4py
# and the `mpich` wheel, whose `mpiexec` lands beside `python`). The first three sections need
# no MPI at all.

# %%
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")          # a script without a display draws to files only
import matplotlib.pyplot as plt  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.distributed import topology_checksums  # noqa: E402
from sparsenet.nn import build_model  # noqa: E402
from sparsenet.nn.functional import cross_entropy  # noqa: E402
from sparsenet.nn.models import architecture, weight_shapes  # noqa: E402
from sparsenet.plotting import Figures  # noqa: E402
from sparsenet.sparse import CSR  # noqa: E402
from sparsenet.train import fast_mode, load_arrays  # noqa: E402

figures = Figures("13")            # inline in Jupyter; always saved to figures/13_*.png

FAST = fast_mode()
print("fast mode:", FAST)
SHAPE = (1, 28, 28)


def sparse_model(spec, sparsity, seed=0):
    """`spec` built sparse (ERK, as RigL builds it) from `seed`."""
    sn.manual_seed(seed)
    options = get_method("rigl", sparsity=sparsity).build_options(
        weight_shapes(architecture(spec, SHAPE, 10)))
    return build_model(spec, input_shape=SHAPE, num_classes=10, **options)


# %% [markdown]
# ## 1. The parts' gradients sum to the batch's
#
# The loss of a batch of B samples is the mean of their losses, so its gradient is the mean of
# theirs. Split the batch into parts and each part's gradient is the mean over that part:
# weigh it by the part's share of the batch (its size / B) and the weighted parts add up to
# the whole batch's gradient. That sum is what one `Allreduce` computes across the processes
# ("ranks"); every rank then holds the same gradient and takes the same optimizer step.

# %%
x_train, y_train, _, _, _ = load_arrays("subset")
batch_x, batch_y = x_train[:128], y_train[:128]
model = sparse_model("lenet300", 0.9)


def gradients(xb, yb):
    """Every parameter's gradient (a sparse layer's: its stored values only), flattened."""
    for p in model.parameters():
        p.grad = None
    cross_entropy(model(sn.Tensor(xb)), yb).backward()
    return np.concatenate([np.asarray(p.grad).ravel() for p in model.parameters()])


whole = gradients(batch_x, batch_y)
cut = 50                                      # uneven parts: 50 and 78 samples
summed = (cut / 128) * gradients(batch_x[:cut], batch_y[:cut]) \
    + ((128 - cut) / 128) * gradients(batch_x[cut:], batch_y[cut:])
print(f"gradient buffer: {whole.size:,} numbers; largest difference between the batch's "
      f"gradient and the weighted sum of its parts': {np.abs(whole - summed).max():.2e}")

# %% [markdown]
# The difference is float32 rounding: the sum is taken in another order. It is why the test
# suite compares a 2-rank run with one process "to float tolerance", not bit for bit.

# %% [markdown]
# ## 2. What a sparse network sends per step
#
# The buffer each rank sends into the `Allreduce` holds the gradient of every parameter: for a
# sparse layer that is its stored values (nnz numbers), never the dense matrix; dense biases;
# and four counters (loss, correct, samples and a Ctrl-C flag, so every rank stops at the same
# step). Counted for `lenet300`:

# %%
def buffer_bytes(model):
    return 4 * (sum(p.data.size for p in model.parameters()) + 4)     # float32


dense_bytes = buffer_bytes(build_model("lenet300", input_shape=SHAPE, num_classes=10))
print(f"dense lenet300: {dense_bytes:,} bytes reduced per step")
sent_bytes = {}
for sparsity in (0.9, 0.98, 0.99):
    sent_bytes[sparsity] = sent = buffer_bytes(sparse_model("lenet300", sparsity))
    print(f"  sparsity {sparsity:.2f}: {sent:,} bytes, 1/{dense_bytes / sent:.0f} of dense")

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.bar(["dense"] + [f"{s:.0%}" for s in sent_bytes], [dense_bytes, *sent_bytes.values()])
ax.set(yscale="log", ylabel="bytes summed per step", xlabel="sparsity",
       title="lenet300: what one Allreduce carries")
fig.tight_layout()
figures.show(fig, "bytes_per_step")

# %% [markdown]
# Biases stay dense, so the ratio is a little under 1/(1 − sparsity). RigL adds, on its update
# steps only, the dense gradient its growth rule scores: the ranks sum it a chunk of rows at a
# time (`chunk_rows`), so no rank ever holds the whole dense gradient matrix.
# `benchmarks/distributed.py` measures all this and projects it to 8 and 64 ranks.
#
# **Try it**: count `mlp:784-1000-1000-10` the same way (`buffer_bytes(sparse_model(
# "mlp:784-1000-1000-10", 0.99))`): the wider the layers, the closer the ratio comes to
# 1/(1 − sparsity), because the dense biases weigh less.

# %% [markdown]
# ## 3. Every rank must agree on the mask
#
# A topology update (drop, then grow) must leave every rank with the same mask, or the ranks
# would be training different networks and summing gradients of unrelated weights. sparsenet
# guarantees it by construction and checks it:
#
# - **the same start:** every rank builds the model from the same seed, and at start-up the
#   ranks compare their versions, settings and a hash of their data (a difference is refused);
# - **the same values:** every rank applies the same summed gradient, so magnitudes (what is
#   dropped) are the same on every rank;
# - **the same growth:** RigL grows where the *summed* dense gradient is largest; SET grows at
#   random from the seeded stream every rank shares (nothing else draws from it differently:
#   Dropout, whose masks would depend on each rank's part, is refused);
# - **checked:** after every update the ranks exchange a checksum of each sparse layer's index
#   arrays (the mask) and of its values; a difference ends every rank with an error naming the
#   layer and step.
#
# The checksum sees a single changed index:

# %%
replica_a, replica_b = sparse_model("lenet300", 0.9, seed=3), sparse_model("lenet300", 0.9, seed=3)
print("same seed, same checksums:", (topology_checksums(replica_a)
                                     == topology_checksums(replica_b)).all())
weight = replica_b[1].weight                    # layer 1: move row 0's first connection
row = weight.indices[weight.indptr[0]:weight.indptr[1]]
free_column = np.setdiff1d(np.arange(weight.shape[1]), row)[0]
indices = weight.indices.copy()                 # index arrays are read-only: edit a copy
indices[:row.size] = np.sort(np.append(row[1:], free_column))
replica_b[1].set_topology(CSR(weight.indptr, indices, weight.values.copy(), weight.shape),
                          np.arange(weight.nnz))
moved = topology_checksums(replica_a) != topology_checksums(replica_b)
sparse_layers = [name for name, m in replica_b.named_modules() if hasattr(m, "set_topology")]
print("after moving one connection, the layers whose mask checksum differs:",
      [sparse_layers[i] for i in np.flatnonzero(moved[:, 0])])

# %% [markdown]
# ## 4. A real run on two ranks
#
# `mpiexec -n 2 sparsenet train ... --distributed` starts two processes; rank 0 prints, writes
# the record and the checkpoints, the other trains in step. Here both ranks run on this
# machine (loopback); the same command with a hostfile runs across machines (README, "Several
# machines"). The run is a few steps of RigL so the cell stays short: its accuracy is not
# meaningful, what matters is that it ran and what it sent.

# %%
mpiexec = Path(sys.executable).parent / "mpiexec"
steps = 6 if FAST else 40
if not mpiexec.exists():
    print("mpiexec not found beside python: install the mpi extra to run this cell")
else:
    with tempfile.TemporaryDirectory() as folder:
        record_path = os.path.join(folder, "run.json")
        command = [str(mpiexec), "-n", "2", sys.executable, "-m", "sparsenet", "train",
                   "--data", "subset", "--model", "lenet300", "--method", "rigl",
                   "--sparsity", "0.99", "--opt", "delta_t=3", "--max-steps", str(steps),
                   "--no-progress", "--json", record_path, "--distributed"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        print(done.stdout.strip() or done.stderr.strip())
        if done.returncode == 0:
            run = json.load(open(record_path))["distributed"]
            print(f"{run['ranks']} ranks, {run['steps']} steps; bytes reduced per step: "
                  f"{run['gradient_bytes_per_step']:,.0f}; growth-score bytes in all: "
                  f"{run['growth_bytes']:,}; communication {run['gradient_seconds']:.3f} s "
                  f"(gradients) + {run['growth_seconds']:.3f} s (growth) + "
                  f"{run['check_seconds']:.3f} s (mask checks) on rank 0")

# %% [markdown]
# **Try it**
#
# - Run section 4 with `--method set`: the growth bytes drop to 0 (SET's random growth needs
#   no communication), and the bytes per step stay the stored values.
# - Set `--batch-size 1` in section 4: the run is refused at start, saying a batch too small
#   to split among the ranks was left.
# - In section 1, split the batch into four parts with their shares: the largest difference
#   stays at float32 rounding.
