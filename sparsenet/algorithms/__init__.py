"""Pruning and dynamic-sparse-training methods, one file per paper (see base.py for the hooks)."""
from .base import Dense, Method, available, get_method, register

__all__ = ["Method", "Dense", "available", "get_method", "register"]
