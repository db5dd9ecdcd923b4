"""Neural-network building blocks in PyTorch's shape."""
from . import functional, init
from .layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Tanh
from .models import build_model
from .module import Module, Parameter
from .moe import MoE
from .sparse_layers import SparseConv2d, SparseLinear
from .transformer import GPT

__all__ = ["functional", "init", "Module", "Parameter", "Linear", "Conv2d", "ReLU", "Tanh",
           "Flatten", "Dropout", "MaxPool2d", "Sequential", "build_model", "SparseLinear",
           "SparseConv2d", "MoE", "GPT"]
