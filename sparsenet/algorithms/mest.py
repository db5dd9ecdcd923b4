"""MEST: Memory-Economic Sparse Training, with Elastic Mutation and the Soft Memory Bound.

Yuan, Ma, Niu, Li, Kong, Liu, Gong, Zhan, He, Jin, Wang, Qin, Ren, Wang, Liu & Lin, 2021,
"MEST: Accurate and Fast Memory-Economic Sparse Training Framework on the Edge", NeurIPS 2021
(reference code: boone891214/MEST, prune_utils/retrain.py `update_mask` and utils_pr.py
`weight_pruning` / `weight_growing`).

The network is sparse from the first step to the last; every ΔT steps its connections mutate.
Only what training already holds is used, so memory stays that of the sparse model:

    score_i  = |w_i| + λ |g_i|        g: ∂L/∂w of the update step's mini-batch, at the stored
                                      weights (`layer.values.grad`): the current gradient, never
                                      accumulated (RigL's dense gradient or SNFS's momentum would
                                      cost memory), so it is free
    grow     = units drawn uniformly at random among the empty ones (as SET); a grown weight
               starts at 0 with zeroed optimizer state, and so does a unit dropped and drawn
               again in the same update (the reference zeroes pruned weights before growing)

Elastic Mutation (MEST+EM): the mutation ratio decays in steps. With budget N units in a layer
and milestones t_decay < T_end, at an update step t

    ζ_t  = ζ · (1 − k / 2)            k: milestones passed (ζ, then ζ/2, then 0: no more updates)
    drop the floor(ζ_t · N) lowest scores, grow as many at random: the layer keeps N units.

Soft Memory Bound (MEST+EM&S, `soft_bound=True`): the layer may exceed its budget between
updates. At an update step the lowest scores are dropped down to N (mostly the units grown at
the last update that stayed near zero), then floor(ζ_t · N) units are grown at random, so the
layer holds N + floor(ζ_t · N) until the next update: grown weights train for ΔT steps before
they compete with the stored ones. After the last step before T_end a final prune-back returns
every layer to exactly N (no growth), where it stays. This is the reference's order (prune to
the "lower bound" sparsity, then grow to the "upper bound"); the FLOPs and bytes of the run
count the extra units, since the loop measures the live layers.

Defaults and sources:
- ζ = 0.2 of the budget: the reference README's example at 90 % sparsity mutates 2 % of all
  weights, then 1 %, then 0 % (EM: prune-to sparsity 0.92-0.91-0.90; EM&S: grow-to sparsity
  0.88-0.89-0.90); 2 % of all weights is 20 % of the stored 10 %. (Its irregular EM&S script
  uses 0.85-0.875-0.90, ζ = 0.5.)
- t_decay = 0.5625 and T_end = 0.75 of training: MASK_UPDATE_DECAY_EPOCH = "90-120" of 160 epochs.
- ΔT = "epoch" (after the last step of every epoch): the reference mutates every 5 of its 160
  epochs (SP_MASK_UPDATE_FREQ = 5), 24 mutations before T_end; one per epoch gives 14 in a
  20-epoch run (an integer delta_t counts steps instead).
- λ = 0: the reference's `--sp-lmd` default, which no released script changes (it also reads
  `w.grad` at the first batch of an epoch, after `optimizer.zero_grad()`, so its gradient term
  is zero there). The paper's weight-and-gradient score is `--opt lam=...`; the paper's value
  of λ could not be confirmed here.
- ERK layer densities (the shared default here; the reference reads per-layer ratios from a
  YAML profile). `sparse_init="auto"`, the default of every sparse-from-scratch method here
  (dst.py says what it chooses and why); the reference masks a dense initialization, which
  `--opt sparse_init=false` forces.

Formats: drops and grows are in units (elements; blocks for block, scored by the L2 norm of
their elements' scores). N:M keeps N:M by growing back, in every group, what the drop took from
it; the soft bound needs a format whose layers may hold more than the budget (csr, block,
masked), so it is refused on nm.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, random
from ..sparse.topology import random_empty_units
from .base import register
from .common import lowest_units
from .dst import DECAYS, DynamicSparseMethod, start_sparse


class ElasticRatio:
    """MEST's Elastic Mutation schedule: ζ, then ζ/2 from step t_decay, then 0 from t_end."""

    def __init__(self, zeta: float, t_decay: int, t_end: int):
        if not 0 < t_decay < t_end:
            raise ValueError(f"the elastic schedule needs 0 < t_decay < t_end, got "
                             f"t_decay={t_decay} and t_end={t_end} steps")
        self.zeta, self.milestones = zeta, (t_decay, t_end)

    def __call__(self, step: int) -> float:
        passed = sum(step >= m for m in self.milestones)
        return self.zeta * (1 - passed / len(self.milestones))


def _fraction_or_steps(value, total_steps):
    """A float in (0, 1) is a fraction of training, an int a step count."""
    if isinstance(value, (float, np.floating)):
        return max(1, int(round(value * total_steps)))
    return int(value)


@register("mest")
class MEST(DynamicSparseMethod):
    """Drop the lowest |w| + λ|g|; regrow at random; the mutation ratio decays in steps."""

    reinit_when_same = True
    option_aliases = {"alpha": "zeta"}          # RigL's name for the fraction rewired
    option_help = {
        "zeta": "ζ, the mutation ratio: a fraction of each layer's budget (the reference "
                "README's example at 90 % sparsity: 0.2)",
        "lam": "λ, the weight of |gradient| in the drop score |w| + λ|g| (reference --sp-lmd "
               "default: 0)",
        "soft_bound": "MEST+EM&S: grow above the budget between updates, prune back at the "
                      "next (the paper's soft memory bound)",
        "delta_t": "steps between mutations, or \"epoch\" (the reference mutates every 5 of "
                   "160 epochs)",
        "t_end": "no mutation from here on (reference: epoch 120 of 160, 0.75)",
        "t_decay": "when ζ halves: a fraction of training or a step count (reference: epoch "
                   "90 of 160, 0.5625)",
        "decay": "elastic (MEST's step decay: ζ, ζ/2, 0) | cosine | constant | linear",
        "sparse_init": "true | false | \"auto\" (dst.py); false is the reference, which "
                       "masks a dense initialization",
    }

    def __init__(self, sparsity=0.9, zeta=0.2, lam=0.0, soft_bound=False, delta_t="epoch",
                 t_end=0.75, t_decay=0.5625, decay="elastic", format="csr", block_size=None,
                 n=2, m=4, distribution="erk", dense_layers=(), chunk_rows=256, sparse_init="auto"):
        if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0 < zeta < 1:
            raise ValueError(f"zeta (the mutation ratio, a fraction of each layer's budget) must "
                             f"be a number in (0, 1), got {zeta!r}")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) \
                or lam < 0:
            raise ValueError(f"lam (λ, the weight of |gradient| in the drop score) must be a "
                             f"finite number >= 0, got {lam!r}")
        if not isinstance(soft_bound, bool):
            raise ValueError(f"soft_bound must be True or False, got {soft_bound!r}")
        if decay not in ("elastic",) + DECAYS:
            raise ValueError(f"decay must be one of {('elastic',) + DECAYS}, got {decay!r}")
        if isinstance(t_decay, bool) or not isinstance(t_decay, (int, float)) or t_decay <= 0 \
                or (isinstance(t_decay, float) and t_decay >= 1):
            raise ValueError(f"t_decay (when ζ halves) must be a fraction of training in (0, 1) "
                             f"or a positive step count, got {t_decay!r}")
        if soft_bound and format == "nm":
            raise ValueError("soft_bound=True lets a layer hold more than its budget between "
                             "updates, which format 'nm' cannot (every group of m keeps exactly "
                             "n): use csr, block or masked")
        base_decay = "constant" if decay == "elastic" else decay   # elastic: set in setup
        super().__init__(sparsity, zeta, delta_t, t_end, base_decay, format, block_size, n, m,
                         distribution, dense_layers, chunk_rows, sparse_init=sparse_init)
        self.zeta, self.lam, self.soft_bound = float(zeta), float(lam), soft_bound
        self.t_decay, self.mutation_decay = t_decay, decay

    def sparsify_model(self, model):
        self.rng = random.generator()          # random growth: the library's seeded stream
        layers = start_sparse(self, model)
        self.budget = {name: int(layer.weight.n_units) for name, layer in layers}
        if self.soft_bound:
            for name, layer in layers:
                w = layer.weight
                room = w.unit_grid[0] * w.unit_grid[1]
                if w.n_groups > 1 or self.budget[name] + int(self.zeta * self.budget[name]) > room:
                    raise ValueError(f"soft_bound=True cannot grow layer {name!r} "
                                     f"({self.budget[name]} of {room} units, {w.n_groups} "
                                     f"group(s)) above its budget by zeta={self.zeta}: lower "
                                     f"zeta or the density")
        return layers

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        if self.mutation_decay == "elastic":     # replaces the base's DropFraction
            self.t_decay_steps = _fraction_or_steps(self.t_decay, total_steps)
            self.drop_fraction = ElasticRatio(self.zeta, self.t_decay_steps, self.t_end_steps)

    # ----- the rule ------------------------------------------------------------------------------
    def drop_scores(self, layer):
        """|w| + λ|g| per stored unit (a block: the L2 norm of its elements' scores)."""
        w = layer.weight
        score = np.abs(backend.to_numpy(w.values))
        if self.lam:
            grad = layer.values.grad
            if grad is None:
                raise RuntimeError("MEST's drop score |w| + λ|g| needs the gradient of the update "
                                   "step (layer.values.grad), but it is None: call after_step "
                                   "after backward and before zero_grad")
            score = score + self.lam * np.abs(backend.to_numpy(grad))
        return w.unit_scores(score)

    def grow(self, layer, counts, dropped):
        rows, cols, _ = random_empty_units(layer.weight, counts, self.rng, dropped=dropped,
                                           chunk_rows=self.chunk_rows)
        return rows, cols

    def update_layer(self, name, layer, fraction) -> int:
        """EM: drop and grow floor(ζ_t N). EM&S: drop down to N, then grow floor(ζ_t N)."""
        w, budget = layer.weight, self.budget[name]
        n_grow = int(fraction * budget)
        n_drop = w.n_units - budget if self.soft_bound else n_grow
        if n_drop == 0 and n_grow == 0:
            return 0
        drop = lowest_units(self.drop_scores(layer), n_drop)
        if w.n_groups > 1:      # EM only: every group gets back what it lost (N:M)
            counts = np.bincount(w.unit_groups()[drop], minlength=w.n_groups)
        else:
            counts = n_grow
        rows, cols = self.grow(layer, counts, drop)
        return self.apply(layer, drop, rows, cols)

    def update(self, step):
        super().update(step)
        self.updates[-1]["units"] = {name: int(layer.weight.n_units) for name, layer in self.layers}

    def after_step(self, step):
        super().after_step(step)
        if self.soft_bound and step + 1 == self.t_end_steps:
            self.prune_back(step)

    def prune_back(self, step):
        """The soft bound's last step: every layer back to its budget N, nothing grown."""
        replaced = {}
        for name, layer in self.layers:
            extra = layer.weight.n_units - self.budget[name]
            drop = lowest_units(self.drop_scores(layer), extra)
            empty = np.zeros(0, dtype=np.int64)
            replaced[name] = self.apply(layer, drop, empty, empty) if extra else 0
        self.updates.append({"step": int(step), "fraction": 0.0, "replaced": replaced,
                             "prune_back": True,
                             "units": {n: int(m.weight.n_units) for n, m in self.layers}})
        self._changed = True

    def describe(self) -> dict:
        out = dict(super().describe(), zeta=self.zeta, lam=self.lam, soft_bound=self.soft_bound,
                   mutation_decay=self.mutation_decay, t_decay=self.t_decay)
        out.pop("alpha")
        out.pop("decay")
        if hasattr(self, "budget"):
            out["budget_units"] = dict(self.budget)
            if self.mutation_decay == "elastic":
                out["t_decay_steps"] = self.t_decay_steps
        return out
