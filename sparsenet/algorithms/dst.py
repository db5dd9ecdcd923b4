"""Dynamic sparse training: what SET, RigL, SRigL (and MEST, AutoSparse) share.

The network is sparse from the first step to the last; only its connectivity moves. Every
method here follows one schedule and one update step (Evci et al. 2020, "Rigging the Lottery:
Making All Tickets Winners", Section 3 and Algorithm 1), and differs only in two choices:

    every ΔT steps, while t < T_end:                         (RigL: ΔT = 100, T_end = 75 %)
        f_t = α/2 · (1 + cos(π t / T_end))                   (cosine decay, RigL Eq. 1; α = 0.3)
        for each sparse layer with N stored units:
            k    = floor(f_t · N)                            (RigL's n_prune)
            drop = the k units with the lowest drop score    (hook `drop_scores`: |w| by default)
            grow = in each constraint group, as many units as the drop took from it, chosen among
                   the empty units by the method's rule     (hook `grow`: random, |gradient|, ...)
            one change_topology(layer, drop, grow): the optimizer state follows its weight,
            grown weights start at 0 with zeroed state.

The drop is chosen over the whole layer; the grow settles the format's structure: a group is
an N:M group (NM), a row (constant fan-in), or the whole layer (CSR, Block, Masked). Because
the drop may empty a group unevenly, growing back exactly what each group lost is what keeps
N:M and constant fan-in intact while α stays a continuous fraction (2:4 has only 2 units per
group: a per-group floor(α · 2) would be 0 for every α < 0.5).

Dropped units are candidates for growth in the same update, as in RigL's reference code
(google-research/rigl, rigl/sparse_optimizers_base.py, `_get_update_op`: growth scores are
lifted only for the units kept after the drop). A unit dropped and regrown at once keeps its weight and optimizer state there
(`reinit_when_same=False`, the reference default): here it is simply not dropped. A method may
set `reinit_when_same = True` (SET's reference code restarts such a weight).

The update runs in `after_step`, after the optimizer step: drops see the updated weights, and
`layer.values.grad` still holds that step's gradient of the stored weights. (RigL's reference
code instead skips the optimizer step on update iterations and updates the mask in its place;
SET's reference base class updates after the step, as here. See rigl.py.)

Subclass hooks (kept small for SET, RigL, SRigL, MEST, AutoSparse):
    drop_scores(layer) -> one score per stored unit, lowest dropped first
    grow(layer, counts, dropped) -> (rows, cols) unit coordinates of the units to grow
        counts: an int, or one count per constraint group; dropped: bool per stored unit
        (those count as empty)
    needs_dense_gradient = True   keep each layer's (G, X) on update steps (RigL growth)
    reinit_when_same = True       a unit dropped and regrown at once restarts from zero
    update_layer(name, layer, fraction) -> units replaced: the whole per-layer step, for
        methods that change more; it ends with `apply(layer, drop, rows, cols)`
    sparsify_model(model)         the initial sparse model (ERK random pattern by default)
Every update is logged in `self.updates` ({step, fraction, replaced per layer}).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import backend, random
from ..sparse import sparsify
from .base import SparseMethod, check_sparse_init
from .common import (change_topology, lowest_units, prunable_layers, rescale_to_sparse_fan_in,
                     weight_shape)
from .schedules import DropFraction, UpdateSchedule

DECAYS = ("cosine", "constant", "linear")


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_sparse_setting(method):
    """The sparsity a sparse-from-scratch method was given can be built in its format."""
    nm_sparsity = 1 - method.n / method.m
    if method.format == "nm" and method.sparsity != 0 and abs(method.sparsity - nm_sparsity) > 1e-9:
        raise ValueError(f"sparsity={method.sparsity} cannot be represented by format 'nm' with "
                         f"n={method.n}, m={method.m}: N:M keeps n/m of every group, so sparsity "
                         f"must be {nm_sparsity} (or left out)")
    if method.format != "nm" and method.sparsity == 0 and not getattr(method, "epsilon", None) \
            and getattr(method, "fan_in", None) is None:
        raise ValueError(f"{method.name} trains a sparse network: sparsity must be in (0, 1), "
                         "got 0")


def start_sparse(method, model):
    """Make `model` sparse for `method` unless it already is (a model built sparse, as
    `train_model` builds it for these methods: `method.build_options`): a random pattern at the
    densities of `method.layout`, the kept weights rescaled to each neuron's stored fan-in when
    `method.sparse_init`. Returns [(name, layer)] of the sparse layers, after checking the
    format could hold them."""
    check_sparse_setting(method)
    if not _sparse_layers(model):
        shapes = {name: weight_shape(layer) for name, layer in prunable_layers(model)}
        densities = method.layout(shapes)
        chosen = {name: d for name, d in densities.items() if d < 1}
        if chosen:
            sparsify(model, format=method.format, layers=list(chosen), density_per_layer=chosen,
                     from_dense=False,
                     rng=random.generator(), **method.sparse_format_options())
        if method.resolve_sparse_init(densities):
            rescale_to_sparse_fan_in(_sparse_layers(model))
    elif not hasattr(method, "sparse_init_used"):    # a model built sparse, not by build_options
        method.resolve_sparse_init({name: layer.weight.density for name, layer in
                                    _sparse_layers(model)})
    layers = list(_sparse_layers(model))
    if not layers:
        raise ValueError(f"sparsity={method.sparsity} with distribution={method.distribution!r} "
                         "left every layer dense: nothing to train sparsely")
    for name, layer in layers:
        if layer.weight.n_units == 0:
            raise ValueError(f"sparsity={method.sparsity} leaves layer {name!r} "
                             f"{layer.weight.shape} with no unit: the {layer.format!r} format "
                             "cannot represent so few weights there")
    return layers


def resolve_layer_names(model, names) -> set:
    """Layer names, with 'first' and 'last' standing for the first and last prunable layer."""
    layers = [name for name, _ in prunable_layers(model)]
    return {layers[0] if n == "first" else layers[-1] if n == "last" else n for n in names}


def _sparse_layers(model):
    try:
        return prunable_layers(model, sparse_only=True)
    except ValueError:                      # no sparse layer (yet)
        return []


class DynamicSparseMethod(SparseMethod):
    """The DST schedule and update step; subclasses give `drop_scores` and `grow`.

    alpha: initial fraction of units replaced (0 < α < 1); delta_t: steps between updates, or
    "epoch" (after the last step of every epoch); t_end: no update from this step on, a fraction
    of training (in (0, 1]) or a step count (a whole number > 1); decay: cosine | constant | linear;
    chunk_rows: rows per chunk of the growth scores (bounds memory); sparse_init: initialise
    each neuron at its stored fan-in (true), as the dense layer would (false), or "auto" (the
    default): the first where the second would starve the network of signal.

    Initialisation. Kaiming at the dense fan-in gives a neuron that keeps a fraction d of its
    inputs an output variance d times too small; through the layers the network's output
    shrinks by the product of sqrt(d) (`base.signal_scale`). Evci et al. 2022 ("Gradient Flow in
    Sparse Neural Networks and How Lottery Tickets Win", Section 3) rescale each neuron to its
    stored fan-in instead; SRigL's reference code does so by default. Measured here:
    - SET on mlp:784-20000-20000-20000-10 (signal scale 3.3e-4) stays at ln 10 loss and 10 %
      accuracy after an epoch of the subset with the dense fan-in, and reaches 78 % with the
      stored fan-in;
    - LeNet-300-100 (scale 0.13 at 90 %, 0.016 at 98 %), on a validation split at the default
      lr 0.05, weight decay 1e-4 (benchmarks/results/tuning-dst.md, 3 seeds): the dense fan-in
      was better at 90 % (static 89.60 against 89.22, RigL 90.01 against 89.59) and equal at
      98 % (static 87.20 against 87.06, RigL 87.97 against 87.98); with weight decay 5e-4 and lr
      0.1 the stored fan-in was best (RigL 90.31).
    So "auto" takes the stored fan-in where the signal scale is below 1e-3 (AUTO_SIGNAL_SCALE,
    between the networks that train either way and those that need it) and the dense
    initialisation elsewhere; the record says which was used (`sparse_init_used`).
    The model is built sparse from the start (`build_options`): no dense weight is allocated.
    """

    needs_dense_gradient = False
    reinit_when_same = False
    sparse_from_scratch = True
    option_help = {
        "alpha": "α, the fraction of stored units replaced at the first update, decayed to 0 "
                 "at T_end (RigL paper, Section 3: 0.3)",
        "delta_t": "ΔT, steps between topology updates, or \"epoch\" (RigL paper: 100)",
        "t_end": "T_end, no update from here on: a fraction of training in (0, 1] or a step "
                 "count (RigL paper: 0.75)",
        "decay": "how α decays: cosine | constant | linear (RigL paper, Eq. 1: cosine)",
        "chunk_rows": "rows per chunk of the dense growth scores: bounds their memory "
                      "(engine choice, no effect on the result)",
        "sparse_init": "initialise each neuron at its stored fan-in (true; Evci et al. 2022), as "
                       "the dense layer would (false; the papers), or \"auto\": the stored "
                       "fan-in where the dense one would shrink the signal below 1e-3 (engine "
                       "choice, measured: dst.py)",
    }

    def __init__(self, sparsity=0.9, alpha=0.3, delta_t=100, t_end=0.75, decay="cosine",
                 format="csr", block_size=None, n=2, m=4, distribution="erk", dense_layers=(),
                 chunk_rows=256, sparse_init="auto"):
        super().__init__(sparsity, format, block_size, n, m, distribution, dense_layers)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"alpha (the drop fraction) must be a number in (0, 1), got {alpha!r}")
        if delta_t != "epoch":
            check_positive_int(delta_t, 'delta_t (steps between updates, or "epoch")')
        # t_end <= 1 is a fraction of training (1 = all of it); above 1 a whole number of steps
        if isinstance(t_end, bool) or not isinstance(t_end, (int, float, np.integer, np.floating)) \
                or not (0 < t_end <= 1 or (t_end > 1 and float(t_end).is_integer())):
            raise ValueError(f"t_end must be a fraction of training in (0, 1] or a whole number of "
                             f"steps > 1, got {t_end!r}")
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        self.alpha, self.delta_t, self.t_end, self.decay = float(alpha), delta_t, t_end, decay
        self.chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
        self.sparse_init = check_sparse_init(sparse_init)

    # ----- hooks for subclasses --------------------------------------------------------------
    def drop_scores(self, layer) -> np.ndarray:
        """One score per stored unit; the lowest are dropped. Default: magnitude |w|."""
        w = layer.weight
        return w.unit_scores(np.abs(backend.to_numpy(w.values)))

    def grow(self, layer, counts, dropped):
        """(rows, cols) of the units to grow: `counts` (int or per group) among empty units."""
        raise NotImplementedError(f"{type(self).__name__} must define grow(layer, counts, dropped)")

    def sparsify_model(self, model):
        """The initial sparse model: a random pattern at this method's sparsity (ERK default)."""
        return start_sparse(self, model)

    # ----- the schedule ------------------------------------------------------------------------
    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        check_positive_int(total_steps, "total_steps")
        if self.t_end <= 1:
            self.t_end_steps = max(1, int(round(self.t_end * total_steps)))
        elif self.t_end > total_steps:
            raise ValueError(f"t_end={self.t_end} steps is beyond the end of training "
                             f"({total_steps} steps)")
        else:
            self.t_end_steps = int(self.t_end)
        if self.delta_t == "epoch":
            if loader is None:
                raise ValueError('delta_t="epoch" needs the data loader to know the epoch length')
            self.steps_per_epoch = len(loader)
        else:
            self.schedule = UpdateSchedule(self.delta_t, self.t_end_steps, total_steps)
        self.drop_fraction = DropFraction(self.alpha, self.t_end_steps, self.decay)
        self.layers = self.sparsify_model(model)
        self.updates, self._changed, self._extra = [], False, 0.0
        self._keep_gradients(self.is_update_step(0))
        self.planned_updates = self._planned_updates()
        if self.planned_updates == 0:
            every = ("the end of every epoch" if self.delta_t == "epoch"
                     else f"every delta_t={self.delta_t} steps")
            warnings.warn(f"{self.name}: {total_steps} training steps with updates at {every} "
                          f"before T_end (step {self.t_end_steps}) make no topology update: "
                          "the run is static sparse training under this method's name; "
                          "lower delta_t (--opt delta_t=N) or train longer", stacklevel=2)

    def _planned_updates(self) -> int:
        """How many update steps the schedule holds (0 < t < T_end, every ΔT)."""
        every = self.steps_per_epoch if self.delta_t == "epoch" else self.delta_t
        return max(0, (self.t_end_steps - 1) // every)

    def is_update_step(self, step) -> bool:
        if self.delta_t == "epoch":     # after the last step of an epoch, before T_end
            return (step + 1) % self.steps_per_epoch == 0 and step + 1 < self.t_end_steps
        return self.schedule(step)

    def _keep_gradients(self, keep):
        """Layers keep (G, X) of their backward only where growth will read them."""
        for _, layer in self.layers:
            layer.keep_for_growth = bool(keep and self.needs_dense_gradient)

    def after_step(self, step):
        if self.is_update_step(step):
            self.update(step)
        self._keep_gradients(self.is_update_step(step + 1))

    def update(self, step):
        """One topology update of every sparse layer, at drop fraction f(step)."""
        fraction = self.drop_fraction(step)
        replaced = {}
        for name, layer in self.layers:
            if self.needs_dense_gradient:
                self._count_dense_gradient(layer)
            replaced[name] = self.update_layer(name, layer, fraction)
            layer.growth_arrays = None                      # free (G, X) until the next update
        self.updates.append({"step": int(step), "fraction": fraction, "replaced": replaced})
        self._changed = True

    def update_layer(self, name, layer, fraction) -> int:
        """Drop the floor(f · N) lowest-scored units, grow as many per group; returns how many."""
        w = layer.weight
        count = int(fraction * w.n_units)
        if count == 0:
            return 0
        drop = lowest_units(self.drop_scores(layer), count)
        if w.n_groups > 1:      # give every group back what it lost (N:M, constant fan-in)
            counts = np.bincount(w.unit_groups()[drop], minlength=w.n_groups)
        else:
            counts = count
        rows, cols = self.grow(layer, counts, drop)
        return self.apply(layer, drop, rows, cols)

    def apply(self, layer, drop, rows, cols) -> int:
        """One change_topology call; a unit both dropped and regrown stays (see module doc)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        if not self.reinit_when_same:
            w = layer.weight
            unit_rows, unit_cols = w.unit_coords()
            width = w.unit_grid[1]
            stored, grown = unit_rows * width + unit_cols, rows * width + cols
            back = drop & np.isin(stored, grown)                 # dropped, then grown again
            fresh = ~np.isin(grown, stored[back])
            drop, rows, cols = drop & ~back, rows[fresh], cols[fresh]
        change_topology(layer, drop, rows, cols, self.optimizer)
        return int(drop.sum())

    # ----- checkpoints: besides the plain attributes, the growth flags on the layers -----------
    def state_dict(self) -> dict:
        state = super().state_dict()
        if hasattr(self, "layers"):
            state["keep_for_growth"] = [layer.keep_for_growth for _, layer in self.layers]
        return state

    def load_state_dict(self, state):
        state = dict(state)
        keep = state.pop("keep_for_growth", None)
        super().load_state_dict(state)
        if keep is not None:
            if len(keep) != len(self.layers):
                raise ValueError(f"the state has growth flags for {len(keep)} layers, the method "
                                 f"{len(self.layers)}")
            for (_, layer), flag in zip(self.layers, keep):
                layer.keep_for_growth = bool(flag)

    # ----- what the loop reads -------------------------------------------------------------------
    def _count_dense_gradient(self, layer):
        """RigL paper, Appendix H: an update step computes the dense weight gradient, f_D instead
        of the sparse f_S that the loop already counts: 2 · (dense - stored) · columns of G."""
        if layer.growth_arrays is None:
            raise RuntimeError("no gradient was kept for the update step: was after_step called "
                               "for every step?")
        rows, cols = layer.weight.shape
        self._extra += 2.0 * (rows * cols - layer.weight.nnz) * layer.growth_arrays[0].shape[1]

    def describe(self) -> dict:
        out = dict(super().describe(), alpha=self.alpha, delta_t=self.delta_t, t_end=self.t_end,
                   decay=self.decay, reinit_when_same=self.reinit_when_same,
                   sparse_init=self.sparse_init,
                   sparse_init_used=getattr(self, "sparse_init_used", None),
                   signal_scale=getattr(self, "signal_scale", None))
        if hasattr(self, "updates"):
            out.update(t_end_steps=self.t_end_steps, n_updates=len(self.updates),
                       planned_updates=self.planned_updates, updates=self.updates)
        return out
