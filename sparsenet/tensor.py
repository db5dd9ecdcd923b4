"""Tensor and reverse-mode automatic differentiation.

A `Tensor` wraps an array (`.data`) and, when it was produced by a differentiable operation, the
`Function` that made it (`._ctx`). `loss.backward()` walks that graph backwards: it sorts the
graph topologically (iteratively, so a graph 10,000 operations deep is fine), then hands each
node's output gradient to its Function's `backward`, which returns one gradient per input.

Gradients of leaves accumulate in `.grad` (a plain array), as in PyTorch: call
`optimizer.zero_grad()` between steps. Every operation is a Function subclass with `forward` and
`backward` side by side; the elementwise, reduction and shape operations live in `sparsenet.ops`,
the neural-network ones (activations, losses, convolution) in `sparsenet.nn.functional`.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import backend

DEFAULT_DTYPE = np.float32
FLOAT_DTYPES = (np.float32, np.float64)

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block operations record no graph (evaluation, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def _as_array(data, dtype):
    """Turn user data into an array without silent conversions of existing arrays."""
    xp = backend.array_module(data)
    if isinstance(data, (np.ndarray,)) or xp is not np:
        if dtype is not None and data.dtype != dtype:
            raise TypeError(f"data has dtype {data.dtype} but dtype={np.dtype(dtype)} was asked; "
                            "convert explicitly with .astype()")
        return data
    if isinstance(data, Tensor):
        raise TypeError("data is already a Tensor; use tensor.detach() or tensor.data")
    if isinstance(data, np.generic) and data.dtype.type in FLOAT_DTYPES and dtype is None:
        return np.asarray(data)     # a NumPy float scalar keeps its precision
    arr = np.asarray(data)
    if arr.dtype.kind in "fc" or arr.dtype == np.bool_ or dtype is not None:
        return arr.astype(dtype or DEFAULT_DTYPE)
    if arr.dtype.kind in "iu":
        return arr  # integer data (labels, indices) keeps its dtype
    raise TypeError(f"data must be numeric, got dtype {arr.dtype}")


class Tensor:
    """An array with an optional gradient and the record of how it was computed."""

    __array_priority__ = 100  # so that `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.type not in FLOAT_DTYPES:
            raise TypeError(f"requires_grad=True needs float32 or float64 data, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None          # a plain array of data's shape once backward reached this leaf
        self._ctx = None          # the Function that produced this tensor (None for leaves)

    # ----- basic facts -------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        return backend.to_numpy(self.data)

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def to(self, device: str) -> "Tensor":
        """A copy on ``device`` ("cpu" or "cuda"); the tensor itself when it is already there."""
        moved = backend.to_device(self.data, device)
        if moved is self.data:
            return self
        return Tensor(moved, requires_grad=self.requires_grad)

    def astype(self, dtype) -> "Tensor":
        from .ops import Cast
        return Cast.apply(self, dtype=np.dtype(dtype))

    # ----- autograd ----------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires a gradient."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, "
                                   f"got shape {self.shape}; pass grad=...")
            grad = backend.array_module(self.data).ones_like(self.data)
        elif isinstance(grad, Tensor):
            grad = grad.data
        if grad.shape != self.shape:
            raise ValueError(f"grad has shape {grad.shape}, expected the tensor's shape {self.shape}")

        order = _topological_order(self)
        grads = {id(self): grad}
        for node in reversed(order):          # outputs before the inputs they depend on
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:             # a leaf: accumulate like PyTorch
                xp = backend.array_module(g)
                node.grad = xp.array(g) if node.grad is None else node.grad + g
                continue
            fn = node._ctx
            for parent, pg in zip(fn.parents, fn.backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    # ----- operators (implemented in sparsenet.ops) ---------------------------------------
    def __add__(self, other):
        from .ops import Add
        return Add.apply(self, _lift(other, self))

    def __radd__(self, other):
        from .ops import Add
        return Add.apply(_lift(other, self), self)

    def __sub__(self, other):
        from .ops import Sub
        return Sub.apply(self, _lift(other, self))

    def __rsub__(self, other):
        from .ops import Sub
        return Sub.apply(_lift(other, self), self)

    def __mul__(self, other):
        from .ops import Mul
        return Mul.apply(self, _lift(other, self))

    def __rmul__(self, other):
        from .ops import Mul
        return Mul.apply(_lift(other, self), self)

    def __truediv__(self, other):
        from .ops import Div
        return Div.apply(self, _lift(other, self))

    def __rtruediv__(self, other):
        from .ops import Div
        return Div.apply(_lift(other, self), self)

    def __neg__(self):
        from .ops import Neg
        return Neg.apply(self)

    def __pow__(self, exponent):
        from .ops import Pow, PowTensor
        if isinstance(exponent, Tensor):
            return PowTensor.apply(self, exponent)
        return Pow.apply(self, exponent=float(exponent))

    def __matmul__(self, other):
        from .ops import MatMul
        return MatMul.apply(self, _lift(other, self))

    def __rmatmul__(self, other):
        from .ops import MatMul
        return MatMul.apply(_lift(other, self), self)

    def __getitem__(self, index):
        from .ops import GetItem
        if isinstance(index, Tensor):
            index = index.data
        return GetItem.apply(self, index=index)

    def sum(self, axis=None, keepdims=False):
        from .ops import Sum
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        from .ops import Mean
        return Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        from .ops import Max
        return Max.apply(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        from .ops import Reshape
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        from .ops import Transpose
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes=axes or None)

    @property
    def T(self):
        return self.transpose()

    def flatten(self, start_dim=1):
        return self.reshape(*self.shape[:start_dim], -1)

    def exp(self):
        from .ops import Exp
        return Exp.apply(self)

    def log(self):
        from .ops import Log
        return Log.apply(self)

    def relu(self):
        from .nn.functional import relu
        return relu(self)

    def tanh(self):
        from .nn.functional import tanh
        return tanh(self)

    def sigmoid(self):
        from .nn.functional import sigmoid
        return sigmoid(self)

    def abs(self):
        from .ops import Abs
        return Abs.apply(self)


def _lift(value, like: Tensor) -> Tensor:
    """Wrap a Python number or array as a constant Tensor of `like`'s dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)):
        xp = backend.array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.dtype))
    return Tensor(value)


def _topological_order(root: Tensor) -> list:
    """Nodes reachable from `root` that require grad, every input before its outputs.

    An explicit stack instead of recursion, so deep graphs do not hit Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


class Function:
    """One differentiable operation: `forward` on arrays, `backward` from output grad to inputs.

    `apply(*tensors, **options)` runs `forward(*arrays, **options)`, wraps the result, and records
    this Function as its creator when any input requires a gradient. `backward(grad)` returns a
    tuple with one gradient (or None) per tensor input; `self.needs_grad[i]` says whether input i
    wants one, so backward can skip work. Save what backward needs on `self`.
    """

    parents: tuple = ()

    @classmethod
    def apply(cls, *tensors, **options):
        fn = cls()
        for t in tensors:
            if not isinstance(t, Tensor):
                raise TypeError(f"{cls.__name__} expects Tensor inputs, got {type(t).__name__}")
        fn.needs_grad = tuple(_grad_enabled and t.requires_grad for t in tensors)
        out = _wrap(fn.forward(*[t.data for t in tensors], **options))
        if any(fn.needs_grad):
            fn.parents = tensors
            out.requires_grad = True
            out._ctx = fn
        return out

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError


def _wrap(array) -> Tensor:
    """A result Tensor around an operation's output, without the checks of user input."""
    out = Tensor.__new__(Tensor)
    if not isinstance(array, np.ndarray) and backend.array_module(array) is np:
        array = np.asarray(array)   # NumPy reductions return scalars; keep their dtype
    out.data = array
    out.requires_grad = False
    out.grad = None
    out._ctx = None
    return out


def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad)
