"""Optimizers and learning-rate schedules."""
from .optimizer import SGD, Adam, AdamW, Optimizer
from .schedules import ConstantLR, CosineLR, LRScheduler, StepLR, WarmupLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "ConstantLR", "StepLR",
           "CosineLR", "WarmupLR"]
