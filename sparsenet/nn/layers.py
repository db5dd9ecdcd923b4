"""Dense layers in PyTorch's shape: Linear, Conv2d, activations, Flatten, Dropout, Sequential."""
from __future__ import annotations

import numpy as np

from . import functional as F
from .init import get_init
from .module import Module, Parameter


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def conv_geometry(kernel_size, stride, padding):
    """((kh, kw), (sh, sw), (ph, pw)) of a convolution, checked: kernel and stride positive,
    padding >= 0 (a negative stride would flip the output, a zero kernel leave only the bias)."""
    return (F._pair(kernel_size, "kernel_size", 1), F._pair(stride, "stride", 1),
            F._pair(padding, "padding", 0))


class Linear(Module):
    """y = x @ W.T + b with W of shape (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, init="kaiming_uniform",
                 dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(get_init(init)(shape, dtype=dtype, rng=rng))
        self.bias = Parameter(np.zeros(self.out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="kaiming_uniform", dtype=np.float32, rng=None):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        (kh, kw), _, _ = conv_geometry(kernel_size, stride, padding)
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.weight = Parameter(get_init(init)(shape, dtype=dtype, rng=rng))
        self.bias = Parameter(np.zeros(self.out_channels, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Flatten(Module):
    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class MaxPool2d(Module):
    def __init__(self, kernel_size=2, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}"


class Sequential(Module):
    """Layers applied in order. A layer that can fuse the ReLU after it (`fuses_relu`: the
    sparse linear layer) is called with relu=True and the ReLU module is skipped: the same
    numbers, without the separate passes over the activations."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Modules, argument {i} is {type(layer).__name__}")
            setattr(self, str(i), layer)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        layers = list(self._modules.values())
        i = 0
        while i < len(layers):
            layer = layers[i]
            if getattr(layer, "fuses_relu", False) and i + 1 < len(layers) and \
                    type(layers[i + 1]) is ReLU:
                x = layer(x, relu=True)     # a sparse layer and its ReLU: one kernel pass
                i += 2
            else:
                x = layer(x)
                i += 1
        return x
