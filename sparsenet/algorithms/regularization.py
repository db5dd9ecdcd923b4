"""Sparsity regularization: an L1 or group-lasso penalty added to the weight gradients.

Papers
- L1 (the lasso; Tibshirani 1996) on network weights, as a step before pruning: Han, Pool,
  Tran & Dally (2015), "Learning both Weights and Connections for Efficient Neural Networks",
  Section 3.1 (L1 leaves more weights near zero, so pruning them costs less accuracy).
- Group lasso (Yuan & Lin 2006) on network structures: Wen, Wu, Wang, Chen & Li (2016),
  "Learning Structured Sparsity in Deep Neural Networks" (SSL), Eq. 1-2: the penalty is the
  plain sum of the groups' L2 norms (no sqrt(group size) weight), groups being filters or
  neurons (rows here), channels or inputs (columns), or other shapes (blocks here).

The rule
    R(W) = lambda_1 * sum_w |w|  +  lambda_g * sum_g ||w_g||_2
    dR/dw = lambda_1 * sign(w)  +  lambda_g * w / ||w_g||_2        (0 where w_g = 0: a subgradient)
  `regularize(model, l1=..., group_lasso=...)` adds dR/dw to every weight gradient; call it
  after loss.backward() and before optimizer.step() (a method's `after_backward` hook). It
  returns R(W) for logging. The penalty never enters the autograd graph: one pass over the
  weights per step. Biases are not penalized (Wen et al. penalize weights only).

Groups of a layer's weight seen as a matrix (out, in * kh * kw):
  rows    = one output neuron or filter (everything that feeds it),
  columns = one input neuron or input channel (all kh*kw positions of it, for all filters),
  blocks  = block_size x block_size tiles (the unit of the Block format).
Sparse layers are penalized on their stored `values` (any format: the groups come from the
stored coordinates, `weight.coords()`), dense ones on the whole weight.

Also here: the method `regularized` (dense training with the penalty, then the groups whose
norm is at most `threshold` are removed, or the lowest ones down to a target `sparsity`).
Defaults: none for the strengths (lambda depends on loss scale, learning rate and epochs, so
`regularized` asks for one: --opt l1=... or --opt group_lasso=...); groups="rows" (SSL's
filter-wise groups); block_size=16 (the Block format's default).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import backend
from ..nn.sparse_layers import SparseConv2d, SparseLinear, sparse_like
from ..sparse.convert import FORMATS
from .base import SparseMethod, register
from .common import layer_densities, prunable_layers, weight_shape

GROUPS = ("rows", "columns", "blocks")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_options(l1=0.0, group_lasso=0.0, groups="rows", block_size=16):
    """Raise a clear error for a bad strength, group kind or block size."""
    for name, value in (("l1", l1), ("group_lasso", group_lasso)):
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {GROUPS}, got {groups!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")


@functools.lru_cache(maxsize=64)
def _dense_coords(n_rows, n_cols):
    """(rows, cols) of every entry of a dense (n_rows, n_cols) matrix, row-major (cached)."""
    rows, cols = np.divmod(np.arange(n_rows * n_cols, dtype=np.int64), n_cols)
    return rows, cols


def layer_entries(layer):
    """(weight Parameter, rows, cols, kernel area) of a layer's trainable weight entries.

    The Parameter is `layer.weight` (dense) or `layer.values` (sparse); rows/cols place each of
    its entries (flattened) in the (out, in * kh * kw) matrix.
    """
    shape = weight_shape(layer)
    area = int(np.prod(shape[2:])) if len(shape) == 4 else \
        int(np.prod(layer.kernel_size)) if isinstance(layer, SparseConv2d) else 1
    if isinstance(layer, (SparseLinear, SparseConv2d)):
        rows, cols = layer.weight.coords()
        return layer.values, rows, cols, area
    rows, cols = _dense_coords(shape[0], int(np.prod(shape[1:])))
    return layer.weight, rows, cols, area


def group_ids(layer, groups="rows", block_size=16):
    """(group of each weight entry, number of groups) for `layer`."""
    _, rows, cols, area = layer_entries(layer)
    n_rows, n_cols = weight_shape(layer)[0], int(np.prod(weight_shape(layer)[1:]))
    if groups == "rows":
        return rows, n_rows
    if groups == "columns":                     # an input channel: its kh*kw columns together
        return cols // area, n_cols // area
    block_cols = -(-n_cols // block_size)
    return (rows // block_size) * block_cols + cols // block_size, \
        -(-n_rows // block_size) * block_cols


def group_norms(layer, groups="rows", block_size=16):
    """||w_g||_2 of every group of `layer` (NumPy, float64)."""
    param, _, _, _ = layer_entries(layer)
    ids, n = group_ids(layer, groups, block_size)
    w = backend.to_numpy(param.data).ravel().astype(np.float64)
    return np.sqrt(np.bincount(ids, w * w, minlength=n))


def _chosen(model, layers):
    named = prunable_layers(model)
    if layers is None:
        return named
    unknown = set(layers) - {n for n, _ in named}
    if unknown:
        raise ValueError(f"layers names {sorted(unknown)}, not weighted layers of the model "
                         f"({[n for n, _ in named]})")
    return [(n, m) for n, m in named if n in layers]


def regularize(model, l1=0.0, group_lasso=0.0, groups="rows", block_size=16, layers=None,
               add_gradient=True) -> float:
    """Add lambda_1 sign(w) + lambda_g w / ||w_g|| to the weight gradients; return R(W).

    layers: names of the weighted layers to penalize (default: all). add_gradient=False only
    computes the penalty value (what the gradient check differentiates).
    """
    check_options(l1, group_lasso, groups, block_size)
    total = 0.0
    if l1 == 0 and group_lasso == 0:
        return total
    for _, layer in _chosen(model, layers):
        param = layer_entries(layer)[0]
        xp = backend.array_module(param.data)
        w = param.data.reshape(-1)                                   # a view of the weights
        extra = xp.zeros(w.shape, dtype=np.float64)
        if l1:
            total += l1 * float(xp.abs(w).sum())
            extra += l1 * xp.sign(w)
        if group_lasso:
            ids, n = group_ids(layer, groups, block_size)
            ids = xp.asarray(ids)
            norms = xp.sqrt(xp.bincount(ids, weights=(w * w).astype(np.float64), minlength=n))
            total += group_lasso * float(norms.sum())
            per_entry = norms[ids]
            # w / ||w_g||, and 0 for an all-zero group (the subgradient that keeps it at zero)
            extra += group_lasso * w / xp.where(per_entry > 0, per_entry, 1.0)
        if add_gradient:
            if param.grad is None:
                param.grad = xp.zeros_like(param.data)
            param.grad += extra.astype(param.dtype).reshape(param.shape)
    return total


def penalty(model, **options) -> float:
    """R(W) without touching any gradient (same options as `regularize`)."""
    return regularize(model, add_gradient=False, **options)


# ----- the method ----------------------------------------------------------------------------
@register("regularized")
class Regularized(SparseMethod):
    """Dense training with an L1 and/or group-lasso penalty; then, optionally, remove groups.

    At the end of training the groups (single weights when only l1 is on) whose L2 norm is at
    most `threshold` are removed, or, with `sparsity` > 0, the lowest-norm groups of each layer
    until the layer keeps its share of weights (`distribution`, uniform by default). The
    layers that lose weights are stored in `format` (csr by default; the format checks that the
    removed groups fit its structure). threshold = sparsity = 0: nothing is removed, and the
    record reports how many groups ended near zero.
    """

    option_help = {
        "sparsity": "remove the lowest-norm groups until each layer keeps its share; 0: the "
                    "threshold decides (default 0)",
        "l1": "λ of the L1 penalty λ·Σ|w| (Han et al. 2015)",
        "group_lasso": "λ of the group-lasso penalty λ·Σ‖w_g‖₂ (Wen et al. 2016)",
        "groups": "rows | columns | blocks: the groups of the group lasso",
        "threshold": "remove the groups whose L2 norm is at most this after training",
        "format": "csr | masked, or block with groups='blocks'",
        "distribution": "uniform (default) | er | erk: the per-layer shares with sparsity",
    }

    def __init__(self, sparsity=0.0, l1=0.0, group_lasso=0.0, groups="rows", threshold=0.0,
                 format="csr", block_size=16, n=2, m=4, distribution="uniform", dense_layers=()):
        super().__init__(sparsity, format, block_size, n, m, distribution, dense_layers)
        check_options(l1, group_lasso, groups, block_size)
        if l1 == 0 and group_lasso == 0:
            raise ValueError("regularized needs l1 > 0 or group_lasso > 0 "
                             "(e.g. --opt group_lasso=1e-3)")
        if not _is_number(threshold) or not threshold >= 0:
            raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
        if threshold > 0 and sparsity > 0:
            raise ValueError("give threshold or sparsity, not both: each decides what is removed")
        self.l1, self.group_lasso, self.groups, self.threshold = l1, group_lasso, groups, threshold
        # what is removed at the end: the penalty's groups, or single weights under L1 alone
        self.unit = groups if group_lasso > 0 else "elements"
        if format == "nm" or (format == "block" and self.unit != "blocks"):
            raise ValueError(f"format {format!r} cannot hold what regularized removes "
                             f"({self.unit}): use csr or masked, or block with groups='blocks'")
        self.last_penalty, self.removed = 0.0, {}

    def after_backward(self, step):
        self.last_penalty = regularize(self.model, self.l1, self.group_lasso, self.groups,
                                       self.block_size)

    def _unit_norms(self, layer):
        if self.unit == "elements":
            w = backend.to_numpy(layer_entries(layer)[0].data).ravel().astype(np.float64)
            return np.abs(w), np.arange(w.size), w.size
        ids, n = group_ids(layer, self.unit, self.block_size)
        return group_norms(layer, self.unit, self.block_size), ids, n

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.epochs = total_steps // max(len(loader), 1)     # the loop gives epochs * batches

    def after_epoch(self, epoch):
        if epoch == self.epochs:                  # the end of training: remove small groups
            self._remove_groups()

    def _remove_groups(self):
        densities = layer_densities(self.model, self.sparsity, self.distribution,
                                    self.dense_layers) if self.sparsity > 0 else {}
        self.near_zero = {}
        for name, layer in prunable_layers(self.model):
            norms, ids, n_units = self._unit_norms(layer)
            self.near_zero[name] = float((norms <= 1e-3 * max(norms.max(), 1e-30)).mean())
            if self.threshold > 0:
                drop = norms <= self.threshold
            elif self.sparsity > 0:
                drop = self._lowest_groups(norms, np.bincount(ids, minlength=n_units),
                                           densities[name])
            else:
                continue
            if drop.any():
                self._store_sparse(name, layer, ~drop[ids])
                self.removed[name] = int(drop.sum())

    @staticmethod
    def _lowest_groups(norms, sizes, density):
        """Drop the lowest-norm groups; keep the highest until >= density of weights remain."""
        order = np.argsort(-norms, kind="stable")                    # largest norm first
        kept_before = np.cumsum(sizes[order]) - sizes[order]
        keep = np.zeros(norms.size, dtype=bool)
        keep[order[kept_before < density * sizes.sum()]] = True
        return ~keep

    def _store_sparse(self, name, layer, keep_entries):
        """Replace the dense layer by its sparse twin holding only the kept entries."""
        if isinstance(layer, (SparseLinear, SparseConv2d)):
            raise ValueError(f"layer {name!r} is already sparse: regularized removes groups of "
                             "dense layers only")
        shape = weight_shape(layer)
        matrix = backend.to_numpy(layer.weight.data).reshape(shape[0], -1)
        mask = keep_entries.reshape(matrix.shape)
        weight = FORMATS[self.format].from_dense(matrix, mask=mask, **self.format_options())
        self.model.replace_submodule(name, sparse_like(layer, weight))
        self._changed = True

    def describe(self):
        return {**super().describe(), "l1": self.l1, "group_lasso": self.group_lasso,
                "groups": self.groups, "threshold": self.threshold, "removed_unit": self.unit,
                "units_removed_per_layer": self.removed, "last_penalty": self.last_penalty,
                "fraction_near_zero": getattr(self, "near_zero", {})}
