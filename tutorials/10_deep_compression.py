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
# # 10 · Deep Compression: what a weight really costs, stage by stage
#
# Han, Mao & Dally (2016, *Deep Compression*) shrink LeNet-300-100 40x, from 1070 KB to
# 27 KB, with three stages that each keep the accuracy: **pruning** (keep ~8 % of the weights),
# **trained quantization** (every layer's weights share 2^b values, b = 5 or 6 bits) and
# **Huffman coding** (frequent codes get short bit strings).
#
# **You will learn**
#
# 1. what a weight costs in bits in each form: dense, CSR, relative index, shared code, Huffman;
# 2. how k-means weight sharing and centroid fine-tuning work, and what Huffman gains on top;
# 3. what the compressed file holds, byte by byte, and how the model runs from it;
# 4. where the inference energy goes, and why fitting on chip matters more than FLOPs.
#
# **Time**: about 10 minutes to read; running it trains a LeNet-300-100 and compresses it (two minutes
# on the full Fashion-MNIST on one core). `SPARSENET_FAST=1 python tutorials/10_deep_compression.py`
# uses 1,000 images and at most two epochs per phase: it runs in seconds, and its accuracies
# are then not meaningful (the sizes and bits are, for that small model).

# %%
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND") \
        and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")          # a script without a display draws to files only
import matplotlib.pyplot as plt  # noqa: E402

from sparsenet import huffman  # noqa: E402
from sparsenet.compressed_io import read_compressed, relative_index  # noqa: E402
from sparsenet.compressed_model import load_compressed  # noqa: E402
from sparsenet.compression_report import paper_table, stage_table  # noqa: E402
from sparsenet.plotting import Figures  # noqa: E402
from sparsenet.train import TrainConfig, evaluate, fast_mode, load_arrays, train_model  # noqa: E402

figures = Figures("10")            # inline in Jupyter; always saved to figures/10_*.png

FAST = fast_mode()
DATA = load_arrays("auto")
_, y_train, x_test, y_test, _ = DATA
WORK = Path(tempfile.mkdtemp())
print("fast mode:", FAST, " training images:", len(y_train))

# %% [markdown]
# ## 1. The whole pipeline, then its numbers
#
# `deep_compression` trains the dense model, prunes it in three rounds (to the paper's
# densities: 8 %, 9 % and 26 % for the three layers, Table 2) with retraining after each,
# shares each layer's weights among 2^b values and fine-tunes those values, and writes the
# Huffman-coded file. Every size below is a file on disk, everything counted; the ratio is
# the dense float32 safetensors file over the compressed file.

# %%
out = WORK / "lenet300.sndc"
config = TrainConfig(model="lenet300", method="deep_compression", progress=False,
                     method_options={"out": str(out), "bits": 5})
model, record = train_model(config, log=None)
report = record["deep_compression"]
print(stage_table(report, "lenet300"))

# %% [markdown]
# The per-layer view, in the layout of the paper's Table 2 (our row, then the paper's; the
# paper trained on MNIST at 6 bits, we on Fashion-MNIST at 5). "Index bits" are the bits of
# a kept weight's position: a fixed 5-bit relative index, more once the filler entries are
# counted, fewer once Huffman-coded.

# %%
print(paper_table(report, "lenet300"))

# %% [markdown]
# **Try it**
# - Set `"bits": 6` (the paper's LeNet-300-100 setting): the file grows by about one bit per
#   kept weight before Huffman coding, and by less after it.
# - Add `"index_bits": 8`: almost no fillers, but every position costs 8 bits before Huffman
#   coding; after it the difference mostly disappears (Huffman adapts to the distances).

# %% [markdown]
# ## 2. What a weight costs, form by form
#
# The first layer (300 x 784) as the pipeline left it. A dense float32 weight costs 32 bits.
# CSR stores each kept weight as a 32-bit value and a 32-bit column (plus one row pointer per
# row). The paper's relative index stores the distance to the previous kept weight in 5 bits
# (a filler entry when the distance is too long), and weight sharing replaces the 32-bit
# value by a b-bit code into a small codebook. Huffman coding then spends fewer bits on the
# frequent codes and distances.

# %%
first = model.get_submodule("1")
layer_row = report["quantized"]["layers"][0]
nnz, dense_weights = first.weight.nnz, 300 * 784
csr_bits = 8 * first.weight.nbytes / nnz
print(f"kept weights: {nnz:,} of {dense_weights:,} ({100 * nnz / dense_weights:.1f} %)")
print(f"dense float32:          {32 * dense_weights / nnz:6.1f} bits per kept weight "
      "(every zero is stored too)")
print(f"CSR (float32 + int32):  {csr_bits:6.1f} bits per kept weight")
print(f"relative index + code:  {layer_row['index_bits_with_fillers'] + layer_row['weight_bits']:6.2f}"
      f" bits ({layer_row['weight_bits']} for the code, {layer_row['index_bits_with_fillers']:.2f}"
      f" for the position, fillers included; {layer_row['fillers']:,} fillers)")
print(f"Huffman-coded:          {layer_row['index_bits_huffman'] + layer_row['weight_bits_huffman']:6.2f}"
      f" bits ({layer_row['weight_bits_huffman']:.2f} + {layer_row['index_bits_huffman']:.2f})")

# %% [markdown]
# ## 3. Inside the stages
#
# **Weight sharing.** k-means in one dimension, per layer, initialised linearly over
# [min, max] (the paper's best of three initialisations: it keeps centroids for the few large
# weights). Every weight then stores only its cluster's index. During fine-tuning the
# gradients of a cluster's members are summed (the paper's eq. 3) and every member takes the
# centroid's step, so the cluster stays one value. The file holds the result:

# %%
stored = read_compressed(out)
fc1 = stored.layers[0]
values = fc1.codebook[fc1.codes]
counts = np.bincount(fc1.codes, minlength=fc1.codebook.size)
lengths = huffman.code_lengths(counts)
fig, (ax_w, ax_h) = plt.subplots(1, 2, figsize=(10, 3.5))
ax_w.hist(values, bins=200, color="C0")
ax_w.vlines(fc1.codebook, 0, counts.max() * 0.05, color="C3", label="shared values")
ax_w.set(xlabel="weight", ylabel="weights", title=f"layer 1: {fc1.codebook.size} shared values")
ax_w.legend()
order = np.argsort(-counts)
ax_h.bar(range(counts.size), counts[order] / counts.sum(), color="C0", label="frequency")
ax_h2 = ax_h.twinx()
ax_h2.plot(range(counts.size), lengths[order], "C3.-", label="Huffman code length (bits)")
ax_h.set(xlabel="shared value (most frequent first)", ylabel="fraction of weights",
         title="frequent codes get short bit strings")
ax_h2.set_ylabel("bits")
fig.tight_layout()
figures.show(fig, "codebook")
p = counts[counts > 0] / counts.sum()
print(f"entropy of the codes {-(p * np.log2(p)).sum():.2f} bits, Huffman mean "
      f"{huffman.mean_bits(counts, lengths):.2f} bits, fixed width {fc1.weight_bits} bits")

# %% [markdown]
# **Relative index.** Visiting the kept weights row by row, each is coded by its distance to
# the previous one. With 5 bits, symbol 0..30 means a distance of 1..31 and symbol 31 is a
# filler: "advance 31, no weight". The distances are short and skewed, which is what
# Huffman coding exploits.

# %%
rows = np.repeat(np.arange(fc1.shape[0]), np.diff(fc1.indptr))
symbols = relative_index(rows * fc1.shape[1] + fc1.indices, fc1.index_bits)
index_counts = np.bincount(symbols, minlength=2 ** fc1.index_bits)
filler = 2 ** fc1.index_bits - 1
print("most frequent distances (distance, count):",
      [(int(s) + 1, int(index_counts[s])) for s in np.argsort(-index_counts[:filler])[:5]])
print(f"fillers: {int(index_counts[-1]):,} of {symbols.size:,} index entries")

# %% [markdown]
# **Try it**
# - Redo the k-means with a random (Forgy) initialisation, `np.random.choice(values, 32)` as
#   the starting centroids: few centroids land on the rare large weights.
# - Huffman-code the column indices themselves instead of the distances: the entropy is close
#   to log2(784) = 9.6 bits, twice what the distances need.

# %% [markdown]
# ## 4. The file, and inference from it
#
# A JSON header, then per layer the codebook, the Huffman tables (one code length per
# symbol: canonical codes need nothing else) and the bitstreams, then the biases. No
# pickle: the format is specified in `sparsenet/compressed_io.py`, and every field is
# checked when it is read.

# %%
header = json.dumps(stored.header["layers"][0])
print(f"{out.stat().st_size:,} bytes: header {report['quantized']['header_bytes']:,}, layers "
      f"{sum(layer.file_bytes for layer in stored.layers):,}, dense parts "
      f"{sum(v.nbytes for v in stored.dense.values()):,}")
print("layer 1's header entry:", header)

# %% [markdown]
# Loading decodes the Huffman streams once, to one-byte codes; the layers then multiply with
# the codes directly (`codebook_spmm`: the float weights are never expanded). The decoded
# model is exactly the quantized one, so its accuracy is the same.

# %%
compressed_model = load_compressed(out)
accuracy, _ = evaluate(compressed_model, x_test, y_test)
print(f"accuracy from the file {accuracy:.4f}, of the model in memory "
      f"{report['quantized']['test_accuracy']:.4f}")
weight = compressed_model.get_submodule("1").weight
print(f"layer 1 in memory: codes {weight.nbytes:,} bytes, float32 CSR "
      f"{weight.to_csr().nbytes:,}, dense {4 * dense_weights:,}")

# %% [markdown]
# ## 5. Where the energy goes
#
# Horowitz's 45 nm figures: a 32-bit float multiply costs 3.7 pJ and an add 0.9 pJ, but
# reading 32 bits costs 5 pJ from on-chip SRAM and 640 pJ from DRAM. We count each layer's
# weights read once per inference, from SRAM when the layer's bytes fit 128 KiB on chip
# (the assumptions are listed once, in `sparsenet/metrics.py`). Pruning cuts the arithmetic
# and the bytes; compression cuts the bytes until every layer fits on chip.

# %%
stages = {"dense": report["dense"]["energy"], "pruned (CSR)": report["pruned"]["energy"],
          "compressed": report["quantized"]["energy"]}
fig, ax = plt.subplots(figsize=(7, 3.5))
for i, (name, energy) in enumerate(stages.items()):
    fetch, arithmetic = energy["fetch_pj"] / 1e6, energy["arithmetic_pj"] / 1e6
    ax.bar(i, arithmetic, color="C0", label="arithmetic" if i == 0 else None)
    ax.bar(i, fetch, bottom=arithmetic, color="C3", label="weight fetches" if i == 0 else None)
    memories = ", ".join(f"{r['name']}: {r['memory']}" for r in energy["layers"])
    print(f"{name:13s} {energy['total_pj'] / 1e6:9.3f} uJ  (fetch {fetch:.3f}, arithmetic "
          f"{arithmetic:.3f}; {memories})")
ax.set_xticks(range(len(stages)), list(stages))
ax.set(ylabel="uJ per inference", yscale="log", title="LeNet-300-100, one inference")
ax.legend()
fig.tight_layout()

figures.show(fig, "energy")

# %% [markdown]
# **Try it**
# - `sparsenet.metrics.inference_energy(model, (1, 28, 28), on_chip_bytes=1 << 20)`: with 1 MiB on chip
#   even the dense first layer fits, and the dense model's energy falls by two orders of
#   magnitude: where the weights live matters more than how many FLOPs there are.
# - Compress `lenet5` (`TrainConfig(model="lenet5", lr=0.01, ...)`): its convolutions reuse
#   each weight at hundreds of positions, so arithmetic, not fetches, dominates there.
#
# ## What's next
#
# `sparsenet compress --model lenet300 --out model.sndc` runs this pipeline from the command
# line, and `sparsenet evaluate model.sndc` scores the file (accuracy, per class, bytes,
# energy; `--json` writes them). `benchmarks/compression.py` runs the pipeline on the full data
# set with two seeds and writes the paper's tables for our runs
# (`benchmarks/results/compression-lenet300.md`: the stage ratios, the per-layer bits, the
# energy); its `--tune` is the validation grid the settings came from, and `--estimate` gives
# a setting's file size before any training. `benchmarks/codebook_kernel.py` times the
# codebook product against float32 CSR and dense at batch 1 and 128, with the bytes each
# holds in memory. Bad files are refused, never half-read: a cut stream, a malformed Huffman
# table, a code past the codebook or a header that does not match its payload raises
# `CompressedFileError` naming the file and the field (`sparsenet evaluate` prints that one
# line and exits with status 2).
