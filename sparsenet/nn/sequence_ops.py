"""Operations of sequence models: embedding, layer norm, GELU, softmax, batched matmul, causal
attention, sequence cross-entropy, and the two smooth functions a router needs (softplus, the
normal CDF).

Same pattern as `sparsenet.nn.functional`: one Function per operation, forward and backward side
by side, and a small function users call. `functional` re-exports them (`F.layer_norm`, ...).
Shapes follow the decoder-only transformer: tokens (batch, time), activations (batch, time,
width), attention heads (batch, heads, time, head_width).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, random
from ..ops import MatMul
from ..tensor import Function, Tensor


def _erf(x):
    xp = backend.array_module(x)
    if xp is np:
        from scipy.special import erf
    else:                                    # CuPy arrays: cupyx has the same function
        from cupyx.scipy.special import erf
    return erf(x)


# ----- embedding ---------------------------------------------------------------------------
class Embedding(Function):
    """out[b, t] = weight[ids[b, t]]: a row lookup; its gradient adds rows back (repeats add)."""

    def forward(self, weight, ids):
        self.ids, self.shape = ids, weight.shape
        return weight[ids]                                          # (*ids.shape, width)

    def backward(self, g):
        xp = backend.array_module(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        xp.add.at(grad, self.ids.ravel(), g.reshape(-1, self.shape[1]))
        return grad, None


def embedding(ids, weight: Tensor) -> Tensor:
    """Rows of `weight` (vocabulary, width) picked by the integer array `ids` (any shape)."""
    ids = ids.data if isinstance(ids, Tensor) else ids
    xp = backend.array_module(weight.data)
    ids = xp.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (vocabulary, width), got shape {weight.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= weight.shape[0]):
        raise ValueError(f"embedding: ids must lie in [0, {weight.shape[0]}) (the vocabulary), "
                         f"got values in [{int(ids.min())}, {int(ids.max())}]")
    return Embedding.apply(weight, Tensor(ids))


# ----- layer norm --------------------------------------------------------------------------
class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (Ba et al. 2016)."""

    def forward(self, x, weight, bias, eps=1e-5):
        xp = backend.array_module(x)
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        self.rstd = 1 / xp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
        self.xhat, self.weight = centred * self.rstd, weight        # (..., width)
        return self.xhat * weight + bias

    def backward(self, g):
        lead = tuple(range(g.ndim - 1))
        gw, gb = (g * self.xhat).sum(axis=lead), g.sum(axis=lead)
        gxhat = g * self.weight
        # d xhat / dx removes the mean and the component along xhat (both were normalised away)
        gx = self.rstd * (gxhat - gxhat.mean(axis=-1, keepdims=True)
                          - self.xhat * (gxhat * self.xhat).mean(axis=-1, keepdims=True))
        return gx, gw, gb


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(f"layer_norm: weight and bias must have shape ({x.shape[-1]},) to match "
                         f"the input's last axis, got {weight.shape} and {bias.shape}")
    if not eps > 0:
        raise ValueError(f"layer_norm: eps must be > 0, got {eps}")
    return LayerNorm.apply(x, weight, bias, eps=eps)


# ----- activations -------------------------------------------------------------------------
_GELU_C = math.sqrt(2 / math.pi)


class GELU(Function):
    """x · Φ(x) in the tanh form of GPT-2 (Hendrycks & Gimpel 2016, Eq. in Section 2):
    0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³))). In-place steps: this runs on the largest
    activations of a transformer (tokens x 4 width), where every temporary array costs."""

    def forward(self, x):
        xp = backend.array_module(x)
        c, a = x.dtype.type(_GELU_C), x.dtype.type(0.044715)
        t = x * x
        t *= a * c
        t += c
        t *= x
        xp.tanh(t, out=t)                                  # tanh(c (x + a x³))
        self.x, self.t = x, t
        out = t + 1
        out *= x
        out *= x.dtype.type(0.5)
        return out

    def backward(self, g):
        x, t = self.x, self.t
        c, a3 = x.dtype.type(_GELU_C), x.dtype.type(3 * 0.044715)
        # d/dx = 0.5 (1 + t) + 0.5 x (1 - t²) c (1 + 3a x²)
        inner = x * x
        inner *= a3 * c
        inner += c
        inner *= x
        inner *= 1 - t * t
        inner += 1
        inner += t
        inner *= x.dtype.type(0.5)
        inner *= g
        return (inner,)


class Softplus(Function):
    """log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)): no overflow."""

    def forward(self, x):
        xp = backend.array_module(x)
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, g):
        xp = backend.array_module(g)
        return (g * 0.5 * (1 + xp.tanh(0.5 * self.x)),)               # sigmoid(x)


class NormalCDF(Function):
    """Φ(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal's CDF; Φ'(x) = exp(-x²/2)/sqrt(2π)."""

    def forward(self, x):
        self.x = x
        return (0.5 * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype)

    def backward(self, g):
        xp = backend.array_module(g)
        return (g * xp.exp(-0.5 * self.x * self.x) / g.dtype.type(math.sqrt(2 * math.pi)),)


def gelu(x: Tensor) -> Tensor:
    return GELU.apply(x)


def softplus(x: Tensor) -> Tensor:
    return Softplus.apply(x)


def normal_cdf(x: Tensor) -> Tensor:
    return NormalCDF.apply(x)


# ----- softmax and batched matmul -----------------------------------------------------------
class Softmax(Function):
    def forward(self, x, axis=-1):
        xp = backend.array_module(x)
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        self.out, self.axis = e / e.sum(axis=axis, keepdims=True), axis
        return self.out

    def backward(self, g):
        return (self.out * (g - (g * self.out).sum(axis=self.axis, keepdims=True)),)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis {axis} is out of range for a tensor with {x.ndim} "
                         "dimensions")
    return Softmax.apply(x, axis=axis)


def batched_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b over leading batch axes: (..., n, k) @ (..., k, m) -> (..., n, m). The batch axes
    broadcast as in NumPy; the gradient sums back over broadcast axes (`ops.MatMul`)."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"batched_matmul: operands need at least 2 dimensions, got shapes "
                         f"{a.shape} and {b.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"batched_matmul: batch axes {a.shape[:-2]} and {b.shape[:-2]} do not "
                         "broadcast") from None
    return MatMul.apply(a, b)


# ----- attention ---------------------------------------------------------------------------
class CausalAttention(Function):
    """softmax(q kᵀ / sqrt(d) + causal mask) v, with optional dropout on the probabilities
    (Vaswani et al. 2017, Eq. 1). q, k, v: (..., time, d). Position t attends to 0..t only."""

    def forward(self, q, k, v, dropout=0.0, rng=None):
        xp = backend.array_module(q)
        t, d = q.shape[-2:]
        self.scale = q.dtype.type(1 / math.sqrt(d))
        scores = (q @ k.swapaxes(-1, -2)) * self.scale                    # (..., t, t)
        future = xp.triu(xp.ones((t, t), dtype=bool), k=1)
        scores = xp.where(future, q.dtype.type(-np.inf), scores)
        e = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        self.probs = e / e.sum(axis=-1, keepdims=True)                    # row-stochastic
        self.keep = None
        used = self.probs
        if dropout > 0:
            self.keep = (rng.random(self.probs.shape) >= dropout).astype(q.dtype) \
                / q.dtype.type(1 - dropout)
            used = self.probs * self.keep
        self.q, self.k, self.v, self.used = q, k, v, used
        return used @ v                                                   # (..., t, d)

    def backward(self, g):
        gv = self.used.swapaxes(-1, -2) @ g
        gp = g @ self.v.swapaxes(-1, -2)                                  # d loss / d used
        if self.keep is not None:
            gp = gp * self.keep
        gs = self.probs * (gp - (gp * self.probs).sum(axis=-1, keepdims=True)) * self.scale
        return gs @ self.k, gs.swapaxes(-1, -2) @ self.q, gv              # masked entries: gs = 0


def causal_attention(q: Tensor, k: Tensor, v: Tensor, dropout: float = 0.0,
                     training: bool = True, rng=None) -> Tensor:
    """Causal scaled-dot-product attention of q, k, v of one shape (..., time, head_width)."""
    if q.shape != k.shape or q.shape != v.shape or q.ndim < 2:
        raise ValueError(f"causal_attention: q, k and v must share one shape (..., time, width), "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    if not 0 <= dropout < 1:
        raise ValueError(f"causal_attention: dropout must be in [0, 1), got {dropout}")
    p = dropout if training else 0.0
    return CausalAttention.apply(q, k, v, dropout=p, rng=rng or random.generator())


# ----- loss --------------------------------------------------------------------------------
def sequence_cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean cross-entropy (nats per token) of `logits` (batch, time, vocabulary) against the
    integer `targets` (batch, time). Divide by ln 2 for bits per token (per character)."""
    from .functional import CrossEntropy
    targets = targets.data if isinstance(targets, Tensor) else targets
    xp = backend.array_module(logits.data)
    targets = xp.asarray(targets)
    if logits.ndim != 3:
        raise ValueError(f"sequence_cross_entropy: logits must be (batch, time, vocabulary), "
                         f"got shape {logits.shape}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"sequence_cross_entropy: targets must be integers, got {targets.dtype}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"sequence_cross_entropy: targets must have shape {logits.shape[:2]} to "
                         f"match logits {logits.shape}, got {targets.shape}")
    vocab = logits.shape[2]
    if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"sequence_cross_entropy: targets must lie in [0, {vocab}), got values "
                         f"in [{int(targets.min())}, {int(targets.max())}]")
    flat = logits.reshape(-1, vocab)                                      # (batch * time, vocab)
    return CrossEntropy.apply(flat, Tensor(targets.reshape(-1)))


__all__ = ["embedding", "layer_norm", "gelu", "softplus", "normal_cdf", "softmax",
           "batched_matmul", "causal_attention", "sequence_cross_entropy"]
