"""One-shot magnitude pruning of a trained network, then fine-tuning.

Han, Pool, Tran & Dally 2015, "Learning both Weights and Connections for Efficient Neural
Networks" (NeurIPS). Three steps (their Figure 2): train the dense network, remove the
connections of smallest magnitude, retrain the survivors starting from their trained values
(Section 3.3: keeping the surviving weights beats re-initializing them).

    1. train dense for `epochs`                                          phase "dense"
    2. score every unit u of layer l:   s_u = |w_u|  (an element)   or  ||W_u||_2  (a block)
       scope="layerwise": layer l keeps its k_l = d_l · units_l best units, d_l = 1 - sparsity
                          (or the densities of `distribution`: er, erk)
       scope="global":    one threshold tau over every layer: keep s_u >= tau, with tau such
                          that sum_l k_l = (1 - sparsity) · sum_l units_l,
                          and k_l >= min_density · units_l (a floor per layer)
    3. fine-tune the survivors for `finetune_epochs` at `finetune_lr`    phase "finetune"
       (a pruned weight is absent from the sparse format: no gradient, momentum or weight
       decay can bring it back)

With `--pattern nm:2:4` this is NVIDIA's ASP recipe (Mishra et al. 2021, "Accelerating Sparse
Deep Neural Networks"): train dense, keep the 2 largest |w| of every 4 consecutive inputs
(the N:M format enforces the rule, density n/m in every layer), retrain. ASP retrains with the
original schedule and length; `--opt finetune_epochs=20 --opt finetune_lr=0.05` does that here.
With `--pattern block:16` blocks are ranked by their L2 norm (`Block.unit_scores`).

Defaults and where they come from:
- scope="global": one threshold over all layers (our choice, see the validation below),
  unless the pattern or a distribution fixes each layer's share: N:M (n/m everywhere) or
  --distribution er/erk give "layerwise". Han et al. instead set each layer's threshold to a
  quality parameter times the standard deviation of its weights; a fixed density per layer,
  as in Zhu & Gupta 2017 and Gale et al. 2019, is `scope="layerwise"`.
- min_density=0.01: a floor per layer. Global ranking can empty a layer whose weights are all
  small ("layer collapse", Tanaka et al. 2020, SynFlow); Frankle & Carbin 2019 prune
  the output layer at half rate for the same reason. 1 % keeps every layer connected.
- finetune_epochs=5, finetune_lr = the run's lr, decayed by cosine over the fine-tune.
- Both choices were made on a validation split (55,000 training images, 5,000 held out;
  `benchmarks/tune.py --grid pruning`, table in benchmarks/results/tuning-pruning.md): on
  lenet300 at 90 %, global beat layerwise by 0.5 points and finetune_lr = lr (0.05) beat
  lr/10 and lr/2.5 (3 seeds each).

Helpers used by gmp.py and lottery.py live here too: the magnitude score of stored units,
"drop the lowest until k remain", and the dense-equivalent sparse model (density 1.0).
"""
from __future__ import annotations

import math
import time

import numpy as np

from .. import backend
from ..sparse import FORMATS, sparsify
from ..train import combine_flops, epochs_for, evaluate, make_record, train_phase
from .base import Method, SparseMethod, register
from .common import (DENSE_TYPES, change_topology, layer_densities, lowest_units,
                     prunable_layers, weight_shape)

SCOPES = ("layerwise", "global")


# ----- helpers shared by magnitude, gmp and lottery --------------------------------------------
def unit_magnitudes(weight) -> np.ndarray:
    """|w| of each stored unit; the format reduces elements to units (a block: its L2 norm)."""
    return weight.unit_scores(np.abs(backend.to_numpy(weight.values)))


def total_units(weight) -> int:
    """Units the layer holds when dense (the unit grid: elements, or blocks)."""
    return int(np.prod(weight.unit_grid))


def keep_largest(layer, keep: int, optimizer=None) -> bool:
    """Drop a sparse layer's lowest-magnitude units until `keep` remain; True if any dropped."""
    weight = layer.weight
    n_drop = weight.n_units - int(keep)
    if n_drop <= 0:
        return False
    change_topology(layer, lowest_units(unit_magnitudes(weight), n_drop), optimizer=optimizer)
    return True


def pruned_layer_names(model, dense_layers=()) -> list:
    """Prunable layers minus those kept dense (names, or 'first' / 'last')."""
    names = [n for n, _ in prunable_layers(model)]
    keep = {names[0] if d == "first" else names[-1] if d == "last" else d for d in dense_layers}
    unknown = keep - set(names)
    if unknown:
        raise ValueError(f"dense_layers names {sorted(unknown)}, the model's layers are {names}")
    return [n for n in names if n not in keep]


def probe_format(model, names, format, density=1.0, **options) -> dict:
    """{name: an all-zero weight of the layer's shape in `format`}: its unit grid and unit size.

    Run before any training so that a pattern that does not fit a layer (block:7 on a 300-row
    layer, N:M with m not dividing the inputs) fails at once, naming the layer.
    """
    layers = dict(prunable_layers(model))
    probes = {}
    for name in names:
        shape = weight_shape(layers[name])
        matrix = np.zeros((shape[0], int(np.prod(shape[1:]))), dtype=np.float32)
        try:
            probes[name] = FORMATS[format].from_dense(matrix, density=density, **options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"layer {name!r} with weight {shape} cannot be stored in format "
                             f"{format!r} with {options}: {err}") from None
    return probes


def dense_equivalent(model, names, format, **options):
    """Swap the named dense layers for sparse ones that store every weight (density 1.0)."""
    layers = dict(prunable_layers(model))
    names = [n for n in names if isinstance(layers[n], DENSE_TYPES)]
    if names:
        sparsify(model, format=format, layers=names, density_per_layer={n: 1.0 for n in names},
                 from_dense=True, **options)
    return model


def global_keep(scores: dict, budget: int, floors: dict) -> dict:
    """{name: units kept} under one threshold over all layers' unit scores.

    A layer the threshold would leave below its floor keeps the floor and leaves the ranking;
    the others are ranked again with what is left of the budget (until no floor binds).
    """
    fixed = {}
    while True:
        free = [n for n in scores if n not in fixed]
        left = budget - sum(fixed.values())
        if left < 0:
            raise ValueError(f"min_density floors alone keep {sum(fixed.values())} units, more "
                             f"than the {budget} the sparsity allows: lower min_density")
        if not free:
            return fixed
        pool = np.concatenate([scores[n] for n in free])           # every free unit, layer order
        owner = np.repeat(np.arange(len(free)), [scores[n].size for n in free])
        kept_mask = ~lowest_units(pool, max(0, pool.size - left))
        kept = np.bincount(owner[kept_mask], minlength=len(free))
        below = [n for n, k in zip(free, kept) if k < floors[n]]
        if not below:
            return {**fixed, **{n: int(k) for n, k in zip(free, kept)}}
        fixed.update({n: floors[n] for n in below})


# ----- the method ------------------------------------------------------------------------------
@register("magnitude")
class MagnitudePruning(SparseMethod):
    """Train dense, prune by |w| once (layerwise or global), fine-tune."""

    option_help = {
        "scope": "global: one threshold over all layers | layerwise; default global, or "
                 "layerwise for nm or an er/erk distribution (chosen on a validation split)",
        "min_density": "the least density a layer keeps under global ranking (1 %: no layer "
                       "collapse)",
        "finetune_epochs": "epochs of fine-tuning after the prune (engine choice: 5)",
        "finetune_lr": "learning rate of the fine-tuning; default the run's (validation split)",
        "distribution": "uniform | er | erk (a non-uniform one means scope layerwise)",
    }

    def __init__(self, sparsity=0.9, scope=None, min_density=0.01, finetune_epochs=5,
                 finetune_lr=None, format="csr", distribution="uniform", **options):
        super().__init__(sparsity, format=format, distribution=distribution, **options)
        if scope is None:        # global, unless the pattern or a distribution fixes each layer
            scope = "layerwise" if self.format == "nm" or distribution != "uniform" else "global"
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if not (isinstance(min_density, (int, float)) and 0 <= min_density < 1):
            raise ValueError(f"min_density must be a number in [0, 1), got {min_density!r}")
        if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) \
                or finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be an integer >= 0, got {finetune_epochs!r}")
        if finetune_lr is not None and not (isinstance(finetune_lr, (int, float))
                                            and finetune_lr > 0):
            raise ValueError(f"finetune_lr must be a positive number, got {finetune_lr!r}")
        if scope == "global" and distribution != "uniform":
            raise ValueError(f"scope='global' ranks all layers together; distribution="
                             f"{distribution!r} applies only to scope='layerwise'")
        if self.format == "nm":
            # the N:M format fixes the density n/m in every layer: nothing else to choose
            nm_sparsity = 1 - self.n / self.m
            if scope != "layerwise" or distribution != "uniform":
                raise ValueError("the N:M pattern keeps n/m in every layer: use scope='layerwise' "
                                 "and distribution='uniform'")
            if sparsity not in (0, 0.0) and abs(sparsity - nm_sparsity) > 1e-9:
                raise ValueError(f"sparsity {sparsity} contradicts the {self.n}:{self.m} pattern "
                                 f"(sparsity {nm_sparsity}); leave it out or give {nm_sparsity}")
            self.sparsity = nm_sparsity
        self.scope, self.min_density = scope, float(min_density)
        self.finetune_epochs, self.finetune_lr = finetune_epochs, finetune_lr

    # ----- step 2: prune -------------------------------------------------------------------
    def keep_counts(self, model, names) -> dict:
        """{layer name: units to keep}; the named layers hold all their weights, sparsely."""
        if not names:
            return {}
        layers = dict(prunable_layers(model))
        weights = {n: layers[n].weight for n in names}
        units = {n: total_units(w) for n, w in weights.items()}
        floors = {n: math.ceil(self.min_density * units[n]) for n in names}
        if self.scope == "layerwise":
            density = layer_densities(model, self.sparsity, self.distribution, self.dense_layers)
            return {n: max(floors[n], int(round(density[n] * units[n]))) for n in names}
        # global: the budget counts every prunable weight; layers kept dense use their share
        all_weights = sum(int(np.prod(weight_shape(m))) for m in layers.values())
        unpruned = all_weights - sum(w.nnz for w in weights.values())
        unit_size = weights[names[0]].nnz // units[names[0]]       # one format: one unit size
        budget = int(round(((1 - self.sparsity) * all_weights - unpruned) / unit_size))
        return global_keep({n: unit_magnitudes(w) for n, w in weights.items()}, budget, floors)

    def prune(self, model):
        """Step 2 on a trained dense model, in place."""
        if self.format == "nm":
            return self.sparsify(model, from_dense=True)     # the n largest |w| of every m
        names = pruned_layer_names(model, self.dense_layers)
        if self.scope == "layerwise":                        # a distribution may keep some dense
            density = layer_densities(model, self.sparsity, self.distribution, self.dense_layers)
            names = [n for n in names if density[n] < 1.0]
        dense_equivalent(model, names, self.format, **self.format_options())
        layers = dict(prunable_layers(model))
        for name, k in self.keep_counts(model, names).items():
            keep_largest(layers[name], k)
        return model

    # ----- the whole run: dense, prune, fine-tune --------------------------------------------
    def train_model(self, config, model, data, log=print):
        self.fit_format(model)                     # blocks that cannot tile a layer: dense
        names = pruned_layer_names(model, self.dense_layers)
        probe_format(model, names, self.format, density=None, **self.format_options())
        x_test, y_test = data[2], data[3]
        start = time.perf_counter()
        dense_epochs = epochs_for(config)
        history, flops, optimizer = train_phase(model, Method(), config, data, dense_epochs, log)
        history = [dict(h, phase="dense") for h in history]
        dense_acc = evaluate(model, x_test, y_test, device=config.device)[0]
        self.prune(model)
        pruned_acc = evaluate(model, x_test, y_test, device=config.device)[0]
        if log:
            log(f"pruned to {self.scope} sparsity {self.sparsity:.4f}: test accuracy "
                f"{dense_acc:.4f} -> {pruned_acc:.4f} before fine-tuning")
        phases = [flops]
        finetune_epochs = epochs_for(config, self.finetune_epochs) if self.finetune_epochs else 0
        if finetune_epochs:
            lr = self.finetune_lr if self.finetune_lr is not None else config.lr
            self.used_finetune_lr = lr
            tuned, flops, optimizer = train_phase(model, self, config, data, finetune_epochs,
                                                  log, lr=lr, seed_offset=1)
            history += [dict(h, phase="finetune", epoch=dense_epochs + h["epoch"]) for h in tuned]
            phases.append(flops)
        record = make_record(config, model, self, optimizer, data, history,
                             combine_flops(phases), time.perf_counter() - start,
                             dense_epochs + finetune_epochs, dense_test_accuracy=dense_acc,
                             pruned_test_accuracy=pruned_acc)
        return model, record

    def describe(self) -> dict:
        return {**super().describe(), "scope": self.scope, "min_density": self.min_density,
                "finetune_epochs": self.finetune_epochs,
                "finetune_lr": getattr(self, "used_finetune_lr", self.finetune_lr)}
