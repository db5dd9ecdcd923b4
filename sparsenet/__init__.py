"""sparsenet: a from-scratch engine for learning and doing sparse neural-network training."""
__version__ = "0.1.0"

from . import nn, optim  # noqa: E402
from .io import load, save  # noqa: E402
from .random import manual_seed  # noqa: E402
from .sparse import sparsify  # noqa: E402
from .tensor import Function, Tensor, is_grad_enabled, no_grad, ones, tensor, zeros  # noqa: E402

__all__ = ["Tensor", "Function", "tensor", "zeros", "ones", "no_grad", "is_grad_enabled",
           "manual_seed", "save", "load", "sparsify", "nn", "optim", "__version__"]
