"""SET: Sparse Evolutionary Training.

Mocanu, Mocanu, Stone, Nguyen, Gibescu & Liotta, 2018, "Scalable training of artificial neural
networks with adaptive sparse connectivity inspired by network science", Nature Communications.

Rule (the paper's Algorithm 1, and `weightsEvolution` in the authors' reference code,
dcmocanu/sparse-evolutionary-artificial-neural-networks):

    init:    every layer an Erdős–Rényi random graph, density ε (n_in + n_out) / (n_in · n_out)
    update:  remove the fraction ζ of the negative weights closest to zero (the largest negative
             ones) and the fraction ζ of the positive weights closest to zero (the smallest
             positive ones): ζ of each sign, about ζ of the layer in all;
             add as many connections at uniformly random empty positions.

Defaults and sources:
- ζ = 0.3 and ε = 20: the paper's MLP experiments (Methods, "SET-MLP"; the reference code's
  defaults too). `epsilon=20` gives the paper's ER densities (distribution "er", layers whose
  density would pass 1 stay dense); by default the density comes from `sparsity` with ERK,
  the shared default of every method here, so methods compare at equal sparsity.
- Schedule: the paper rewires after every epoch but the last, with a constant ζ
  (`delta_t="epoch", decay="constant", t_end=1.0`). The default here is the DST schedule of
  dst.py (ΔT = 100 steps, cosine decay of ζ, T_end = 75 % of training), which is how RigL's
  authors ran SET as a baseline (Evci et al. 2020, Section 4): new zero weights then never arrive
  in the last, low-learning-rate epochs.
- Grown weights start at zero with zeroed optimizer state (the Keras reference code multiplies
  new connections in at zero; the sparse-data-structures reference draws N(0, 1)/10 instead).
  A position dropped and drawn again in the same update restarts too (`reinit_when_same`):
  SET's reference code writes a fresh value there.
- Drops and grows are in units: elements for csr, masked and nm (growth then stays in the
  N:M group that lost the weight), blocks for block, where the "sign" of a block is its norm
  (all positive: the blocks of smallest norm go).
"""
from __future__ import annotations

import numpy as np

from .. import backend, random
from ..sparse.distributions import er_density  # noqa: F401  (SET's density, re-exported)
from ..sparse.topology import random_empty_units
from .base import register
from .common import prunable_layers, weight_shape
from .dst import DynamicSparseMethod, start_sparse


@register("set")
class SET(DynamicSparseMethod):
    """Drop the ζ fraction closest to zero on each side of 0; regrow at random."""

    reinit_when_same = True
    option_aliases = {"alpha": "zeta"}          # RigL's name for the fraction rewired
    option_help = {
        "sparsity": "fraction of the weights removed overall (default 0.9, with ERK); or give "
                    "epsilon",
        "zeta": "ζ, the fraction of each sign's weights rewired per update (SET paper, MLP "
                "experiments, and its reference code: 0.3)",
        "epsilon": "ε of SET's Erdős–Rényi densities ε(n_in + n_out)/(n_in·n_out), instead of "
                   "sparsity (SET paper: 20)",
        "distribution": "uniform | er | erk; default erk, or er with epsilon",
    }

    def __init__(self, sparsity=None, zeta=0.3, epsilon=None, delta_t=100, t_end=0.75,
                 decay="cosine", format="csr", block_size=None, n=2, m=4, distribution=None,
                 dense_layers=(), chunk_rows=256,
                 sparse_init="auto"):
        if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0 < zeta < 1:
            raise ValueError(f"zeta (the fraction of weights rewired) must be a number in (0, 1), "
                             f"got {zeta!r}")
        if epsilon is not None:
            if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
                raise ValueError(f"epsilon (the Erdős–Rényi density parameter) must be a positive "
                                 f"number, got {epsilon!r}")
            if sparsity not in (None, 0, 0.0):
                raise ValueError(f"give sparsity or epsilon, not both (got sparsity={sparsity}, "
                                 f"epsilon={epsilon})")
            if distribution not in (None, "er"):
                raise ValueError(f"epsilon sets Erdős–Rényi densities: distribution must be 'er' "
                                 f"(or left out), got {distribution!r}")
        super().__init__(0.0 if epsilon is not None else (0.9 if sparsity is None else sparsity),
                         zeta, delta_t, t_end, decay, format, block_size, n, m,
                         distribution or ("er" if epsilon is not None else "erk"), dense_layers,
                         chunk_rows, sparse_init)
        self.zeta, self.epsilon = self.alpha, epsilon

    def sparsify_model(self, model):
        self.rng = random.generator()          # SET's random growth: the library's seeded stream
        layers = start_sparse(self, model)
        if self.epsilon is not None:
            stored = sum(m.weight.nnz for _, m in layers)
            total = sum(int(np.prod(weight_shape(m))) for _, m in prunable_layers(model))
            dense = total - sum(int(np.prod(weight_shape(m))) for _, m in layers)
            self.sparsity = 1 - (stored + dense) / total       # what ε gave, for the record
        return layers

    def layout(self, shapes):
        """With epsilon: each layer at density ε (n_in + n_out) / (n_in · n_out), density 1
        (the small output layer, usually) dense; else the shared rule (base.py)."""
        if self.epsilon is None:
            return super().layout(shapes)
        from ..nn.models import sparse_densities
        names = list(shapes)
        keep = {names[0] if d == "first" else names[-1] if d == "last" else d
                for d in self.dense_layers}
        return sparse_densities(shapes, epsilon=self.epsilon, dense_layers=sorted(keep))

    def drop_scores(self, layer):
        """A unit's rank by |w| among the units of its sign, over how many have that sign: the
        lowest `count` scores take the same fraction ζ from each side of zero."""
        w = layer.weight
        signed = w.unit_scores(backend.to_numpy(w.values))     # a block's score is its norm
        scores = np.empty(signed.size)
        for side in (signed < 0, signed >= 0):
            closeness = np.abs(signed[side])
            rank = np.empty(closeness.size)
            rank[np.argsort(closeness, kind="stable")] = np.arange(closeness.size)
            scores[side] = rank / max(closeness.size, 1)
        return scores

    def grow(self, layer, counts, dropped):
        rows, cols, _ = random_empty_units(layer.weight, counts, self.rng, dropped=dropped,
                                           chunk_rows=self.chunk_rows)
        return rows, cols

    def describe(self) -> dict:
        out = dict(super().describe(), zeta=self.zeta, epsilon=self.epsilon)
        out.pop("alpha")
        return out
