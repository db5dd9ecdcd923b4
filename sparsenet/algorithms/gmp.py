"""Gradual magnitude pruning: the sparsity rises along a cubic schedule during training.

Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for model
compression" (arXiv:1710.01878), Section 3. Every layer starts dense; every Δt steps its
lowest-|w| weights are removed until it reaches the sparsity of the moment

    s_t = s_f + (s_i - s_f) · (1 - (t - t0) / (n·Δt))³      for t in {t0, t0 + Δt, ..., t0 + n·Δt}

(`CubicSparsity` in schedules.py): many weights go early, while there are plenty of redundant
ones, and few near the end, so the network has time to recover. After t0 + n·Δt the masks stay
fixed and training goes on. Per step (hooks of the training loop):

    setup:       every pruned layer -> a sparse layer storing all its weights (density 1.0)
    after_step:  if t is an update step:  for each layer l:
                     k_l = round((1 - s_t^l) · units_l);  drop the units_l' - k_l lowest |w|
                 (one sparsity per layer: uniform, or the final densities of `distribution`;
                  a block's score is its L2 norm; the optimizer's momentum for a dropped
                  weight is discarded with it, so it cannot come back)

Defaults and where they come from:
- delta_t = 100 steps: Zhu & Gupta find Δt between 100 and 1000 steps has a negligible effect
  on the final accuracy; 100 gives the smoothest schedule on our short runs.
- begin = 0.1, end = 0.6 (fractions of all training steps; t0 = begin·T, t0 + n·Δt = end·T):
  Zhu & Gupta start pruning after a few epochs of dense training and warn that pruning at a
  very small learning rate leaves no room to recover; the RigL authors' MNIST pruning
  baseline (google-research/rigl, mnist_train_eval.py) prunes from step 2,000 to 30,000 of
  120,000. Stopping at 60 % leaves 40 % of a cosine schedule to recover.
- initial_sparsity s_i = 0 (the paper: "usually 0"); distribution = "uniform" (per-layer
  targets as in the paper).
- formats: csr (default), masked and block can hold a dense-equivalent start; N:M cannot (its
  density is fixed at n/m), so gmp refuses it: use `magnitude --pattern nm:2:4` instead.
"""
from __future__ import annotations

from .base import SparseMethod, register
from .common import layer_densities, prunable_layers
from .magnitude import dense_equivalent, keep_largest, probe_format, total_units
from .schedules import CubicSparsity


@register("gmp")
class GradualMagnitudePruning(SparseMethod):
    """Prune the lowest |w| every Δt steps along Zhu & Gupta's cubic sparsity schedule."""

    option_help = {
        "initial_sparsity": "s_i, the sparsity at the first pruning step (Zhu & Gupta: "
                            "\"usually 0\")",
        "begin": "t0, the first pruning step as a fraction of training (0.1: a few dense "
                 "epochs first, as Zhu & Gupta advise)",
        "end": "the last pruning step as a fraction of training (0.6: time to recover)",
        "delta_t": "Δt, steps between pruning steps (Zhu & Gupta: 100 to 1000 barely differ)",
        "distribution": "uniform (the paper's per-layer targets) | er | erk",
    }

    def __init__(self, sparsity=0.9, initial_sparsity=0.0, begin=0.1, end=0.6, delta_t=100,
                 format="csr", distribution="uniform", **options):
        super().__init__(sparsity, format=format, distribution=distribution, **options)
        if self.format == "nm":
            raise ValueError("gmp needs a format that can start dense (csr, masked or block); "
                             "the N:M format fixes the density at n/m: use "
                             "`--method magnitude --pattern nm:N:M` for one-shot N:M pruning")
        if not (isinstance(initial_sparsity, (int, float)) and 0 <= initial_sparsity <= sparsity):
            raise ValueError(f"initial_sparsity must be in [0, sparsity={sparsity}], got "
                             f"{initial_sparsity!r}")
        if not (isinstance(begin, (int, float)) and isinstance(end, (int, float))
                and 0 <= begin < end <= 1):
            raise ValueError(f"begin and end are fractions of training with 0 <= begin < end <= 1,"
                             f" got begin={begin!r}, end={end!r}")
        if isinstance(delta_t, bool) or not isinstance(delta_t, int) or delta_t <= 0:
            raise ValueError(f"delta_t must be a positive integer (steps), got {delta_t!r}")
        self.s_i, self.begin, self.end, self.delta_t = float(initial_sparsity), begin, end, delta_t
        self._changed = False

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        density = layer_densities(model, self.sparsity, self.distribution, self.dense_layers)
        s_f = {name: 1.0 - d for name, d in density.items() if d < 1.0}     # final, per layer
        probe_format(model, list(s_f), self.format, **self.format_options())
        dense_equivalent(model, list(s_f), self.format, **self.format_options())
        # t0 and the last update t0 + n·Δt, in steps; the loop numbers steps 0 .. T - 1
        self.t0 = int(round(self.begin * total_steps))
        self.t_end = min(int(round(self.end * total_steps)), total_steps - 1)
        if self.t_end <= self.t0:
            raise ValueError(f"gmp needs at least one step between begin and end: {total_steps} "
                             f"training steps give t0={self.t0}, end={self.t_end}")
        self.schedules = {name: CubicSparsity(s, self.t0, self.t_end, self.delta_t,
                                              initial=min(self.s_i, s))
                          for name, s in s_f.items()}
        self.layers = {name: layer for name, layer in prunable_layers(model) if name in s_f}

    def after_step(self, step):
        for name, layer in self.layers.items():
            schedule = self.schedules[name]
            if schedule.is_update_step(step):
                keep = int(round((1.0 - schedule(step)) * total_units(layer.weight)))
                self._changed |= keep_largest(layer, keep, optimizer=self.optimizer)

    def describe(self) -> dict:
        details = {**super().describe(), "initial_sparsity": self.s_i, "delta_t": self.delta_t,
                   "begin": self.begin, "end": self.end}
        if hasattr(self, "t0"):
            details.update(t0=self.t0, t_end=self.t_end,
                           final_sparsity={n: s.final for n, s in self.schedules.items()})
        return details
