"""SRigL: structured RigL, with a constant fan-in and neuron ablation.

Lasby, Golubeva, Evci, Nica & Ioannou, 2023, "Dynamic Sparse Training with Structured
Sparsity", ICLR 2024 (reference code: calgaryml/condensed-sparsity, rigl_constant_fan.py).

Every output neuron (row) keeps the same number K of inputs, so a layer is a dense (out, K)
block of values plus their column indices: the regular "condensed" layout the paper runs fast
at batch 1. Every
ΔT steps while t < T_end (f_t, ΔT, T_end as in RigL), in every sparse layer with N weights:

    k        = floor(f_t · N)
    kept     = θ minus the k smallest |w| of the layer                   (RigL's drop)
    salient  = kept ∪ the k largest |∇L| anywhere in the layer           (drop and grow agree)
    ablate   = neurons with fewer than γ_sal · K salient weights         (never the last layer)
    K'       = floor(B / active neurons)                                 B: the layer's budget
    drop     = k smallest |w|, ablated neurons' weights first; all of an ablated neuron;
               and in each active neuron the smallest beyond K'
    grow     = in each active neuron, the K' − kept largest |∇L| among its empty inputs

So an active neuron always ends with exactly K' inputs and an ablated one with none; its budget
goes to the others (K' grows). Ablation is decided afresh at each update (a neuron whose
gradient becomes salient again comes back with K' zero weights), and never leaves fewer than
ceil(B / n_in) + 1 neurons (so K' never exceeds the inputs). The reference code's guard is
floor(B / n_in) + 1 (`min_neurons = n_ones_max // dense_fan_in` in `_get_neurons_to_ablate`,
the threshold capped at the saliency of the neuron ranked `min_neurons`), which also keeps
K' <= n_in; when B / n_in is not whole, this one keeps one neuron more in the rare update where
the guard binds.
Without ablation (γ_sal = 0, or no neuron below the threshold) this is RigL with the grow
settled per row: every row gets back what the drop took from it. nnz is exactly B until the
first ablation; afterwards it is (active neurons) · K', at most B and less by the remainder.

Constant fan-in and empty rows: the csr/masked option `constant_fan_in=True` makes the format
enforce the rule itself: every non-empty row holds the same number of weights, and a row of
none is an ablated neuron. Every sparse layer is stored with it, so an update that broke the
rule would be refused by the format; this method checks in addition that the empty rows are
exactly the ablated neurons (`check_fan_in`).

Defaults and sources: γ_sal = 0.3 (the value the paper recommends), measured against
the sparse fan-in K (reference `use_sparse_const_fan_in_for_ablation: True`); α = 0.3,
ΔT = 100, T_end = 75 %, cosine, ERK as for RigL; grown weights at zero, and a weight dropped
and regrown at once keeps its value (reference `_get_new_weights`). FLOPs are counted as RigL's.
Initialization: the reference enables a sparse initialization by default
(configs/config.yaml: `use_sparse_initialization: True`, `init_method_str: grad_flow_init`),
which draws each neuron's weights from N(0, σ) with σ = 2 / fan_in, the stored fan-in
(`grad_flow_init` in src/rigl_torch/utils/sparse_init.py; not √(2 / fan_in), the Kaiming value
of its `sparse_kaiming_*` variants). Here `sparse_init="auto"` (dst.py: the stored fan-in where
the dense one would shrink the signal below 1e-3, else the dense initialization), and when it
is on each neuron is drawn for its stored fan-in with the Kaiming scale, σ ∝ 1 / √(stored fan-in),
not the reference's 2 / fan_in.
"""
from __future__ import annotations

import numpy as np

from ..sparse.topology import dense_grad_topk
from .base import register
from .common import lowest_units, prunable_layers
from .dst import DynamicSparseMethod, check_positive_int, start_sparse


@register("srigl")
class SRigL(DynamicSparseMethod):
    """RigL with a constant fan-in per neuron and dynamic neuron ablation (csr or masked)."""

    needs_dense_gradient = True
    option_help = {
        "sparsity": "fraction of the weights removed overall (default 0.9, with ERK); or give "
                    "fan_in",
        "gamma_sal": "γ_sal: a neuron with fewer than γ_sal·K salient weights is ablated; 0 "
                     "turns ablation off (SRigL paper's recommendation: 0.3)",
        "fan_in": "K, the same number of inputs for every neuron of every sparse layer, "
                  "instead of sparsity",
        "format": "csr | masked (the two formats that hold a constant fan-in)",
    }

    def __init__(self, sparsity=None, gamma_sal=0.3, fan_in=None, alpha=0.3, delta_t=100,
                 t_end=0.75, decay="cosine", format="csr", block_size=None, n=2, m=4,
                 distribution="erk", dense_layers=(), chunk_rows=256,
                 sparse_init="auto"):
        if format not in ("csr", "masked"):
            raise ValueError(f"srigl keeps a constant fan-in per neuron, which formats 'csr' and "
                             f"'masked' hold (constant_fan_in); got format={format!r}")
        if isinstance(gamma_sal, bool) or not isinstance(gamma_sal, (int, float)) \
                or not 0 <= gamma_sal < 1:
            raise ValueError(f"gamma_sal must be a number in [0, 1) (0: no ablation), "
                             f"got {gamma_sal!r}")
        if fan_in is not None:
            check_positive_int(fan_in, "fan_in")
            if sparsity not in (None, 0, 0.0):
                raise ValueError(f"give sparsity or fan_in, not both (got sparsity={sparsity}, "
                                 f"fan_in={fan_in})")
        super().__init__(0.0 if fan_in is not None else (0.9 if sparsity is None else sparsity),
                         alpha, delta_t, t_end, decay, format, block_size, n, m, distribution,
                         dense_layers, chunk_rows, sparse_init)
        self.gamma_sal, self.fan_in = float(gamma_sal), fan_in

    # ----- the initial constant fan-in model -----------------------------------------------------
    def sparsify_model(self, model):
        layers = start_sparse(self, model)
        last = prunable_layers(model)[-1][0]
        self.ablates = {name: self.gamma_sal > 0 and name != last for name, _ in layers}
        self.budget = {name: layer.weight.nnz for name, layer in layers}
        self.fan_in0 = {name: layer.weight.nnz // layer.weight.shape[0] for name, layer in layers}
        self.ablated = {name: 0 for name, _ in layers}
        return layers

    def layout(self, shapes):
        """Layer densities from `fan_in` (K / n_in) or from sparsity and distribution; every
        row then gets the same number of random inputs (`sparse_format_options`)."""
        if self.fan_in is None:
            return super().layout(shapes)
        names = list(shapes)
        keep = {names[0] if d == "first" else names[-1] if d == "last" else d
                for d in self.dense_layers}
        densities = {}
        for name, shape in shapes.items():
            n_in = int(np.prod(shape[1:]))
            if name not in keep and self.fan_in > n_in:
                raise ValueError(f"fan_in={self.fan_in} is larger than the {n_in} inputs of "
                                 f"layer {name!r}")
            densities[name] = 1.0 if name in keep else self.fan_in / n_in
        return densities

    def sparse_format_options(self):
        return dict(super().sparse_format_options(), constant_fan_in=True)

    # ----- one update of one layer ---------------------------------------------------------------
    def update(self, step):
        super().update(step)
        self.updates[-1]["ablated"] = dict(self.ablated)       # neurons ablated, per layer

    def update_layer(self, name, layer, fraction):
        w = layer.weight
        n_rows = w.shape[0]
        rows, _ = w.unit_coords()
        k = int(fraction * w.n_units)
        if k == 0:
            return 0
        G, X = layer.growth_arrays
        magnitude = self.drop_scores(layer)
        active = self.active_neurons(name, w, ~lowest_units(magnitude, k), G, X, k)
        fan_in = self.budget[name] // int(active.sum())                      # K'
        # the k drops land on ablated neurons first (reference: their scores go below all)
        drop = lowest_units(np.where(active[rows], magnitude, -np.inf), k) | ~active[rows]
        kept = np.bincount(rows[~drop], minlength=n_rows)
        if (kept > fan_in).any():            # neurons came back: K' shrank; drop the smallest
            count = np.bincount(rows[drop], minlength=n_rows) + np.maximum(kept - fan_in, 0)
            drop = lowest_units(np.where(drop, -np.inf, magnitude), count, groups=rows)
            kept = np.bincount(rows[~drop], minlength=n_rows)
        grow = np.where(active, fan_in - kept, 0)
        grow_rows, grow_cols, _ = dense_grad_topk(w, G, X, grow, dropped=drop,   # per row
                                                  chunk_rows=self.chunk_rows)
        replaced = self.apply(layer, drop, grow_rows, grow_cols)
        self.check_fan_in(name, layer, active, fan_in)
        self.ablated[name] = int((~active).sum())
        return replaced

    def active_neurons(self, name, w, kept, G, X, k):
        """Neurons with at least γ_sal · K salient weights (all, where this layer never ablates).
        Salient: kept by the drop, or among the k largest |∇L| anywhere in the layer."""
        n_rows, n_cols = w.shape
        if not self.ablates[name]:
            return np.ones(n_rows, dtype=bool)
        grad_rows, grad_cols, _ = dense_grad_topk(w, G, X, k, dropped=np.ones(w.n_units, bool),
                                                  chunk_rows=self.chunk_rows)
        rows, cols = w.unit_coords()
        salient_keys = np.union1d(rows[kept] * n_cols + cols[kept], grad_rows * n_cols + grad_cols)
        salient = np.bincount(salient_keys // n_cols, minlength=n_rows)
        threshold = max(1, int(self.gamma_sal * self.fan_in0[name]))
        min_active = -(-self.budget[name] // n_cols)         # rows needed to hold the budget
        if min_active >= n_rows:
            return np.ones(n_rows, dtype=bool)
        # reference guard: keep at least min_active + 1 neurons, however few are salient
        threshold = min(threshold, int(np.sort(salient)[::-1][min_active]))
        return salient >= threshold

    def check_fan_in(self, name, layer, active, fan_in):
        """Active neurons hold exactly K' inputs, ablated ones none (the format checks only
        that the non-empty rows are equal)."""
        rows, _ = layer.weight.unit_coords()
        lengths = np.bincount(rows, minlength=active.size)
        if (lengths[active] != fan_in).any() or lengths[~active].any():
            raise RuntimeError(f"srigl broke constant fan-in in layer {name!r}: rows hold "
                               f"{sorted(set(lengths[active].tolist()))} inputs, expected {fan_in}")

    def describe(self) -> dict:
        out = dict(super().describe(), gamma_sal=self.gamma_sal, fan_in=self.fan_in)
        if hasattr(self, "ablated"):
            out.update(ablated_neurons=dict(self.ablated),
                       constant_fan_in={name: layer.weight.nnz // max(1, layer.weight.shape[0]
                                                                       - self.ablated[name])
                                        for name, layer in self.layers})
        return out
