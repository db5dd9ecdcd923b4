"""Learning-rate schedules: call `scheduler.step()` once per optimizer step (or per epoch).

Each schedule is a function of the step count, `factor(t)`, that multiplies every parameter
group's initial learning rate.
"""
from __future__ import annotations

import math


class LRScheduler:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.t = 0
        self._apply()

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def _apply(self):
        f = self.factor(self.t)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def step(self):
        self.t += 1
        self._apply()

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Everything but the optimizer (PyTorch's convention): the step count and settings."""
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` of a schedule of the same kind (its settings replace
        these, as in PyTorch); sets the optimizer's rates for the restored step."""
        own = self.state_dict()
        if set(state) != set(own):
            raise ValueError(f"scheduler state has {sorted(state)}, a {type(self).__name__} "
                             f"has {sorted(own)}")
        if isinstance(state["t"], bool) or not isinstance(state["t"], int) or state["t"] < 0:
            raise ValueError(f"scheduler step t must be an integer >= 0, got {state['t']!r}")
        vars(self).update(state)
        self._apply()


class ConstantLR(LRScheduler):
    def factor(self, t):
        return 1.0


class StepLR(LRScheduler):
    """Multiply by `gamma` every `step_size` steps."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, t):
        return self.gamma ** (t // self.step_size)


class CosineLR(LRScheduler):
    """Linear warm-up over `warmup` steps, then cosine decay to `min_factor` at `total` steps."""

    def __init__(self, optimizer, total: int, warmup: int = 0, min_factor: float = 0.0):
        if total <= 0 or not 0 <= warmup < total:
            raise ValueError(f"need total > 0 and 0 <= warmup < total, got total={total}, "
                             f"warmup={warmup}")
        self.total, self.warmup, self.min_factor = total, warmup, min_factor
        super().__init__(optimizer)

    def factor(self, t):
        if t < self.warmup:
            return (t + 1) / self.warmup
        progress = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupLR(LRScheduler):
    """Linear warm-up over `warmup` steps, constant afterwards."""

    def __init__(self, optimizer, warmup: int):
        if warmup <= 0:
            raise ValueError(f"warmup must be positive, got {warmup}")
        self.warmup = warmup
        super().__init__(optimizer)

    def factor(self, t):
        return min(1.0, (t + 1) / self.warmup)
