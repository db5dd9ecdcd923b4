"""Elementwise steps of training, each fused into one pass (gpu backend): the optimizer steps
on a parameter's values, and the gradient through a ReLU with the bias gradient beside it.

Spec: ``kernels.reference.sgd_update`` / ``adam_update``, the arithmetic of sparsenet.optim.
Written as array expressions, an SGD step with momentum and weight decay is five passes over
the values with temporaries; here it is one pass, one thread per value, and the optimizer
state is updated in place. Every coefficient is cast to the values' dtype on the host, as the
array expressions do, and the operations come in the reference's order.
"""
import math

from numba import cuda

from ..cpu import args, checks
from .launch import array_module, flat_launch


@cuda.jit
def _sgd(values, grad, buf, lr, momentum, weight_decay, nesterov):
    i = cuda.grid(1)
    if i < values.shape[0]:
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * values[i]
        if momentum != 0:
            b = buf[i] * momentum + g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        values[i] -= lr * g


@cuda.jit
def _adam(values, grad, m, v, lr_corrected, beta1, one_minus_beta1, beta2, one_minus_beta2,
          v_correction, eps, l2_decay, shrink, decoupled):
    i = cuda.grid(1)
    if i < values.shape[0]:
        w = values[i]
        if decoupled:
            w = w * shrink                           # AdamW: decay the weight itself
        g = grad[i]
        if l2_decay != 0:
            g = g + l2_decay * w                     # Adam: decay through the gradient
        m_i = m[i] * beta1 + one_minus_beta1 * g
        v_i = v[i] * beta2 + one_minus_beta2 * g * g
        m[i] = m_i
        v[i] = v_i
        values[i] = w - lr_corrected * m_i / (math.sqrt(v_i / v_correction) + eps)


def sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov):
    """In place: one SGD step (see the reference). Returns param."""
    args.sgd_update(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov)
    t = param.dtype.type
    buf = momentum_buf if momentum else param[:0]        # unread when momentum == 0
    if param.shape[0]:
        blocks, threads = flat_launch(param.shape[0])
        _sgd[blocks, threads](param, grad, buf, t(lr), t(momentum), t(weight_decay), bool(nesterov))
    return param


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """In place: Adam's (or AdamW's, decoupled=True) step number `step`. Returns param."""
    args.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step)
    t = param.dtype.type
    decoupled = bool(decoupled and weight_decay)
    l2_decay = 0.0 if decoupled else weight_decay
    if param.shape[0]:
        blocks, threads = flat_launch(param.shape[0])
        _adam[blocks, threads](param, grad, m, v, t(lr / (1 - beta1 ** step)), t(beta1),
                               t(1 - beta1), t(beta2), t(1 - beta2), t(1 - beta2 ** step), t(eps),
                               t(l2_decay), t(1 - lr * weight_decay), decoupled)
    return param


def relu_backward(grad, activation, out, row_sums):
    """out = grad * (activation > 0), the gradient through a ReLU whose output was
    `activation` (both (n_rows, k)); row_sums (n_rows,) = out.sum(axis=1), the bias gradient
    of the layer below. Two CuPy kernels (an elementwise product, a row reduction). Returns out."""
    dtype = checks.float_array("grad", grad, ndim=2)
    checks.float_array("activation", activation, ndim=2)
    checks.same_dtype("activation", activation, dtype, "grad")
    checks.shape("activation", activation, grad.shape, "the shape of grad")
    checks.out_array(out, grad.shape, dtype, "the shape of grad")
    checks.float_array("row_sums", row_sums, ndim=1)
    checks.same_dtype("row_sums", row_sums, dtype, "grad")
    checks.shape("row_sums", row_sums, grad.shape[:1], "one entry per row of grad")
    xp = array_module(grad)
    xp.multiply(grad, activation > 0, out=out)
    row_sums[...] = out.sum(axis=1)
    return out
