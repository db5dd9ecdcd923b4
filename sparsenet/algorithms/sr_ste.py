"""SR-STE: N:M structured sparsity trained from scratch with the sparse-refined STE.

Zhou, Ma, Zhu, Liu, Zhang, Yuan, Sun & Li, 2021, "Learning N:M Fine-grained Structured Sparse
Neural Networks From Scratch", ICLR 2021 (reference code: aojunzz/NM-sparsity,
devkit/sparse_ops/sparse_ops.py, class `Sparse`).

Rule (Section 4, Eq. 6), in every chosen layer, which keeps its dense weight W:

    E      = mask of the N largest |W| in every group of M consecutive inputs of a row,
             recomputed from the current W at every forward pass
    W̃      = E ⊙ W                                        what the forward pass uses
    ∂L/∂W  ← ∂L/∂W̃ + λ_W · (1 − E) ⊙ W                     the straight-through gradient, plus
                                                            the sparse-refined term
    W      ← W − γ · ∂L/∂W                                  (by the run's optimizer)

The straight-through part lets a pruned weight keep learning, so the mask can change; the
λ_W term decays the pruned weights only, so the mask settles instead of flipping between
near-equal weights (the paper's "sparse architecture divergence"). The reference applies it
in the backward of the masking function, exactly as here; the optimizer's own weight decay
still acts on every weight.

Defaults and sources: N:M = 2:4 (the paper's main setting, what NVIDIA's sparse tensor cores
run); λ_W = 2e-4 (the reference code's default, `decay = 0.0002` in `Sparse.forward`).
Groups are M consecutive inputs of a row of the (out, in · kh · kw) weight, the engine's N:M
format, so the trained pattern is exactly an `NM` weight; the reference groups a convolution's
inputs by channel at each kernel position (NHWC), which is the same for linear layers. Ties
go to the lower input. A layer whose inputs are not a multiple of M cannot be N:M: keep it
dense with `dense_layers` (e.g. the 9- or 25-input first convolution of a convnet).

`layers`: which Linear/Conv2d layers become N:M: "all", or fnmatch patterns of names
("*ffn*": a transformer's feed-forward layers); `dense_layers` then exempts names ('first',
'last'). After the last step each chosen layer is replaced by what it computes, W̃ as an NM
SparseLinear/SparseConv2d, so the trained model evaluates, saves and counts as a 2:4 model.
Training FLOPs: forward and input gradient use W̃ (N/M of dense), the weight gradient is dense
(the STE needs it everywhere): `extra_flops` adds 2 · (dense − kept) · columns per layer and
step. The record counts how often the mask changed (`mask_changes`).
"""
from __future__ import annotations

import fnmatch

import numpy as np

from .. import backend
from ..nn import functional as F
from ..nn.layers import Conv2d, Linear
from ..nn.module import Module
from ..nn.sparse_layers import sparse_like
from ..sparse import NM
from ..sparse.base import top_k_per_row_mask
from ..tensor import Function
from .base import SparseMethod, register
from .common import prunable_layers
from .dst import check_positive_int, resolve_layer_names


def nm_mask(w, n, m):
    """The N largest |w| of every M consecutive inputs of each row; w (out, in[, kh, kw]).
    Ties go to the lower input. By ranks (how many of the group beat each entry): M² vector
    comparisons, cheaper than a sort for the small M of N:M."""
    xp = backend.array_module(w)
    groups = xp.abs(w).reshape(w.shape[0], -1, m)                       # (out, in / M, M)
    rank = xp.zeros(groups.shape, dtype=np.int16)
    for i in range(m):
        for j in range(m):
            if j != i:   # j beats i: larger, or equal and earlier
                beats = groups[..., j] > groups[..., i] if j > i else groups[..., j] >= groups[..., i]
                rank[..., i] += beats
    return (rank < n).reshape(w.shape)


class SparseRefinedSTE(Function):
    """W̃ = E ⊙ W forward; ∂L/∂W = ∂L/∂W̃ + λ_W (1 − E) ⊙ W backward."""

    def forward(self, w, n=2, m=4, decay=2e-4):
        self.mask = nm_mask(w, n, m)
        self.w, self.decay = w, w.dtype.type(decay)
        return w * self.mask

    def backward(self, g):
        return (g + self.decay * ~self.mask * self.w,)


class _SRSTELayer:
    """What SRSTELinear and SRSTEConv2d add to their dense layer: N, M, λ_W and the mask."""

    format = "nm"

    def _adopt(self, layer, n, m, decay):
        Module.__init__(self)
        object.__setattr__(self, "training", layer.training)
        for key, value in vars(layer).items():
            if key not in ("_parameters", "_modules", "_buffers", "training"):
                setattr(self, key, value)
        self.n, self.m, self.decay = n, m, decay
        self.columns = 0                         # output columns of the last training forward
        self.used_mask = None                    # the mask of the last training forward

    @property
    def mask(self) -> np.ndarray:
        """The N:M mask the next forward will use (what FLOPs and the record count)."""
        return backend.to_numpy(nm_mask(self.weight.data, self.n, self.m))

    def effective_weight(self):
        w_tilde = SparseRefinedSTE.apply(self.weight, n=self.n, m=self.m, decay=self.decay)
        if self.training:                        # the mask this step used, for the record
            self.used_mask = w_tilde._ctx.mask if w_tilde._ctx is not None else None
        return w_tilde

    def as_sparse(self):
        """W̃ as an NM SparseLinear/SparseConv2d (the trained model)."""
        w = backend.to_numpy(self.weight.data)
        matrix = np.ascontiguousarray(w.reshape(w.shape[0], -1))            # (out, in·kh·kw)
        weight = NM.from_dense(matrix, mask=nm_mask(matrix, self.n, self.m), n=self.n, m=self.m)
        return sparse_like(self, weight)


class SRSTELinear(_SRSTELayer, Linear):
    def __init__(self, layer: Linear, n, m, decay):
        self._adopt(layer, n, m, decay)

    def forward(self, x):
        self.columns = int(np.prod(x.shape[:-1])) if self.training else self.columns
        return F.linear(x, self.effective_weight(), self.bias)


class SRSTEConv2d(_SRSTELayer, Conv2d):
    def __init__(self, layer: Conv2d, n, m, decay):
        self._adopt(layer, n, m, decay)

    def forward(self, x):
        y = F.conv2d(x, self.effective_weight(), self.bias, stride=self.stride,
                     padding=self.padding)
        self.columns = y.shape[0] * y.shape[2] * y.shape[3] if self.training else self.columns
        return y


@register("sr_ste")
class SRSTE(SparseMethod):
    """N:M from scratch: masked forward, straight-through backward, decay of pruned weights."""
    option_help = {
        "sparsity": "left out (0): 1 - n/m, all N:M allows; any other value must equal it",
        "n": "N, weights kept in every group of M consecutive inputs (SR-STE paper: 2)",
        "m": "M, the group size (SR-STE paper: 4; 2:4 is what sparse tensor cores run)",
        "decay": "λ_W, the sparse-refined decay of the pruned weights (reference code "
                 "aojunzz/NM-sparsity, `decay = 0.0002`)",
        "layers": "which Linear/Conv2d layers become N:M: \"all\" or fnmatch patterns of names "
                  "(\"*ffn*\": a transformer's feed-forward layers)",
        "format": "must be nm: the trained layers become NM sparse layers",
        "block_size": "unused (sr_ste is N:M only); kept for the common signature",
        "distribution": "unused (every chosen layer is at n/m); kept for the common signature",
    }

    def __init__(self, sparsity=0.0, n=2, m=4, decay=2e-4, layers="all", dense_layers=(),
                 format="nm", block_size=16, distribution="erk"):
        if format != "nm":
            raise ValueError(f"sr_ste trains N:M sparsity: format must be 'nm', got {format!r}")
        super().__init__(1 - n / m if sparsity == 0 else sparsity, format, block_size, n, m,
                         distribution, dense_layers)
        if abs(self.sparsity - (1 - n / m)) > 1e-9:
            raise ValueError(f"sparsity={sparsity} cannot be N:M with n={n}, m={m}: N:M keeps "
                             f"n/m of every group, so sparsity must be {1 - n / m} (or left out)")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0:
            raise ValueError(f"decay (λ_W) must be a number >= 0, got {decay!r}")
        patterns = [layers] if isinstance(layers, str) else list(layers)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"layers must be 'all' or name patterns, got {layers!r}")
        self.decay, self.patterns = float(decay), patterns

    def chosen_layers(self, model):
        layers = prunable_layers(model)
        if any(not isinstance(layer, (Linear, Conv2d)) for _, layer in layers):
            raise ValueError("sr_ste trains dense Linear/Conv2d layers with N:M masks; the model "
                             "already has sparse layers")
        keep = resolve_layer_names(model, self.dense_layers)
        chosen = [(name, layer) for name, layer in layers if name not in keep and (
            self.patterns == ["all"] or any(fnmatch.fnmatch(name, p) for p in self.patterns))]
        if not chosen:
            raise ValueError(f"no layer matches layers={self.patterns} outside dense_layers="
                             f"{list(self.dense_layers)}; the model has {[n for n, _ in layers]}")
        for name, layer in chosen:
            fan_in = int(np.prod(layer.weight.shape[1:]))
            if fan_in % self.m:
                raise ValueError(f"layer {name!r} has {fan_in} inputs per output, not a multiple "
                                 f"of m = {self.m}: it cannot be {self.n}:{self.m}; keep it dense "
                                 f"with --opt dense_layers={name} (or 'first')")
        return chosen

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.total_steps = check_positive_int(total_steps, "total_steps")
        self.layers = []
        for name, layer in self.chosen_layers(model):
            kind = SRSTEConv2d if isinstance(layer, Conv2d) else SRSTELinear
            wrapped = kind(layer, self.n, self.m, self.decay)
            model.replace_submodule(name, wrapped)
            self.layers.append((name, wrapped))
        self._masks = {name: None for name, _ in self.layers}
        self.mask_changes, self._extra, self._changed = [], 0.0, True

    def after_step(self, step):
        changed = kept = 0
        for name, layer in self.layers:
            dense = layer.weight.size
            self._extra += 2.0 * (dense - dense * self.n // self.m) * layer.columns
            mask, before = layer.used_mask, self._masks[name]
            if mask is not None and before is not None:
                changed += int((mask & ~before).sum())
                kept += int(mask.sum())
            self._masks[name] = mask
        if kept:                                 # kept weights that were pruned a step before
            self.mask_changes.append(changed / kept)
        if step + 1 == self.total_steps:
            for name, layer in self.layers:
                self.model.replace_submodule(name, layer.as_sparse())
            self._changed = True

    def describe(self) -> dict:
        out = {"format": "nm", "n": self.n, "m": self.m, "decay": self.decay,
               "layers": self.patterns, "dense_layers": list(self.dense_layers)}
        if hasattr(self, "layers"):
            changes = np.asarray(self.mask_changes)
            tenth = max(1, len(changes) // 10)
            out.update(sparse_layers=[name for name, _ in self.layers],
                       mask_changes={"first_tenth": float(changes[:tenth].mean()),
                                     "last_tenth": float(changes[-tenth:].mean()),
                                     "final": float(changes[-1])} if changes.size else {})
        return out
