"""Mixture-of-experts feed-forward layer: conditional computation, one token at a time.

Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton & Dean, 2017, "Outrageously Large Neural
Networks: The Sparsely-Gated Mixture-of-Experts Layer" (ICLR 2017; reference code:
tensor2tensor, `expert_utils.noisy_top_k_gating`). Fedus, Zoph & Shazeer, 2021, "Switch
Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity" (JMLR
2022; reference code: mesh-tensorflow `moe.py`).

Every token x (a row of the input) goes to k of N experts, each a small FFN
E_i(x) = W2_i GELU(W1_i x + b1_i) + b2_i, and gets back y = Σ_{i in top k} G(x)_i E_i(x).
The experts' weights are N times the FFN's, the work per token is k experts': parameters and
FLOPs decouple. Two routers (`router=`):

- "noisy_topk" (Shazeer et al., Section 2.1 and Appendix A; default):
      H(x)_i  = (x W_g)_i + ε_i · (softplus((x W_noise)_i) + 0.01),  ε ~ N(0, 1), training only
      G(x)    = Softmax(KeepTopK(H(x), k))                (the gates of the k chosen experts)
      Importance(X)_i = Σ_x G(x)_i,     L_importance = w_importance · CV(Importance(X))²
      P(x, i) = Φ(((x W_g)_i − kth_excluding(H(x), k, i)) / noise_std(x)_i)
      Load(X)_i = Σ_x P(x, i),          L_load = w_load · CV(Load(X))²
  kth_excluding: the k-th largest noisy logit among the other experts (the smooth estimate of
  "i would still be chosen with fresh noise"). CV² = variance / mean², the reference's
  cv_squared. W_g and W_noise start at zero. Defaults w_importance = w_load = 0.1 (Section 4:
  "we set w_importance and w_load to 0.1"); 0.01 is the reference's noise epsilon.
- "switch" (Fedus et al., Section 2.1-2.2), top-1:
      p(x) = Softmax(x W_r),   i* = argmax p(x),   y = p(x)_i* E_i*(x)
      L_aux = α · N · Σ_i f_i · P_i,   f_i = fraction of tokens routed to i, P_i = mean_x p(x)_i
  α = 0.01 (Section 2.2, "α = 10^-2 ... throughout this work"). Router weights start from a
  truncated-normal-like N(0, 0.1 / width) (Section 2.4, "scale 0.1").

Capacity (Fedus et al., Section 2.2; GShard): an expert takes at most
    capacity = ceil(capacity_factor · k · tokens / N)
(token, choice) pairs per batch; the pairs past it are dropped: that choice contributes 0 and
the token reaches the next layer through the residual connection alone. Every first choice is
placed before any second choice (`kernels.reference.moe_plan`). capacity_factor=None is the
dropless mode: no pair is ever dropped (default for noisy_topk; Switch's default is 1.25).

The data movement is four kernels (sparsenet.kernels: moe_plan, moe_dispatch, moe_combine,
moe_combine_weight_grad): group the tokens by expert into one buffer, one dense product per
expert on its slice, scatter back weighted by the gates. `layer.stats` holds the last training
batch's expert load (tokens routed per expert, before capacity), its max/mean, the fraction of
pairs dropped and the auxiliary losses; `layer.aux_loss` is the loss to add to the task loss.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels, random
from ..tensor import Function, Tensor
from .init import get_init
from .module import Module, Parameter
from .sequence_ops import gelu, normal_cdf, softmax, softplus

ROUTERS = ("noisy_topk", "switch")
BALANCE_DEFAULTS = {"noisy_topk": 0.1, "switch": 0.01}
NOISE_EPSILON = 0.01


# ----- the data movement, as autograd Functions over the kernels -----------------------------
class Dispatch(Function):
    """buffer[position[t, s]] = x[t]: the tokens grouped by expert. Backward: add them back."""

    def forward(self, x, position, rows):
        self.position, self.ones = position, np.ones(position.shape, dtype=x.dtype)
        out = np.empty((rows, x.shape[1]), dtype=x.dtype)                  # (rows, width)
        return kernels.get_backend(x).moe_dispatch(x, position, self.ones, out)

    def backward(self, g):
        gx = np.empty((self.position.shape[0], g.shape[1]), dtype=g.dtype)
        return (kernels.get_backend(g).moe_combine(g, self.position, self.ones, gx), None)


class Combine(Function):
    """out[t] = Σ_s gates[t, s] · y[position[t, s]]: every token gets its experts back."""

    def forward(self, y, gates, position):
        self.y, self.gates, self.position = y, gates, position
        out = np.empty((position.shape[0], y.shape[1]), dtype=y.dtype)    # (tokens, width)
        return kernels.get_backend(y).moe_combine(y, position, gates, out)

    def backward(self, g):
        k = kernels.get_backend(g)
        gy = k.moe_dispatch(g, self.position, self.gates, np.empty_like(self.y))
        gg = k.moe_combine_weight_grad(g, self.y, self.position, np.empty_like(self.gates))
        return gy, gg, None


class ExpertLinear(Function):
    """One dense product per expert: rows offsets[e]:offsets[e+1] of the buffer times W_e."""

    def forward(self, buffer, weight, bias, offsets):
        self.buffer, self.weight, self.offsets = buffer, weight, offsets
        out = np.empty((buffer.shape[0], weight.shape[1]), dtype=buffer.dtype)
        for e, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            if b > a:                                                     # (rows_e, out)
                np.matmul(buffer[a:b], weight[e].T, out=out[a:b])
                out[a:b] += bias[e]
        return out

    def backward(self, g):
        gx, gw = np.empty_like(self.buffer), np.zeros_like(self.weight)
        gb = np.zeros((self.weight.shape[0], self.weight.shape[1]), dtype=g.dtype)
        for e, (a, b) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            if b > a:
                np.matmul(g[a:b], self.weight[e], out=gx[a:b])
                np.matmul(g[a:b].T, self.buffer[a:b], out=gw[e])
                g[a:b].sum(axis=0, out=gb[e])
        return gx, gw, gb, None


# ----- routers ---------------------------------------------------------------------------------
def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation, variance / mean² (the reference's cv_squared)."""
    mean = v.mean()
    return ((v - mean) * (v - mean)).mean() / (mean * mean + 1e-10)


def noisy_topk_router(x, w_gate, w_noise, k, w_importance, w_load, training, rng):
    """(expert_index (n, k), gates (n, k) Tensor, aux losses {name: Tensor})."""
    n, n_experts = x.shape[0], w_gate.shape[0]
    clean = x @ w_gate.T                                                     # (n, N)
    noisy, noise_std = clean, None
    if training:
        noise_std = softplus(x @ w_noise.T) + NOISE_EPSILON
        eps = rng.standard_normal(clean.shape).astype(clean.dtype)
        noisy = clean + Tensor(eps) * noise_std
    ranked = np.argsort(-noisy.data, axis=1, kind="stable")                # ties: lower expert
    expert_index = np.ascontiguousarray(ranked[:, :k]).astype(np.int64)
    rows = np.arange(n)[:, None]
    gates = softmax(noisy[rows, expert_index], axis=1)                      # (n, k)
    losses = {}
    if training and w_importance:
        chosen = np.zeros((n, k, n_experts), dtype=clean.dtype)
        chosen[rows, np.arange(k), expert_index] = 1
        importance = (gates.reshape(n, k, 1) * Tensor(chosen)).sum(axis=(0, 1))      # (N,)
        losses["importance"] = cv_squared(importance) * w_importance
    if training and w_load and k < n_experts:
        in_top = np.zeros(clean.shape, dtype=clean.dtype)
        in_top[rows, expert_index] = 1
        kth = noisy[np.arange(n), ranked[:, k - 1]].reshape(n, 1)          # k-th largest
        next_ = noisy[np.arange(n), ranked[:, k]].reshape(n, 1)            # (k+1)-th largest
        threshold = next_ * Tensor(in_top) + kth * Tensor(1 - in_top)      # excluding i itself
        load = normal_cdf((clean - threshold) / noise_std).sum(axis=0)     # (N,)
        losses["load"] = cv_squared(load) * w_load
    return expert_index, gates, losses


def switch_router(x, w_gate, alpha, training):
    """Top-1 routing with the load-balancing loss α · N · Σ f_i P_i."""
    n, n_experts = x.shape[0], w_gate.shape[0]
    probs = softmax(x @ w_gate.T, axis=1)                                    # (n, N)
    expert_index = probs.data.argmax(axis=1).astype(np.int64).reshape(n, 1)
    gates = probs[np.arange(n)[:, None], expert_index]                       # (n, 1)
    losses = {}
    if training and alpha:
        f = np.bincount(expert_index[:, 0], minlength=n_experts) / n        # not differentiable
        p = probs.mean(axis=0)
        losses["switch"] = (p * Tensor(f.astype(probs.dtype))).sum() * (alpha * n_experts)
    return expert_index, gates, losses


def capacity_of(capacity_factor, k, n_tokens, n_experts) -> int:
    if capacity_factor is None:                       # dropless: room for every token
        return n_tokens
    return math.ceil(capacity_factor * k * n_tokens / n_experts)


# ----- the layer -------------------------------------------------------------------------------
class MoE(Module):
    """N expert FFNs (width -> hidden -> width), k per token. See the module docstring."""

    def __init__(self, width, hidden, n_experts=8, k=2, router="noisy_topk",
                 capacity_factor=None, balance=None, init="kaiming_uniform", dtype=np.float32,
                 rng=None):
        super().__init__()
        for value, name in ((width, "width"), (hidden, "hidden"), (n_experts, "n_experts"),
                            (k, "k")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if k > n_experts:
            raise ValueError(f"top-k = {k} is larger than the number of experts, {n_experts}: "
                             "a token cannot choose more experts than there are")
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
        if router == "switch" and k != 1:
            raise ValueError(f"the switch router sends each token to one expert: k must be 1, "
                             f"got {k}")
        if capacity_factor is not None and (isinstance(capacity_factor, bool) or not isinstance(
                capacity_factor, (int, float)) or not capacity_factor > 0):
            raise ValueError(f"capacity_factor must be a number > 0 (or None: dropless), got "
                             f"{capacity_factor!r}")
        balance = BALANCE_DEFAULTS[router] if balance is None else balance
        if isinstance(balance, bool) or not isinstance(balance, (int, float)) or balance < 0:
            raise ValueError(f"balance (the balancing-loss weight) must be a number >= 0, got "
                             f"{balance!r}")
        self.width, self.hidden, self.n_experts, self.k = int(width), int(hidden), n_experts, k
        self.router, self.capacity_factor, self.balance = router, capacity_factor, float(balance)
        rng = rng if rng is not None else random.generator()
        draw = get_init(init)
        self.w_gate = Parameter(np.zeros((n_experts, width), dtype) if router == "noisy_topk" else
                                (rng.standard_normal((n_experts, width)) *
                                 math.sqrt(0.1 / width)).astype(dtype))
        if router == "noisy_topk":
            self.w_noise = Parameter(np.zeros((n_experts, width), dtype))
        self.w1 = Parameter(np.stack([draw((hidden, width), dtype=dtype, rng=rng)
                                      for _ in range(n_experts)]))          # (N, hidden, width)
        self.b1 = Parameter(np.zeros((n_experts, hidden), dtype))
        self.w2 = Parameter(np.stack([draw((width, hidden), dtype=dtype, rng=rng)
                                      for _ in range(n_experts)]))          # (N, width, hidden)
        self.b2 = Parameter(np.zeros((n_experts, width), dtype))
        self.aux_loss, self.stats = None, {}

    def route(self, x):
        if self.router == "switch":
            return switch_router(x, self.w_gate, self.balance, self.training)
        return noisy_topk_router(x, self.w_gate, self.w_noise, self.k, self.balance,
                                 self.balance, self.training, random.generator())

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"MoE: input must be (tokens, {self.width}), got shape {x.shape}")
        n = x.shape[0]
        expert_index, gates, losses = self.route(x)
        capacity = capacity_of(self.capacity_factor, self.k, n, self.n_experts)
        position, offsets = kernels.get_backend(expert_index).moe_plan(expert_index, self.n_experts, capacity,
                                       np.empty(expert_index.shape, np.int64),
                                       np.empty(self.n_experts + 1, np.int64))
        buffer = Dispatch.apply(x, position=position, rows=int(offsets[-1]))   # (rows, width)
        hidden = gelu(ExpertLinear.apply(buffer, self.w1, self.b1, offsets=offsets))
        y = ExpertLinear.apply(hidden, self.w2, self.b2, offsets=offsets)     # (rows, width)
        self.aux_loss = sum(losses.values()) if losses else None
        load = np.bincount(expert_index.ravel(), minlength=self.n_experts)
        self.stats = {"load": load.tolist(), "load_max_mean": float(load.max() / load.mean()),
                      "dropped": float(1 - offsets[-1] / expert_index.size),
                      "capacity": capacity,
                      **{f"{name}_loss": float(v.item()) for name, v in losses.items()}}
        return Combine.apply(y, gates, position=position)                    # (tokens, width)

    def active_weights(self) -> int:
        """Weights one token uses: the router's, and k experts' two matrices."""
        router = self.w_gate.size + (self.w_noise.size if self.router == "noisy_topk" else 0)
        return router + self.k * 2 * self.width * self.hidden

    def extra_repr(self):
        capacity = "dropless" if self.capacity_factor is None else self.capacity_factor
        return (f"width={self.width}, hidden={self.hidden}, experts={self.n_experts}, "
                f"k={self.k}, router={self.router}, capacity_factor={capacity}, "
                f"balance={self.balance}")
