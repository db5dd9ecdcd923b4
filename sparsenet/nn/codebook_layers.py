"""Inference layers over a Deep Compression weight: CSR of one-byte codes plus a codebook.

`CodebookLinear` and `CodebookConv2d` hold a `CodebookCSR` (sparsenet.sparse.codebook) and a
float bias, and compute Y = W @ X with the `codebook_spmm` kernel on the codes: the float
weights are never expanded. They are what `sparsenet.compressed_io.load_compressed` builds
from a compressed file. They do not train (no Parameter but the bias, no backward): a model is
fine-tuned in CSR before it is compressed.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend
from ..sparse.codebook import CodebookCSR
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .sparse_layers import _columns


class _CodebookLayer(Module):
    kind = ""

    def _setup(self, weight: CodebookCSR, bias):
        if not isinstance(weight, CodebookCSR):
            raise TypeError(f"weight must be a CodebookCSR, got {type(weight).__name__}")
        if weight.shape != self.weight_shape:
            raise ValueError(f"weight has shape {weight.shape}, the layer needs {self.weight_shape}")
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (self.weight_shape[0],) or bias.dtype != weight.dtype:
                raise ValueError(f"bias must have shape ({self.weight_shape[0]},) and dtype "
                                 f"{weight.dtype}, got {bias.shape} {bias.dtype}")
            bias = bias.copy()
        self.weight, self.bias = weight, bias

    def _own_state(self):
        w = self.weight
        state = OrderedDict(codes=w.codes, codebook=w.codebook, indptr=w.indptr, indices=w.indices)
        if self.bias is not None:
            state["bias"] = self.bias
        return state

    def _state_weight(self, state, prefix):
        """The weight and bias that `state` (this layer's entries) describes, validated."""
        own = dict(self._own_state(), **state)
        try:
            weight = CodebookCSR(own["indptr"], own["indices"], own["codes"], own["codebook"],
                                 self.weight_shape)
        except (TypeError, ValueError) as err:
            raise ValueError(f"state for the codebook layer {prefix!r} is invalid: {err}") from err
        bias = own.get("bias")
        if self.bias is not None and (bias.shape != self.bias.shape or bias.dtype != weight.dtype):
            raise ValueError(f"state_dict entry {prefix}bias has shape {bias.shape} and dtype "
                             f"{bias.dtype}; expected {self.bias.shape} {weight.dtype}")
        return weight, bias

    def _check_own_state(self, state, prefix):
        self._state_weight(state, prefix)

    def _load_own_state(self, state, prefix):
        weight, bias = self._state_weight(state, prefix)
        self.weight, self.bias = weight, None if bias is None else np.array(bias)

    def _product(self, X):
        Y = self.weight.spmm(X)                                   # (out, columns)
        if self.bias is not None:
            Y += self.bias[:, None]
        return Y

    def extra_repr(self):
        return (f"shape={self.weight_shape}, nnz={self.weight.nnz}, "
                f"shared values={self.weight.codebook.size}, bias={self.bias is not None}")


class CodebookLinear(_CodebookLayer):
    """y = x @ W.T + b with W a CodebookCSR of shape (out_features, in_features)."""

    kind = "linear"

    def __init__(self, weight: CodebookCSR, bias=None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight_shape = weight.shape
        self._setup(weight, bias)

    def forward(self, x):
        x = x.data if isinstance(x, Tensor) else x
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"codebook linear: input must be (batch, {self.in_features}), "
                             f"got {x.shape}")
        X = backend.array_module(x).ascontiguousarray(x.T)      # (in, batch)
        return Tensor(self._product(X).T)                        # (batch, out)


class CodebookConv2d(_CodebookLayer):
    """2-D convolution whose (out, C*kh*kw) weight is a CodebookCSR (im2col + codebook SpMM)."""

    kind = "conv2d"

    def __init__(self, weight: CodebookCSR, in_channels, kernel_size, stride=(1, 1),
                 padding=(0, 0), bias=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), weight.shape[0]
        self.kernel_size = F._pair(kernel_size, "kernel_size")
        self.stride, self.padding = F._pair(stride, "stride"), F._pair(padding, "padding")
        self.weight_shape = (self.out_channels,
                             self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        self._setup(weight, bias)

    def forward(self, x):
        x = x.data if isinstance(x, Tensor) else x
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"codebook conv2d: input must be (batch, {self.in_channels}, H, W), "
                             f"got {x.shape}")
        cols, (_, h_out, w_out) = _columns(x, self.kernel_size, self.stride, self.padding)
        Y = self._product(cols)                                  # (out, B*Ho*Wo)
        return Tensor(Y.reshape(-1, x.shape[0], h_out, w_out).transpose(1, 0, 2, 3))
