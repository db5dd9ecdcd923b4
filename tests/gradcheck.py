"""Central-difference gradient checks in float64, used by the op and layer tests.

`gradcheck(fn, inputs)` runs `fn` on Tensors made from `inputs`, reduces its output to a scalar
with a fixed random weighting (a plain sum would hide errors that cancel across elements), and
compares the gradient that `backward()` gives for every float input with

    (f(x + eps * e_i) - f(x - eps * e_i)) / (2 * eps)        for every element i.

Inputs that are not floating-point arrays (labels, index arrays) are passed as constant Tensors.
"""
from __future__ import annotations

import numpy as np

from sparsenet import Tensor


def _weights(shape, seed=1234):
    """The fixed weighting of the output: distinct, nonzero values of both signs."""
    magnitude = np.random.default_rng(seed).uniform(0.5, 1.5, size=shape)
    sign = np.where(np.arange(int(np.prod(shape))).reshape(shape) % 2, 1.0, -1.0)
    return np.asarray(magnitude * sign, dtype=np.float64)   # an array even for shape ()


def _is_differentiable(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.float64


def _scalar_output(fn, arrays, weights):
    out = fn(*[Tensor(a) for a in arrays])
    return float(np.sum(out.data * weights))


def numerical_gradients(fn, arrays, eps=1e-6):
    """One array of central differences per differentiable input (None for the others)."""
    probe = fn(*[Tensor(a) for a in arrays])
    weights = _weights(probe.shape)
    grads = []
    for k, x in enumerate(arrays):
        if not _is_differentiable(x):
            grads.append(None)
            continue
        grad = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            shifted = [a.copy() if j == k else a for j, a in enumerate(arrays)]
            shifted[k][i] = x[i] + eps
            up = _scalar_output(fn, shifted, weights)
            shifted[k][i] = x[i] - eps
            down = _scalar_output(fn, shifted, weights)
            grad[i] = (up - down) / (2 * eps)
        grads.append(grad)
    return grads


def analytic_gradients(fn, arrays):
    """The gradients that backward() accumulates in each differentiable input's `.grad`."""
    tensors = [Tensor(a.copy(), requires_grad=_is_differentiable(a)) for a in arrays]
    out = fn(*tensors)
    if out.dtype != np.float64:
        raise AssertionError(f"gradcheck needs a float64 output, fn returned {out.dtype}")
    weights = _weights(out.shape)
    (out * Tensor(weights)).sum().backward()
    grads = []
    for t in tensors:
        if not t.requires_grad:
            grads.append(None)
        elif t.grad is None:                 # the output does not depend on this input
            grads.append(np.zeros_like(t.data))
        else:
            assert t.grad.shape == t.shape, f"grad shape {t.grad.shape} != input shape {t.shape}"
            assert t.grad.dtype == t.dtype, f"grad dtype {t.grad.dtype} != input dtype {t.dtype}"
            grads.append(t.grad)
    return grads


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5):
    """Assert that `fn`'s backward agrees with central differences for every float64 input.

    `fn` takes one Tensor per input and returns a float64 Tensor. Returns True so that it can
    sit in an `assert`; raises AssertionError naming the input and the worst element otherwise.
    """
    arrays = [np.asarray(x) for x in inputs]
    analytic = analytic_gradients(fn, arrays)
    numeric = numerical_gradients(fn, arrays, eps)
    checked = 0
    for k, (a, n) in enumerate(zip(analytic, numeric)):
        if n is None:
            continue
        checked += 1
        if not np.allclose(a, n, atol=atol, rtol=rtol):
            worst = np.unravel_index(np.argmax(np.abs(a - n)), a.shape) if a.ndim else ()
            raise AssertionError(f"gradient of input {k} (shape {a.shape}) is wrong: at {worst} "
                                 f"backward gives {a[worst]!r}, central differences {n[worst]!r}"
                                 f"\nbackward:\n{a}\nnumeric:\n{n}")
    if not checked:
        raise AssertionError("gradcheck got no float64 input to differentiate")
    return True
