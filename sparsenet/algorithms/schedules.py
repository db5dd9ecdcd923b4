"""Small reusable schedules: target sparsity over time, and when (and how much) to update a topology.

- `CubicSparsity` (Zhu & Gupta 2017, "To prune, or not to prune", Eq. 1):
      s_t = s_f + (s_i - s_f) · (1 - (t - t0) / (n·Δt))³   for t0 <= t <= t0 + n·Δt,
  with the mask updated every Δt steps: prune fast while there are many redundant weights, slowly
  near the end.
- `ConstantSparsity`: the same target at every step.
- `DropFraction` (Evci et al. 2020, RigL, Eq. 1 of Section 3): the fraction of connections
  replaced at an update, decayed with a cosine  f(t) = α/2 · (1 + cos(π t / T_end)).
- `UpdateSchedule`: the topology is updated every ΔT steps while t < T_end (RigL: ΔT = 100,
  T_end = 75 % of training).
"""
from __future__ import annotations

import math


class ConstantSparsity:
    def __init__(self, sparsity: float):
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.sparsity = sparsity

    def __call__(self, step: int) -> float:
        return self.sparsity

    def is_update_step(self, step: int) -> bool:
        return step == 0


class CubicSparsity:
    """Zhu & Gupta's gradual schedule from `initial` to `final` over steps [t0, t0 + n·Δt]."""

    def __init__(self, final: float, begin_step: int, end_step: int, every: int = 100,
                 initial: float = 0.0):
        if not 0 <= initial <= final < 1:
            raise ValueError(f"need 0 <= initial <= final < 1, got initial={initial}, final={final}")
        if begin_step < 0 or end_step <= begin_step:
            raise ValueError(f"need 0 <= begin_step < end_step, got {begin_step}, {end_step}")
        if every <= 0:
            raise ValueError(f"every (Δt) must be positive, got {every}")
        self.final, self.initial = final, initial
        self.t0, self.end, self.every = begin_step, end_step, every

    def __call__(self, step: int) -> float:
        if step <= self.t0:
            return self.initial
        if step >= self.end:
            return self.final
        progress = (step - self.t0) / (self.end - self.t0)
        return self.final + (self.initial - self.final) * (1 - progress) ** 3

    def is_update_step(self, step: int) -> bool:
        """Masks change every Δt steps inside [t0, end], and once more at the end."""
        return self.t0 <= step <= self.end and ((step - self.t0) % self.every == 0 or step == self.end)


class DropFraction:
    """RigL's cosine decay of the drop fraction, from α at step 0 to 0 at T_end."""

    def __init__(self, alpha: float = 0.3, t_end: int = 1, decay: str = "cosine"):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha (drop fraction) must be in (0, 1), got {alpha}")
        if t_end <= 0:
            raise ValueError(f"t_end must be positive, got {t_end}")
        if decay not in ("cosine", "constant", "linear"):
            raise ValueError(f"decay must be cosine, constant or linear, got {decay!r}")
        self.alpha, self.t_end, self.decay = alpha, t_end, decay

    def __call__(self, step: int) -> float:
        if step >= self.t_end:
            return 0.0
        if self.decay == "constant":
            return self.alpha
        if self.decay == "linear":
            return self.alpha * (1 - step / self.t_end)
        return self.alpha / 2 * (1 + math.cos(math.pi * step / self.t_end))


class UpdateSchedule:
    """Update the topology every `delta_t` steps, for steps 0 < t < t_end."""

    def __init__(self, delta_t: int = 100, t_end: int = 1, total_steps: int | None = None):
        if delta_t <= 0:
            raise ValueError(f"delta_t must be positive, got {delta_t}")
        if t_end <= 0:
            raise ValueError(f"t_end must be positive, got {t_end}")
        if total_steps is not None and t_end > total_steps:
            raise ValueError(f"t_end ({t_end}) is beyond the end of training ({total_steps} steps)")
        self.delta_t, self.t_end = delta_t, t_end

    def __call__(self, step: int) -> bool:
        return 0 < step < self.t_end and step % self.delta_t == 0
