"""The differentiable array operations: arithmetic, matmul, reductions, shapes, exp/log.

Each class computes `forward` on plain arrays and `backward` from the output gradient, side by
side. Broadcasting follows NumPy; `unbroadcast` sums a gradient back to the shape of the input
that was broadcast.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Function


def unbroadcast(grad, shape):
    """Sum `grad` over the axes along which an input of `shape` was broadcast."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _same_dtype(op, a, b):
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: operands have dtypes {a.dtype} and {b.dtype}; "
                        "convert one explicitly with .astype()")


class Add(Function):
    def forward(self, a, b):
        _same_dtype("add", a, b)
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        _same_dtype("sub", a, b)
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        _same_dtype("mul", a, b)
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return unbroadcast(g * self.b, self.a.shape), unbroadcast(g * self.a, self.b.shape)


class Div(Function):
    def forward(self, a, b):
        _same_dtype("div", a, b)
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = g / self.b
        gb = -g * self.a / (self.b * self.b)
        return unbroadcast(ga, self.a.shape), unbroadcast(gb, self.b.shape)


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """a ** p for a constant exponent p."""

    def forward(self, a, exponent):
        self.a, self.p = a, exponent
        return a ** a.dtype.type(exponent)

    def backward(self, g):
        p = self.a.dtype.type(self.p)
        return (g * p * self.a ** (p - 1),)


class PowTensor(Function):
    """a ** b with both differentiable (b's gradient needs a > 0)."""

    def forward(self, a, b):
        _same_dtype("pow", a, b)
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        xp = backend.array_module(self.a)
        ga = g * self.b * self.a ** (self.b - 1)
        gb = g * self.out * xp.log(xp.where(self.a > 0, self.a, 1))
        return unbroadcast(ga, self.a.shape), unbroadcast(gb, self.b.shape)


class MatMul(Function):
    """NumPy matmul semantics: 1-D operands are promoted, leading dimensions broadcast."""

    def forward(self, a, b):
        _same_dtype("matmul", a, b)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs operands with at least 1 dimension, "
                             f"got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
            raise ValueError(f"matmul shape mismatch: left operand {a.shape} and right operand "
                             f"{b.shape} (inner dimensions {a.shape[-1]} and "
                             f"{b.shape[0 if b.ndim == 1 else -2]} differ)")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        if a.ndim == 1 and b.ndim == 1:              # a dot product: g is a scalar
            return g * b, g * a
        a2 = a[None, :] if a.ndim == 1 else a        # (..., n, k)
        b2 = b[:, None] if b.ndim == 1 else b        # (..., k, m)
        if a.ndim == 1:
            g = g[..., None, :]
        if b.ndim == 1:
            g = g[..., None]
        ga = g @ b2.swapaxes(-1, -2)
        gb = a2.swapaxes(-1, -2) @ g
        ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < max(ndim, 1):
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(ax % max(ndim, 1) for ax in axes))


def _expand_reduced(g, in_shape, axes, keepdims):
    """Reshape the gradient of a reduction so that it broadcasts against the input."""
    if not keepdims:
        g = g.reshape([1 if i in axes else n for i, n in enumerate(in_shape)])
    return g


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, _normalize_axis(axis, a.ndim), keepdims
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = backend.array_module(g)
        g = _expand_reduced(g, self.shape, self.axes, self.keepdims)
        return (xp.broadcast_to(g, self.shape).copy(),)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, _normalize_axis(axis, a.ndim), keepdims
        self.count = int(np.prod([a.shape[i] for i in self.axes])) if a.ndim else 1
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = backend.array_module(g)
        g = _expand_reduced(g, self.shape, self.axes, self.keepdims) / g.dtype.type(self.count)
        return (xp.broadcast_to(g, self.shape).copy(),)


class Max(Function):
    """Maximum over axes; the gradient is shared equally among tied maxima."""

    def forward(self, a, axis=None, keepdims=False):
        self.a, self.axes, self.keepdims = a, _normalize_axis(axis, a.ndim), keepdims
        if a.size == 0:
            raise ValueError(f"max of an empty tensor of shape {a.shape}")
        self.out = a.max(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(a.shape) if i not in self.axes])

    def backward(self, g):
        g = _expand_reduced(g, self.a.shape, self.axes, self.keepdims)
        hits = (self.a == self.out).astype(g.dtype)
        return (g * hits / hits.sum(axis=self.axes, keepdims=True),)


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} into {tuple(shape)}") from None

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    def forward(self, a, axes=None):
        self.axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(axes)
        if (len(self.axes) != a.ndim or not all(-a.ndim <= ax < a.ndim for ax in self.axes)
                or sorted(ax % a.ndim for ax in self.axes) != list(range(a.ndim))):
            raise ValueError(f"axes {axes} is not a permutation of the {a.ndim} dimensions")
        self.axes = tuple(ax % a.ndim for ax in self.axes)   # argsort below needs them >= 0
        return a.transpose(self.axes)

    def backward(self, g):
        return (g.transpose(np.argsort(self.axes)),)


def _is_basic_index(index) -> bool:
    """Slices, integers, None and Ellipsis never select an element twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)


class GetItem(Function):
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        xp = backend.array_module(g)
        full = xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            full[self.index] = g
        else:                                   # repeated indices must add up
            xp.add.at(full, self.index, g)
        return (full,)


class Exp(Function):
    def forward(self, a):
        self.out = backend.array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return backend.array_module(a).log(a)

    def backward(self, g):
        return (g / self.a,)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return abs(a)

    def backward(self, g):
        return (g * backend.array_module(self.a).sign(self.a),)


class Cast(Function):
    def forward(self, a, dtype):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.dtype),)
