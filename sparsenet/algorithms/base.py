"""The few hooks a training loop calls, and the registry of methods by name.

A method is an object with five hooks; the loop in `sparsenet.train` calls them in this order:

    method.setup(model, optimizer, loader, total_steps)   # once: sparsify, prune at init, ...
    for each step t:
        loss.backward()
        method.after_backward(t)      # edit gradients (gradient annealing, regularization)
        optimizer.step()
        method.after_step(t)          # re-apply masks, update the topology
    method.after_epoch(epoch)

`topology_changed()` tells the loop to recount FLOPs; `extra_flops()` reports work beyond the
3-forward training step (RigL's dense gradients). `describe()` adds fields to the run record.
A method never looks at a layer's format: it talks to layers through the topology interface.
"""
from __future__ import annotations


class Method:
    name = "dense"

    def setup(self, model, optimizer, loader, total_steps: int):
        self.model, self.optimizer, self.loader, self.total_steps = model, optimizer, loader, total_steps

    def after_backward(self, step: int):
        pass

    def after_step(self, step: int):
        pass

    def after_epoch(self, epoch: int):
        pass

    def topology_changed(self) -> bool:
        """True once after each change of any layer's stored positions."""
        return False

    def extra_flops(self) -> float:
        """FLOPs spent since the last call beyond the ordinary training step."""
        return 0.0

    def describe(self) -> dict:
        return {}


class Dense(Method):
    """No sparsity: the baseline every method is compared against."""


_REGISTRY = {"dense": Dense}


def register(name: str):
    """Class decorator adding a method to the registry used by the command line."""
    def add(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return add


def available() -> list:
    return sorted(_REGISTRY)


def get_method(name: str, **options) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}: expected one of {', '.join(available())}")
    return _REGISTRY[name](**options)
