"""A small decoder-only transformer (GPT) for character-level language modelling, dense or with
mixture-of-experts feed-forward layers.

Radford et al. 2019 ("Language Models are Unsupervised Multitask Learners", GPT-2): pre-norm
blocks x + Attn(LN(x)), x + FFN(LN(x)); learned position embeddings; GELU; weights drawn from
N(0, 0.02), the residual projections from N(0, 0.02 / sqrt(2 L)). The FFN can be a MoE layer
(`sparsenet.nn.moe`) in every block.

Model spec (`sparsenet train --model ...`, `build_model(spec, num_classes=vocabulary)`):

    gpt:L4-D128-H4-T64                  4 blocks, width 128, 4 heads, context 64 characters
    gpt:L4-D128-H4-T64-E8-K2            the same with 8 experts, top-2 (noisy top-k gating)
    gpt:L4-D128-H4-T64-E8-K1-switch     Switch routing (top-1), capacity factor 1.25
    options: F<hidden> (FFN hidden width; default 4 D, and 4 D / K with experts, so a token
    uses as many FFN weights as in the dense model), C<factor> (capacity factor) or dropless,
    B<weight> (balancing-loss weight: w_importance = w_load for noisy top-k, default 0.1;
    α for switch, default 0.01; B0 turns it off), P<p> (dropout, default 0).

Every weighted layer is a Linear fed 2-D (tokens, width) inputs, named blocks.<i>.attn.qkv,
blocks.<i>.attn.proj, blocks.<i>.ffn.fc1, blocks.<i>.ffn.fc2 and head, so sparsify, RigL, SR-STE
and the other methods work on it unchanged (the head is the last prunable layer: `last`).
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from .. import random
from ..tensor import Tensor
from . import functional as F
from .layers import Dropout, Linear, Sequential
from .module import Module, Parameter
from .moe import MoE

SPEC_HELP = ("'gpt:L<layers>-D<width>-H<heads>-T<context>' with optional -F<hidden>, "
             "-E<experts>-K<top-k>, -switch, -C<capacity factor> or -dropless, -B<balance>, "
             "-P<dropout>, e.g. gpt:L4-D128-H4-T64-E8-K2")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    layers: int
    width: int
    heads: int
    context: int
    hidden: int | None = None
    experts: int = 0
    k: int = 0
    router: str = "noisy_topk"
    capacity_factor: float | None = None
    balance: float | None = None
    dropout: float = 0.0

    @property
    def ffn_hidden(self) -> int:
        if self.hidden:
            return self.hidden
        return 4 * self.width // self.k if self.experts else 4 * self.width


def parse_spec(spec: str) -> GPTConfig:
    """GPTConfig of a 'gpt:...' spec (module docstring), with a clear error for a bad one."""
    if not isinstance(spec, str) or not spec.startswith("gpt:"):
        raise ValueError(f"a transformer spec looks like {SPEC_HELP}, got {spec!r}")
    fields, words = {}, set()
    for part in spec[4:].split("-"):
        match = re.fullmatch(r"([LDHTFEKCBP])(\d+(?:\.\d+)?)", part)
        if part in ("switch", "dropless"):
            words.add(part)
        elif match and match[1] not in fields:
            fields[match[1]] = float(match[2]) if match[1] in "CBP" else int(float(match[2]))
        else:
            raise ValueError(f"model spec {spec!r}: cannot read {part!r}; expected {SPEC_HELP}")
    missing = [key for key in "LDHT" if key not in fields]
    if missing:
        raise ValueError(f"model spec {spec!r} lacks {', '.join(missing)}; expected {SPEC_HELP}")
    if min(fields[key] for key in "LDHT") < 1 or fields.get("F", 1) < 1:
        raise ValueError(f"model spec {spec!r}: L, D, H, T and F must be positive")
    if fields["D"] % fields["H"]:
        raise ValueError(f"model spec {spec!r}: the width D{fields['D']} must be a multiple of "
                         f"the heads H{fields['H']}")
    if ("E" in fields) != ("K" in fields):
        raise ValueError(f"model spec {spec!r}: experts need both E<experts> and K<top-k>")
    if ("switch" in words or "dropless" in words or "C" in fields or "B" in fields) \
            and "E" not in fields:
        raise ValueError(f"model spec {spec!r}: switch, C, dropless and B are options of "
                         "mixture-of-experts layers (give E and K)")
    if "C" in fields and "dropless" in words:
        raise ValueError(f"model spec {spec!r}: give a capacity factor C or dropless, not both")
    if not 0 <= fields.get("P", 0.0) < 1:
        raise ValueError(f"model spec {spec!r}: dropout P must be in [0, 1)")
    router = "switch" if "switch" in words else "noisy_topk"
    capacity = fields.get("C", 1.25 if router == "switch" and "dropless" not in words else None)
    return GPTConfig(fields["L"], fields["D"], fields["H"], fields["T"], fields.get("F"),
                     fields.get("E", 0), fields.get("K", 0), router, capacity, fields.get("B"),
                     fields.get("P", 0.0))


class Embedding(Module):
    def __init__(self, n, width, dtype=np.float32, rng=None):
        super().__init__()
        self.weight = Parameter((random_normal((n, width), 0.02, rng)).astype(dtype))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class LayerNorm(Module):
    def __init__(self, width, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.weight = Parameter(np.ones(width, dtype))
        self.bias = Parameter(np.zeros(width, dtype))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class CausalSelfAttention(Module):
    def __init__(self, width, heads, dropout=0.0, rng=None):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = Linear(width, 3 * width, rng=rng)
        self.proj = Linear(width, width, rng=rng)

    def forward(self, x):                                                 # (B, T, D)
        b, t, d = x.shape
        qkv = self.qkv(x.reshape(b * t, d))                                # (B*T, 3D)
        qkv = qkv.reshape(b, t, 3, self.heads, d // self.heads).transpose(2, 0, 3, 1, 4)
        y = F.causal_attention(qkv[0], qkv[1], qkv[2], self.dropout, self.training)
        y = y.transpose(0, 2, 1, 3).reshape(b * t, d)                      # (B*T, D), heads joined
        return self.proj(y).reshape(b, t, d)


class FeedForward(Module):
    def __init__(self, width, hidden, rng=None):
        super().__init__()
        self.fc1 = Linear(width, hidden, rng=rng)
        self.fc2 = Linear(hidden, width, rng=rng)

    def forward(self, x):                                                 # (tokens, D)
        return self.fc2(F.gelu(self.fc1(x)))


class Block(Module):
    def __init__(self, config: GPTConfig, rng=None):
        super().__init__()
        d = config.width
        self.ln1 = LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.heads, config.dropout, rng)
        self.ln2 = LayerNorm(d)
        self.ffn = (MoE(d, config.ffn_hidden, config.experts, config.k, config.router,
                        config.capacity_factor, config.balance, rng=rng) if config.experts
                    else FeedForward(d, config.ffn_hidden, rng))
        self.drop = Dropout(config.dropout)

    def forward(self, x):                                                 # (B, T, D)
        b, t, d = x.shape
        x = x + self.drop(self.attn(self.ln1(x)))
        h = self.ffn(self.ln2(x).reshape(b * t, d)).reshape(b, t, d)
        return x + self.drop(h)


class GPT(Module):
    """Token ids (batch, time) -> next-character logits (batch, time, vocabulary)."""

    def __init__(self, config: GPTConfig, vocabulary: int, rng=None):
        super().__init__()
        rng = rng if rng is not None else random.generator()
        self.config, self.vocabulary = config, int(vocabulary)
        d = config.width
        self.tok_emb = Embedding(vocabulary, d, rng=rng)
        self.pos_emb = Embedding(config.context, d, rng=rng)
        self.drop = Dropout(config.dropout)
        self.blocks = Sequential(*[Block(config, rng) for _ in range(config.layers)])
        self.ln_f = LayerNorm(d)
        self.head = Linear(d, vocabulary, rng=rng)
        self._init_weights(rng)

    def _init_weights(self, rng):
        residual_std = 0.02 / math.sqrt(2 * self.config.layers)
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("weight", "w1") and p.ndim >= 2 and "emb" not in name:
                p.data = random_normal(p.shape, 0.02, rng).astype(p.dtype)
            if name.endswith(("attn.proj.weight", "ffn.fc2.weight", "ffn.w2")):
                p.data = random_normal(p.shape, residual_std, rng).astype(p.dtype)

    def forward(self, ids):
        ids = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"GPT: input must be integer token ids (batch, time), got "
                             f"{ids.dtype} of shape {ids.shape}")
        b, t = ids.shape
        if t > self.config.context:
            raise ValueError(f"GPT: the input has {t} positions, longer than the model's context "
                             f"of {self.config.context} (T{self.config.context} in the spec)")
        x = self.tok_emb(ids) + self.pos_emb(np.arange(t))                  # (B, T, D)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return self.head(x.reshape(b * t, -1)).reshape(b, t, self.vocabulary)

    def moe_layers(self) -> list:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, MoE)]

    def aux_loss(self):
        """The sum of the MoE layers' balancing losses of the last forward (None: none)."""
        losses = [m.aux_loss for _, m in self.moe_layers() if m.aux_loss is not None]
        return sum(losses[1:], losses[0]) if losses else None


def random_normal(shape, std, rng):
    rng = rng if rng is not None else random.generator()
    return rng.standard_normal(shape) * std


def build_gpt(spec: str, vocabulary: int, rng=None) -> GPT:
    return GPT(parse_spec(spec), vocabulary, rng)
