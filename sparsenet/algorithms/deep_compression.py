"""Deep Compression: pruning, trained quantization and Huffman coding (Figure 1).

Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks with Pruning,
Trained Quantization and Huffman Coding" (ICLR). Three stages, each keeping the accuracy:

    0. train the dense network (skipped when it is given: `sparsenet compress --from`)
    1. pruning (Section 2, after Han et al. 2015): for r = 1 .. R
           each layer l keeps its largest |w| at density d_l^(r/R)   (reaching d_l at r = R)
           (with a global sparsity s instead: one threshold over all layers keeps
            (1 - s)^(r/R) of all weights, each layer at least MIN_DENSITY)
           retrain the survivors for `retrain_epochs` at `retrain_lr`
    2. trained quantization (Section 3): for each layer l, separately
           k-means of its kept weights into K_l = 2^b_l clusters, the centroids C initialised
           linearly over [min w, max w] (Section 3.2); every weight becomes its index I_ij
           fine-tune the centroids for `finetune_epochs` at `centroid_lr`, with (eq. 3)
               dL/dC_k = sum_ij dL/dW_ij · 1(I_ij = k)
           (the gradients of a cluster are summed, and every member takes the centroid's
           step, so the members stay one shared value: Figure 3)
    3. Huffman coding (Section 4) of the cluster indices and of the relative index
       differences, with a filler entry wherever a difference exceeds the index bit width
       (Section 2), written as the file specified in sparsenet/compressed_io.py: a JSON
       header, then per layer the codebook, the Huffman tables and the bitstreams, then the
       dense parts (biases). The ratio is the dense float32 safetensors file's bytes over
       this file's bytes, everything counted.

Defaults and where they come from:
- densities d_l: the paper's Tables 2 and 3, "Weights% (P)": LeNet-300-100 8 %, 9 %, 26 %;
  LeNet-5 66 %, 12 %, 8 %, 19 % (the densities of Han et al. 2015). Another model needs
  `--sparsity` (a global magnitude threshold over all layers, as `magnitude` ranks) or
  `densities`.
- weight bits b_l: Tables 2 and 3: 6 bits in every LeNet-300-100 layer; LeNet-5 8 bits for
  the convolutions and 5 for the fully connected layers, the rule of AlexNet and VGG-16 too
  (Section 5.2: "256 shared weights in each CONV layer ... 32 shared weights in each FC
  layer"). `bits` sets them (one number, one per layer, or {"conv": 8, "fc": 5}).
- index_bits = 5: "Index bits (P+Q)" of Tables 2 and 3, every LeNet layer (Section 2 says
  8 bits for conv and 5 for fc layers; LeNet-5's conv layers use 5, AlexNet's Table 4 uses 4).
- rounds R = 3, retrain_epochs = 4, retrain_lr = the run's lr, finetune_epochs = 3,
  centroid_lr = lr / 100: the paper gives no schedule for LeNet. On a validation split of
  lenet300 (55,000 training images, 5,000 held out, 2 seeds; benchmarks/compression.py
  --tune, table in benchmarks/results/compression-tuning-lenet300.md) each alternative tried
  did worse: retrain_epochs 3 or 6, 5 rounds of 3 epochs, retrain_lr 0.02, centroid_lr lr/10.
  The centroid step is small because its gradient is a sum over the cluster's members
  (hundreds of weights), not one weight's gradient.
- linear initialisation: the best of the paper's three (Forgy, density-based, linear;
  Section 6.2, Figure 8); k-means runs Lloyd's iterations until no weight changes cluster.
"""
from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np

from .. import backend
from ..metrics import forward_flops, layer_positions, sparsity_summary
from ..train import combine_flops, epochs_for, evaluate, make_record, train_phase
from .base import Method, SparseMethod, register
from .common import prunable_layers, weight_shape
from .magnitude import (dense_equivalent, global_keep, keep_largest, total_units,
                        unit_magnitudes)

PAPER_DENSITIES = {"lenet300": (0.08, 0.09, 0.26), "lenet5": (0.66, 0.12, 0.08, 0.19)}
PAPER_BITS = {"lenet300": (6, 6, 6), "lenet5": (8, 8, 5, 5)}
CONV_BITS, FC_BITS, INDEX_BITS = 8, 5, 5
MIN_DENSITY = 0.01               # the floor of a layer under a global threshold (as magnitude's)


# ----- stage 2: weight sharing ---------------------------------------------------------------
def kmeans_1d(weights, k: int, max_iter: int = 300):
    """(centroids (k,) float64, index of each weight) of 1-D k-means (Lloyd), initialised
    linearly over [min, max]. A cluster left empty keeps its centroid (it is dropped later)."""
    weights = np.asarray(weights, dtype=np.float64)
    centroids = np.linspace(weights.min(), weights.max(), k) if weights.size else np.zeros(k)
    index = None
    for _ in range(max_iter):
        # the nearest centroid: centroids stay sorted, so the boundaries are the midpoints
        new = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, weights)
        if index is not None and np.array_equal(new, index):
            break
        index = new
        counts = np.bincount(index, minlength=k)
        sums = np.bincount(index, weights=weights, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled]
    return centroids, index


def share_weights(values, bits: int):
    """(codes uint8, codebook float32) of k-means into 2^bits clusters; unused centroids are
    dropped, so codes index only clusters that have members."""
    centroids, index = kmeans_1d(values, 1 << bits)
    used = np.unique(index)                                  # sorted cluster numbers in use
    codebook = centroids[used].astype(values.dtype)
    codes = np.searchsorted(used, index).astype(np.uint8)
    return codes, codebook


class SharedWeights(Method):
    """Centroid fine-tuning (Figure 3) through the ordinary optimizer: after backward, every
    member's gradient becomes its cluster's summed gradient (eq. 3), so SGD (with momentum and
    weight decay, elementwise) moves all members of a cluster alike; after the step the
    members are set to their cluster's value again, which the next step starts from."""

    def __init__(self, layers: dict, quantization: dict):
        self.layers, self.quantization = layers, quantization
        # one member of every cluster (each has one: unused centroids were dropped)
        self.member = {name: np.unique(quantization[name][0], return_index=True)[1]
                       for name in layers}

    def after_backward(self, step):
        for name, layer in self.layers.items():
            codes, codebook, _ = self.quantization[name]
            grad = layer.values.grad
            if grad is not None:
                xp = backend.array_module(grad)
                summed = np.bincount(codes, weights=backend.to_numpy(grad), minlength=codebook.size)
                layer.values.grad = xp.asarray(summed.astype(grad.dtype)[codes])

    def after_step(self, step):
        for name, layer in self.layers.items():
            codes, codebook, bits = self.quantization[name]
            codebook = backend.to_numpy(layer.values.data)[self.member[name]]
            self.quantization[name] = (codes, codebook, bits)
            layer.values.data[...] = backend.array_module(layer.values.data).asarray(codebook[codes])


# ----- the method -------------------------------------------------------------------------------
@register("deep_compression")
class DeepCompression(SparseMethod):
    """Prune iteratively, share weights by k-means and fine-tune the centroids, Huffman-code."""

    option_help = {
        "sparsity": "0 (default): each layer at its `densities`; else the fraction of all "
                    "weights removed, ranked by one global magnitude threshold (`--sparsity`)",
        "densities": "kept fraction per prunable layer, a list (default: the paper's Tables 2 "
                     "and 3 for lenet300 and lenet5; another model needs `--sparsity`)",
        "bits": "weight bits: one number, one per layer, or {\"conv\": 8, \"fc\": 5} (default: "
                "Tables 2/3, lenet300 6; lenet5 8 conv, 5 fc; other models conv 8, fc 5)",
        "index_bits": "bits of a relative column index, fillers past 2^bits (Tables 2/3: 5)",
        "rounds": "pruning rounds, each followed by retraining (no LeNet schedule in the paper; "
                  "3, validation grid)",
        "retrain_epochs": "epochs of retraining after each pruning round (4, validation grid)",
        "retrain_lr": "learning rate of the retraining (default: the run's lr)",
        "finetune_epochs": "epochs of centroid fine-tuning after weight sharing (3)",
        "centroid_lr": "learning rate of the centroids, whose gradient sums a cluster's members "
                       "(default: the run's lr / 100, validation grid)",
        "out": "the compressed file to write (`sparsenet compress --out`; default: a "
               "temporary file, deleted after measuring)",
        "pretrained": "the model given is already trained: skip the dense phase "
                      "(`sparsenet compress --from`)",
        "format": "csr only: the layers are stored as CSR of one-byte codes",
    }

    def __init__(self, sparsity=0.0, densities=None, bits=None, index_bits=INDEX_BITS, rounds=3,
                 retrain_epochs=4, retrain_lr=None, finetune_epochs=3, centroid_lr=None,
                 out=None, pretrained=False, format="csr", **options):
        super().__init__(sparsity, format=format, distribution="uniform", **options)
        if self.format != "csr":
            raise ValueError(f"deep_compression stores layers as CSR of codes; format must be "
                             f"'csr', got {self.format!r}")
        for value, name, least in ((rounds, "rounds", 1), (retrain_epochs, "retrain_epochs", 0),
                                   (finetune_epochs, "finetune_epochs", 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for value, name in ((retrain_lr, "retrain_lr"), (centroid_lr, "centroid_lr")):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.densities, self.bits, self.index_bits = densities, bits, index_bits
        self.rounds, self.retrain_epochs, self.retrain_lr = rounds, retrain_epochs, retrain_lr
        self.finetune_epochs, self.centroid_lr = finetune_epochs, centroid_lr
        self.out, self.pretrained = out, bool(pretrained)
        self.quantization = {}

    # ----- per-layer settings ----------------------------------------------------------------
    def _per_layer(self, value, names, what, check):
        if isinstance(value, (list, tuple)):
            if len(value) != len(names):
                raise ValueError(f"{what} needs one value per layer {names}, got {list(value)}")
            out = dict(zip(names, value))
        elif isinstance(value, dict):
            if set(value) != set(names):
                raise ValueError(f"{what} names layers {sorted(value)}; the model's are {names}")
            out = value
        else:
            out = {n: value for n in names}
        for name, v in out.items():
            check(v, f"{what} of layer {name!r}")
        return out

    def layer_bits(self, model) -> dict:
        layers = prunable_layers(model)
        names = [n for n, _ in layers]
        bits, spec = self.bits, getattr(model, "spec", None)
        if bits is None:
            bits = PAPER_BITS.get(spec, {"conv": CONV_BITS, "fc": FC_BITS})
        if isinstance(bits, dict) and bits and set(bits) <= {"conv", "fc"}:
            bits = [bits.get("conv" if len(weight_shape(m)) == 4 else "fc", FC_BITS)
                    for _, m in layers]
        return self._per_layer(bits, names, "bits", _check_bits)

    def target_densities(self, model) -> dict | None:
        names = [n for n, _ in prunable_layers(model)]
        densities = self.densities
        if densities is None and not self.sparsity:
            densities = PAPER_DENSITIES.get(getattr(model, "spec", None))
            if densities is None:
                raise ValueError("deep_compression needs a sparsity (--sparsity) or per-layer "
                                 "densities (--opt densities=[...]) for this model")
        if densities is None:
            return None                                       # global threshold at self.sparsity
        return self._per_layer(densities, names, "densities", _check_density)

    # ----- stage 1: iterative pruning with retraining -----------------------------------------
    def prune(self, model, r: int, densities):
        """Round r of R: layer l keeps its largest |w| at density d_l^(r/R), or, with a global
        sparsity s, one threshold over all layers keeps (1 - s)^(r/R) of the weights (each
        layer at least MIN_DENSITY, as `magnitude` ranks)."""
        fraction = r / self.rounds
        names = [n for n, _ in prunable_layers(model)]
        dense_equivalent(model, names, "csr")
        layers = dict(prunable_layers(model))
        units = {n: total_units(layers[n].weight) for n in names}
        if densities is None:
            budget = round((1 - self.sparsity) ** fraction * sum(units.values()))
            keep = global_keep({n: unit_magnitudes(layers[n].weight) for n in names}, budget,
                               {n: math.ceil(MIN_DENSITY * units[n]) for n in names})
        else:
            keep = {n: max(1, round(densities[n] ** fraction * units[n])) for n in names}
        for name, k in keep.items():
            keep_largest(layers[name], k)

    # ----- stage 2: quantize every pruned layer ----------------------------------------------
    def quantize(self, model, bits: dict) -> dict:
        layers = dict(prunable_layers(model, sparse_only=True))
        for name, layer in layers.items():
            values = backend.to_numpy(layer.values.data)
            codes, codebook = share_weights(values, bits[name])
            self.quantization[name] = (codes, codebook, bits[name])
            layer.values.data[...] = backend.array_module(layer.values.data).asarray(codebook[codes])
        return layers

    # ----- the whole run ---------------------------------------------------------------------------
    def train_model(self, config, model, data, log=print):
        from ..compression_report import add_stage
        x_test, y_test = data[2], data[3]
        names = [n for n, _ in prunable_layers(model)]
        densities, bits = self.target_densities(model), self.layer_bits(model)
        index_bits = self._per_layer(self.index_bits, names, "index_bits", _check_bits)
        start, history, phases, report, optimizer = time.perf_counter(), [], [], {}, None

        def score(net):
            return evaluate(net, x_test, y_test, device=config.device)[0]

        def run(method, epochs, phase, lr, seed_offset):
            """One training phase, its epochs appended to the run's history."""
            nonlocal optimizer
            hist, flops, optimizer = train_phase(model, method, config, data, epochs, log,
                                                 lr=lr, seed_offset=seed_offset)
            history.extend(dict(h, phase=phase, epoch=len(history) + 1) for h in hist)
            phases.append(flops)

        def stage(name, scratch, **files):
            """Measure the model after a stage: accuracy, bytes on disk, energy."""
            add_stage(report, model, name, score(model), scratch, x_test.shape[1:], **files)

        with tempfile.TemporaryDirectory() as scratch:
            if not self.pretrained:                                     # 0. dense training
                run(Method(), epochs_for(config), "dense", config.lr, 0)
            stage("dense", scratch)
            retrain = epochs_for(config, self.retrain_epochs) if self.retrain_epochs else 0
            for r in range(1, self.rounds + 1):                        # 1. pruning
                self.prune(model, r, densities)
                if log:
                    log(f"pruning round {r}/{self.rounds}: density "
                        f"{sparsity_summary(model)['density']:.4f}, test accuracy "
                        f"{score(model):.4f} before retraining")
                if retrain:
                    run(Method(), retrain, f"prune {r}", self.retrain_lr or config.lr, r)
            stage("pruned", scratch)
            layers = self.quantize(model, bits)                         # 2. quantization
            report["quantized_before_finetune_accuracy"] = score(model)
            if self.finetune_epochs:
                run(SharedWeights(layers, self.quantization),
                    epochs_for(config, self.finetune_epochs), "centroids",
                    self.centroid_lr or config.lr / 100, self.rounds + 1)
            path = self.out or os.path.join(scratch, "model.sndc")     # 3. Huffman coding
            stage("quantized", scratch, quantization=self.quantization, index_bits=index_bits,
                  path=path, evaluate=score)
        flops = combine_flops(phases) if phases else inference_flops(model, x_test.shape[1:])
        record = make_record(config, model, self, optimizer, data, history, flops,
                             time.perf_counter() - start, len(history), deep_compression=report)
        if log:
            log(f"compressed: {report['ratios']['huffman_file']:.1f}x smaller than the dense "
                f"file, test accuracy {report['quantized']['test_accuracy']:.4f}")
        return model, record

    def describe(self) -> dict:
        return {"rounds": self.rounds, "retrain_epochs": self.retrain_epochs,
                "retrain_lr": self.retrain_lr, "finetune_epochs": self.finetune_epochs,
                "centroid_lr": self.centroid_lr, "densities": self.densities, "bits": self.bits,
                "index_bits": self.index_bits, "pretrained": self.pretrained}


def _check_bits(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        raise ValueError(f"{what} must be an integer in [1, 8] (one-byte codes), got {value!r}")


def _check_density(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{what} must be a density in (0, 1], got {value!r}")


def inference_flops(model, input_shape) -> dict:
    """The FLOPs entry of a record for a run that trained nothing (all stages' epochs at 0)."""
    sparse, dense = forward_flops(model, layer_positions(model, input_shape))
    return {"inference_relative": sparse / dense, "training_relative": 0.0,
            "inference_per_sample": sparse, "training_total": 0.0, "dense_training_total": 0.0}
