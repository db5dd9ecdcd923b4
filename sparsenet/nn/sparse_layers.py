"""Sparse twins of Linear and Conv2d: the weight is a sparse object, only its values train.

`layer.values` (a Parameter, 1-D) is the one trainable tensor of the weight; `layer.weight` is
the sparse object (CSR, Block, NM or Masked) that says where those values sit. Forward is
Y = W @ X (SpMM) on feature-major activations X (in, batch); backward is W.T @ G for the input
and SDDMM (G @ X.T only at the stored positions) for the values: the dense weight is never built.

The topology changes only through `set_topology(new_weight, new_from_old, optimizer)`, which
keeps the same Parameter object (the optimizer's reference stays valid) and carries the
optimizer's state across, so a dropped weight cannot come back through momentum.

`model.to("cuda")` moves values and bias (as Parameters) and uploads the index arrays and the
transposed index the kernels read (`_moved_to`); a new topology or a loaded state stays on the
layer's device.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend, random
from ..sparse import FORMATS, Masked, SparseMatrix
from ..sparse.base import kernels_for
from ..sparse.convert import empty_weight, format_options, state_arrays, weight_from_arrays
from ..sparse.topology import dense_grad_topk, random_pattern
from ..tensor import Function
from . import functional as F
from .init import get_init, sparse_values
from .layers import _positive_int, conv_geometry
from .module import Module, Parameter


# ----- autograd Functions ------------------------------------------------------------------
class SparseLinearFunction(Function):
    """y = x @ W.T + b with W sparse; with relu=True, y = relu(x @ W.T + b) as one operation.

    The fused form (what `Sequential` uses for a sparse layer followed by a ReLU) adds the bias
    and applies the ReLU inside the product kernel, and its backward takes the gradient through
    the ReLU and the bias gradient in one pass (`relu_backward`), where the separate operations
    would make five passes over the activations. The results are the same numbers.
    """

    def forward(self, x, values, bias=None, weight=None, remember=None, relu=False):
        if x.ndim != 2 or x.shape[1] != weight.shape[1]:
            raise ValueError(f"sparse linear: input must be (batch, {weight.shape[1]}), "
                             f"got {x.shape}")
        if x.dtype != values.dtype:
            raise TypeError(f"sparse linear: input dtype {x.dtype} differs from weight dtype "
                            f"{values.dtype}")
        X = backend.array_module(x).ascontiguousarray(x.T)     # (in, batch): a no-op when x came
        Y = weight.spmm(X, values, bias=bias, relu=relu)       # (out, batch)  from a sparse layer
        self.weight, self.values, self.X, self.remember = weight, values, X, remember
        self.has_bias, self.Y = bias is not None, (Y if relu else None)
        return Y.T                              # (batch, out): a view, still feature-major in memory

    def backward(self, g):
        xp = backend.array_module(g)
        G = xp.ascontiguousarray(g.T)                          # (out, batch)
        gb = None
        if self.Y is not None:                  # through the ReLU; the bias gradient on the way
            G_in, G = G, xp.empty_like(G)
            gb = xp.empty(G.shape[0], dtype=G.dtype)
            kernels_for(G).relu_backward(G_in, self.Y, G, gb)
        elif self.has_bias:
            gb = G.sum(axis=1)
        if self.needs_grad[0]:                  # both products in one pass where the format can
            gx, gv = self.weight.spmm_t_sddmm(G, self.X, self.values)
            gx = gx.T                                                       # (batch, in)
        else:                                   # the first layer: no input gradient
            gx, gv = None, self.weight.sddmm(G, self.X)                     # like values
        if self.remember is not None:
            self.remember(G, self.X)
        return (gx, gv, gb) if self.has_bias else (gx, gv)


def _columns(x, kernel, stride, padding):
    """Feature-major im2col: (C*kh*kw, B*Ho*Wo) patch columns of x (B, C, H, W), and geometry."""
    kh, kw = kernel
    padded = F._pad(x, padding)
    if padded.shape[2] < kh or padded.shape[3] < kw:
        raise ValueError(f"sparse conv2d: kernel {kh}x{kw} is larger than the padded input "
                         f"{padded.shape[2]}x{padded.shape[3]}")
    win = F._windows(padded, kh, kw, stride)                   # (B, C, Ho, Wo, kh, kw), a view
    b, c, h_out, w_out = win.shape[:4]
    cols = backend.array_module(x).ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3))
    return cols.reshape(c * kh * kw, b * h_out * w_out), (padded.shape, h_out, w_out)


class SparseConv2dFunction(Function):
    """2-D convolution with a sparse (out, C*kh*kw) weight, through im2col and SpMM."""

    def forward(self, x, values, bias=None, weight=None, kernel=(1, 1), stride=(1, 1),
                padding=(0, 0), remember=None):
        channels = weight.shape[1] // (kernel[0] * kernel[1])
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"sparse conv2d: input must be (batch, {channels}, H, W), got {x.shape}")
        if x.dtype != values.dtype:
            raise TypeError(f"sparse conv2d: input dtype {x.dtype} differs from weight dtype "
                            f"{values.dtype}")
        cols, (padded_shape, h_out, w_out) = _columns(x, kernel, stride, padding)
        Y = weight.spmm(cols, values)                                      # (out, B*Ho*Wo)
        if bias is not None:
            Y += bias[:, None]
        self.weight, self.values, self.cols, self.remember = weight, values, cols, remember
        self.has_bias = bias is not None
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.geometry = (x.shape, padded_shape, h_out, w_out)
        return Y.reshape(-1, x.shape[0], h_out, w_out).transpose(1, 0, 2, 3)   # (B, out, Ho, Wo)

    def backward(self, g):
        xp = backend.array_module(g)
        x_shape, padded_shape, h_out, w_out = self.geometry
        G = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(g.shape[1], -1)  # (out, B*Ho*Wo)
        gv = self.weight.sddmm(G, self.cols)
        gx = None
        if self.parents[0].requires_grad:
            (kh, kw), (b, c) = self.kernel, x_shape[:2]
            gcols = self.weight.spmm_t(G, self.values)                     # (C*kh*kw, B*Ho*Wo)
            gwin = gcols.reshape(c, kh, kw, b, h_out, w_out).transpose(3, 0, 4, 5, 1, 2)
            gx = F._scatter_windows(gwin, padded_shape, self.stride, self.padding)
        if self.remember is not None:
            self.remember(G, self.cols)
        return (gx, gv, G.sum(axis=1)) if self.has_bias else (gx, gv)


# ----- building a weight -------------------------------------------------------------------
def resolve_density(format, sparsity=None, density=None, n=2, m=4) -> float:
    """The density asked for: 1 - sparsity, or density, or 0.9 sparsity; n/m for NM."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    if sparsity is not None and density is not None:
        raise ValueError("give sparsity or density, not both")
    if sparsity is not None:
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
        density = 1.0 - sparsity
    if format == "nm":
        if density is not None and abs(density - n / m) > 1e-9:
            raise ValueError(f"format 'nm' with n={n}, m={m} has density {n / m}; "
                             f"the density asked for is {density}")
        return n / m
    return 0.1 if density is None else density


def random_weight(shape, format="csr", sparsity=None, density=None, block_size=16, n=2, m=4,
                  constant_fan_in=False, init="kaiming_uniform", dtype=np.float32, rng=None,
                  init_fan_in="stored"):
    """A random pattern (see `resolve_density`) with values drawn for each neuron's stored
    fan-in (init_fan_in="stored", `init.sparse_values`), so activations keep the scale a dense
    layer of that fan-in gives them; "dense" draws them as the dense layer would. O(nnz)."""
    density = resolve_density(format, sparsity, density, n, m)
    get_init(init)                                   # a clear error for an unknown name
    rng = rng if rng is not None else random.generator()
    weight = random_pattern(format, shape, density, rng, dtype, block_size, n, m, constant_fan_in)
    rows, cols, _ = weight.active()
    drawn = sparse_values(init, rows, cols, shape, init_fan_in, dtype, rng)
    if isinstance(weight, Masked):            # one number per True entry, in row-major order
        dense = np.zeros(weight.values.size, dtype=dtype)
        dense[weight.mask().ravel()] = drawn
        drawn = dense
    else:                                     # active() lists entries in the values' order
        drawn = np.ascontiguousarray(drawn)
    return weight.with_values(drawn)


# ----- the layers --------------------------------------------------------------------------
class _SparseLayer(Module):
    """What SparseLinear and SparseConv2d share: values, topology changes, state, growth."""

    kind = ""

    def _setup(self, shape, weight, bias, keep_for_growth, **random_options):
        """Take `weight`, or draw a random one (`random_weight` options); add values and bias."""
        self.weight_shape = shape
        if weight is None:
            weight = random_weight(shape, **random_options)
        elif random_options["sparsity"] is not None or random_options["density"] is not None:
            raise ValueError("give weight or sparsity/density, not both")
        if not isinstance(weight, SparseMatrix):
            raise TypeError(f"weight must be a sparse object (CSR, Block, NM, Masked), got "
                            f"{type(weight).__name__}")
        if weight.shape != self.weight_shape:
            raise ValueError(f"weight has shape {weight.shape}, the layer needs {self.weight_shape}")
        self._weight = weight
        self.values = Parameter(weight.values)         # shares memory with weight.values
        self.bias = Parameter(np.zeros(self.weight_shape[0], dtype=weight.dtype)) if bias else None
        self.keep_for_growth = bool(keep_for_growth)
        self.growth_arrays = None      # (G (out, k), X (in, k)) of the last backward, when kept

    @property
    def weight(self) -> SparseMatrix:
        """The sparse weight, holding the live values (`self.values.data`)."""
        if self._weight.values is not self.values.data:   # values.data was replaced (a load, an
            self._weight = self._weight.with_values(self.values.data)   # algorithm): follow it
        return self._weight

    @property
    def format(self) -> str:
        return self._weight.format

    def _remember(self, G, X):
        self.growth_arrays = (G, X)

    def _forward_options(self):
        return dict(weight=self.weight, remember=self._remember if self.keep_for_growth else None)

    def _inputs(self, x):
        return (x, self.values) if self.bias is None else (x, self.values, self.bias)

    # ----- topology ----------------------------------------------------------------------
    def set_topology(self, new_weight, new_from_old, optimizer=None):
        """Swap in `new_weight` (from `weight.update`); the optimizer's state follows its weights."""
        old = self._weight
        if type(new_weight) is not type(old) or new_weight.shape != old.shape or \
                format_options(new_weight) != format_options(old):
            raise ValueError(f"new_weight must be a {type(old).__name__} of shape {old.shape} "
                             f"with {format_options(old)}, got {new_weight!r}")
        if new_weight.dtype != old.dtype:
            raise TypeError(f"new_weight has dtype {new_weight.dtype}, the layer {old.dtype}")
        new_from_old = np.asarray(new_from_old)
        if new_from_old.dtype.kind not in "iu" or new_from_old.shape != new_weight.values.shape:
            raise ValueError(f"new_from_old must be an integer array of shape "
                             f"{new_weight.values.shape}, got {new_from_old.dtype} {new_from_old.shape}")
        if new_from_old.size and (new_from_old.min() < -1 or new_from_old.max() >= old.values.size):
            raise ValueError(f"new_from_old must lie in [-1, {old.values.size})")
        if new_weight.device != self.values.device:
            new_weight = new_weight.to(self.values.device)       # on the layer's device
        self._weight = new_weight
        self.values.data = new_weight.values
        self.values.grad = None                              # a gradient of the old shape
        self.growth_arrays = None
        if optimizer is not None:
            optimizer.remap(self.values, new_from_old)

    def dense_grad_topk(self, grad_out=None, x=None, k=None, chunk_rows=256, dropped=None):
        """The k empty units with the largest |dL/dW| (RigL growth), in bounded memory.

        grad_out and x are the layer's output gradient and input, as the layer sees them; left
        out, the ones kept by the last backward (`keep_for_growth=True`) are used. k: an int,
        or one count per constraint group. Units in `dropped` count as empty.
        Returns (rows, cols, scores) in unit coordinates.
        """
        if k is None:
            raise TypeError("dense_grad_topk needs k: how many units to grow (or one count per group)")
        if grad_out is None and x is None:
            if self.growth_arrays is None:
                raise RuntimeError("no gradient kept: pass grad_out and x, or set "
                                   "keep_for_growth=True and run a backward pass first")
            G, X = self.growth_arrays
        elif grad_out is None or x is None:
            raise ValueError("pass both grad_out and x, or neither")
        else:
            xp = backend.array_module(x)
            G, X = self._feature_major(xp.asarray(grad_out), xp.asarray(x))
        return dense_grad_topk(self.weight, G, X, k, dropped, chunk_rows)

    # ----- device and state ----------------------------------------------------------------
    def _moved_to(self, device):
        """After Module.to moved values and bias: the weight follows them (on a GPU its index
        arrays and transposed index are uploaded now, not at the first step)."""
        self._weight = self.weight.to(device)
        self.growth_arrays = None

    def _own_state(self):
        state = OrderedDict(values=self.values.data)
        if self.bias is not None:
            state["bias"] = self.bias.data
        state.update(state_arrays(self._weight))
        return state

    def _new_weight(self, state, copy):
        arrays = {name: backend.to_numpy(a)             # entries not given keep their arrays
                  for name, a in dict(self._own_state(), **state).items()}
        try:
            weight = weight_from_arrays(self.format, arrays, self.weight_shape,
                                        format_options(self._weight), copy=copy)
        except (TypeError, ValueError) as err:
            raise ValueError(f"state for a {self.format} layer of shape {self.weight_shape} "
                             f"is invalid: {err}") from err
        if weight.dtype != self._weight.dtype:
            raise ValueError(f"values have dtype {weight.dtype}, the layer {self._weight.dtype}")
        return weight, arrays

    def _check_own_state(self, state, prefix):
        _, arrays = self._new_weight(state, copy=False)    # a different nnz is fine
        if self.bias is not None:
            bias = arrays["bias"]
            if bias.shape != self.bias.shape or bias.dtype != self.bias.dtype:
                raise ValueError(f"state_dict entry {prefix}bias has shape {bias.shape} and "
                                 f"dtype {bias.dtype}; expected {self.bias.shape} {self.bias.dtype}")

    def _load_own_state(self, state, prefix):
        weight, arrays = self._new_weight(state, copy=True)
        self._weight = weight.to(self.values.device)           # stays on the layer's device
        self.values.data, self.values.grad = self._weight.values, None
        if self.bias is not None:
            self.bias.data = backend.to_device(np.array(arrays["bias"]), self.bias.device)
        self.growth_arrays = None

    def sparse_config(self) -> dict:
        """JSON-able description, enough for `apply_sparse_layout` to rebuild the layer."""
        return dict(kind=self.kind, format=self.format, **self._shape_config(),
                    bias=self.bias is not None, dtype=str(self._weight.dtype),
                    **format_options(self._weight))

    @classmethod
    def from_config(cls, config: dict):
        """A layer of this configuration with a placeholder topology, as small as its format
        allows (no stored weight for CSR and Block), which a load then replaces: rebuilding a
        saved model never allocates more than the file holds."""
        options = {k: config[k] for k in ("block_size", "n", "m", "constant_fan_in") if k in config}
        shape_args = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
                      if k in cls._shape_keys}
        weight = empty_weight(config["format"], cls._weight_shape(shape_args),
                              np.dtype(config["dtype"]), options)
        return cls(**shape_args, format=config["format"], bias=config["bias"],
                   dtype=np.dtype(config["dtype"]), weight=weight, **options)

    def extra_repr(self):
        shape = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}"
                          for k, v in self._shape_config().items())
        return (f"{shape}, format={self.format}, density={self._weight.density:.4f}, "
                f"nnz={self._weight.nnz}, bias={self.bias is not None}")


class SparseLinear(_SparseLayer):
    """y = x @ W.T + b with a sparse W of shape (out_features, in_features)."""

    kind = "linear"
    _shape_keys = ("in_features", "out_features")
    fuses_relu = True            # Sequential runs it and a following ReLU as one operation

    def __init__(self, in_features, out_features, sparsity=None, density=None, format="csr",
                 block_size=16, n=2, m=4, bias=True, init="kaiming_uniform", dtype=np.float32,
                 rng=None, weight=None, constant_fan_in=False, keep_for_growth=False,
                 init_fan_in="stored"):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self._setup((self.out_features, self.in_features), weight, bias, keep_for_growth,
                    format=format, sparsity=sparsity, density=density, block_size=block_size,
                    n=n, m=m, constant_fan_in=constant_fan_in, init=init, dtype=dtype, rng=rng,
                    init_fan_in=init_fan_in)

    def forward(self, x, relu=False):
        """y = x @ W.T + b, or relu(x @ W.T + b) in one operation when relu=True."""
        return SparseLinearFunction.apply(*self._inputs(x), relu=relu, **self._forward_options())

    def _feature_major(self, grad_out, x):
        xp = backend.array_module(x)
        return xp.ascontiguousarray(grad_out.T), xp.ascontiguousarray(x.T)

    @staticmethod
    def _weight_shape(args):
        return (args["out_features"], args["in_features"])

    def _shape_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features)


class SparseConv2d(_SparseLayer):
    """2-D convolution whose (out, C*kh*kw) weight is sparse."""

    kind = "conv2d"
    _shape_keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, sparsity=None,
                 density=None, format="csr", block_size=16, n=2, m=4, bias=True,
                 init="kaiming_uniform", dtype=np.float32, rng=None, weight=None,
                 constant_fan_in=False, keep_for_growth=False, init_fan_in="stored"):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size, self.stride, self.padding = conv_geometry(kernel_size, stride, padding)
        shape = (self.out_channels, self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        self._setup(shape, weight, bias, keep_for_growth,
                    format=format, sparsity=sparsity, density=density, block_size=block_size,
                    n=n, m=m, constant_fan_in=constant_fan_in, init=init, dtype=dtype, rng=rng,
                    init_fan_in=init_fan_in)

    def forward(self, x):
        return SparseConv2dFunction.apply(*self._inputs(x), kernel=self.kernel_size,
                                          stride=self.stride, padding=self.padding,
                                          **self._forward_options())

    @staticmethod
    def _weight_shape(args):
        kh, kw = F._pair(args["kernel_size"], "kernel_size")
        return (args["out_channels"], args["in_channels"] * kh * kw)

    def _feature_major(self, grad_out, x):
        cols, _ = _columns(x, self.kernel_size, self.stride, self.padding)   # (C*kh*kw, B*Ho*Wo)
        G = backend.array_module(x).ascontiguousarray(grad_out.transpose(1, 0, 2, 3))
        return G.reshape(grad_out.shape[1], -1), cols                        # (out, B*Ho*Wo)

    def _shape_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding))


def sparse_like(layer, weight):
    """The sparse twin of a dense Linear or Conv2d `layer`: same geometry, `weight` (a sparse
    matrix of shape (out, in·kh·kw)) for its weights, and a copy of its bias."""
    if hasattr(layer, "kernel_size"):
        sparse = SparseConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                              layer.stride, layer.padding, weight=weight,
                              bias=layer.bias is not None)
    else:
        sparse = SparseLinear(layer.in_features, layer.out_features, weight=weight,
                              bias=layer.bias is not None)
    if layer.bias is not None:
        sparse.bias.data = layer.bias.data.copy()
    return sparse
