"""Fused elementwise steps of a training step (cpu backend). Spec: ``kernels.reference``.

Each replaces several NumPy passes over an array by one: the gradient through a ReLU with the
bias gradient of the layer below it, and the SGD and Adam updates of a parameter. They compute
in the same order, operation by operation, as the NumPy expressions of the reference (no fused
multiply-add, no reassociation), so results are equal bit for bit.

Shape of the code: the parallel loop hands each thread a contiguous slice, and a plain
(serial) function does the work on it with loops over `range(len)`. Written with index ranges
inside the parallel loop instead, the same loop ran five times slower: Numba could not prove
the indices non-negative, and LLVM did not vectorize it.
"""


import numpy as np
from numba import get_num_threads, njit, prange

from . import args
from .micro import even_bounds
from .wrap import contig

# Arrays shorter than this are updated by one thread: waking the others costs more.
PARALLEL_MIN = 1 << 16


@njit(cache=True, fastmath={"reassoc"})     # the row sum may be reordered (vectorized)
def _relu_backward_rows(grad, activation, out, row_sums):
    for r in range(grad.shape[0]):
        g, a, o = grad[r], activation[r], out[r]
        s = o.dtype.type(0)
        for j in range(g.shape[0]):
            v = g[j] * (a[j] > 0)
            o[j] = v
            s += v
        row_sums[r] = s


@njit(parallel=True, cache=True)
def _relu_backward(grad, activation, out, row_sums, n_threads):
    bounds = even_bounds(grad.shape[0], n_threads if grad.size >= PARALLEL_MIN else 1)
    for t in prange(bounds.shape[0] - 1):
        lo, hi = bounds[t], bounds[t + 1]
        _relu_backward_rows(grad[lo:hi], activation[lo:hi], out[lo:hi], row_sums[lo:hi])
    return out


def relu_backward(grad, activation, out, row_sums):
    """out = grad * (activation > 0); row_sums = out.sum(axis=1). Returns out.

    The row sums are added in a vectorized order (NumPy's pairwise sum adds in another one, so
    they agree to rounding, not bit for bit); the gradient itself is exact."""
    args.relu_backward(grad, activation, out, row_sums)
    if out.flags.c_contiguous and row_sums.flags.c_contiguous:
        return _relu_backward(contig(grad), contig(activation), out, row_sums, get_num_threads())
    buf, sums = np.empty(out.shape, out.dtype), np.empty(row_sums.shape, row_sums.dtype)
    _relu_backward(contig(grad), contig(activation), buf, sums, get_num_threads())
    out[...], row_sums[...] = buf, sums
    return out


@njit(cache=True)
def _sgd_slice(param, grad, buf, lr, momentum, weight_decay, nesterov):
    for i in range(param.shape[0]):
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * param[i]
        if momentum != 0:
            b = momentum * buf[i]
            b = b + g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        param[i] = param[i] - lr * g


@njit(parallel=True, cache=True)
def _sgd(param, grad, buf, lr, momentum, weight_decay, nesterov, n_threads):
    n = param.shape[0]
    bounds = even_bounds(n, n_threads if n >= PARALLEL_MIN else 1)
    for t in prange(bounds.shape[0] - 1):
        lo, hi = bounds[t], bounds[t + 1]
        _sgd_slice(param[lo:hi], grad[lo:hi], buf[lo:hi] if momentum != 0 else buf, lr,
                   momentum, weight_decay, nesterov)


def sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov):
    """One SGD step in place (PyTorch's rule; see the reference). Returns param."""
    args.sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov)
    t = param.dtype.type
    buf = momentum_buf if momentum else np.zeros(0, param.dtype)
    work = param if param.flags.c_contiguous else np.ascontiguousarray(param)
    mom = buf if buf.flags.c_contiguous else np.ascontiguousarray(buf)
    _sgd(work, contig(grad), mom, t(lr), t(momentum), t(weight_decay), bool(nesterov),
         get_num_threads())
    if work is not param:
        param[...] = work
    if momentum and mom is not buf:
        buf[...] = mom
    return param


@njit(cache=True)
def _adam_slice(param, grad, m, v, lr_scaled, beta1, one_minus_beta1, beta2, one_minus_beta2,
                v_scale, eps, weight_decay, decay_factor, decoupled):
    for i in range(param.shape[0]):
        g = grad[i]
        if weight_decay != 0:
            if decoupled:
                param[i] = param[i] * decay_factor
            else:
                g = g + weight_decay * param[i]
        mi = beta1 * m[i]
        mi = mi + one_minus_beta1 * g
        m[i] = mi
        vi = beta2 * v[i]
        vi = vi + (one_minus_beta2 * g) * g
        v[i] = vi
        param[i] = param[i] - (lr_scaled * mi) / (np.sqrt(vi / v_scale) + eps)


@njit(parallel=True, cache=True)
def _adam(param, grad, m, v, lr_scaled, beta1, one_minus_beta1, beta2, one_minus_beta2,
          v_scale, eps, weight_decay, decay_factor, decoupled, n_threads):
    n = param.shape[0]
    bounds = even_bounds(n, n_threads if n >= PARALLEL_MIN else 1)
    for t in prange(bounds.shape[0] - 1):
        lo, hi = bounds[t], bounds[t + 1]
        _adam_slice(param[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi], lr_scaled, beta1,
                    one_minus_beta1, beta2, one_minus_beta2, v_scale, eps, weight_decay,
                    decay_factor, decoupled)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam (or AdamW, decoupled=True) step in place; see the reference. Returns param."""
    args.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step)
    arrays = [param, m, v]
    work = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrays]
    t = param.dtype.type
    _adam(work[0], contig(grad), work[1], work[2], t(lr * (1 / (1 - beta1 ** step))), t(beta1),
          t(1 - beta1), t(beta2), t(1 - beta2), t(1 - beta2 ** step), t(eps), t(weight_decay),
          t(1 - lr * weight_decay), bool(decoupled), get_num_threads())
    for a, w in zip(arrays, work):
        if w is not a:
            a[...] = w
    return param
