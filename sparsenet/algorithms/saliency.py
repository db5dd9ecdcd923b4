"""Pruning at initialization: what SNIP, GraSP, SynFlow and random pruning share.

Each of these methods scores every weight of the freshly initialized dense network, keeps the
best-scored ones, and trains what is left from the same initial values:

    S_l = score(W_l)                         # one number per weight; higher = keep
    k_l = units that layer l keeps           # scope="global": the top K of ONE ranking over the
                                             #   units of all layers, K = (1 - sparsity) * all;
                                             # scope="layer": the counts of `distribution`
    M_l = the top k_l units of S_l           # a unit is the format's: an element (csr, masked),
                                             #   a bs x bs block scored by the L2 norm of its
                                             #   scores (block), n of every m inputs (nm)
    W_l <- format.from_dense(W_l, mask=M_l)  # the initial weights at the kept positions

N:M keeps n of every m in every layer, so the sparsity and the scope play no part there: the
rule becomes "the top n scores of every group". Every layer keeps at least one unit (its best),
so a layer cannot vanish and cut the network; a layer left with very few weights (SNIP's known
*layer collapse* at high sparsity) is reported in `describe()` and by a warning.

The scores are computed on the dense model in eval mode and in float64 (the parameters are
cast for the duration and restored afterwards): GraSP's finite differences and SynFlow's
products of many weights need the precision. The batches read from the training loader do not
advance it: training starts with the epoch it would have started with anyway.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

from .. import backend, metrics
from ..nn.functional import cross_entropy
from ..nn.layers import Linear
from ..nn.sparse_layers import SparseConv2d, SparseLinear
from ..sparse import FORMATS
from ..tensor import Tensor
from .base import SparseMethod
from .common import SPARSE_TYPES, prunable_layers, rescale_to_sparse_fan_in, weight_shape
from ..sparse.distributions import layer_counts

SCOPES = ("global", "layer")
COLLAPSE_RATIO = 0.1     # a layer below 10 % of the overall density is reported as collapsed
DISCONNECTED = 0.5       # ... and one whose units are more than half without inputs, too


# ----- reading the model and the data --------------------------------------------------------
@contextlib.contextmanager
def float64_parameters(model):
    """Run the block with every parameter in float64 and the model in eval mode; restore both."""
    params, was_training = list(model.parameters()), model.training
    saved = [p.data for p in params]
    for p in params:
        p.data, p.grad = p.data.astype(np.float64), None
    model.eval()
    try:
        yield
    finally:
        for p, data in zip(params, saved):
            p.data, p.grad = data, None
        model.train(was_training)


def mask_weights(model, alive) -> None:
    """Multiply each prunable weight by its mask {layer: bool (out, in*k)} (None: no-op).

    Call inside `float64_parameters(model)`, which restores the weights afterwards.
    """
    if alive is None:
        return
    for name, layer in prunable_layers(model):
        mask = backend.to_device(alive[name].reshape(layer.weight.shape),
                                 backend.device_of(layer.weight.data))
        layer.weight.data = layer.weight.data * mask


def weight_matrices(model) -> dict:
    """{layer name: its weight as a float64 (out, in * kh * kw) NumPy array}."""
    return {name: backend.to_numpy(layer.weight.data).reshape(layer.weight.shape[0], -1)
            .astype(np.float64) for name, layer in prunable_layers(model)}


def weight_gradients(model, x, y, temperature=1.0) -> dict:
    """{layer name: dL/dW (out, in * kh * kw)} of the cross-entropy of logits / temperature.

    Call inside `float64_parameters(model)`; x is cast to float64 here.
    """
    device = backend.device_of(next(iter(model.parameters())).data)
    model.zero_grad()
    logits = model(Tensor(backend.to_device(np.asarray(x, dtype=np.float64), device)))
    if temperature != 1.0:
        logits = logits * (1.0 / temperature)
    cross_entropy(logits, backend.to_device(np.asarray(y), device)).backward()
    grads = {name: backend.to_numpy(layer.weight.grad).reshape(layer.weight.shape[0], -1).copy()
             for name, layer in prunable_layers(model)}
    model.zero_grad()
    return grads


def take_batches(loader, count):
    """The first `count` batches of the loader's next epoch, joined; the loader is rewound."""
    epoch = getattr(loader, "epoch", None)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        if len(xs) == count:
            break
    if epoch is not None:
        loader.epoch = epoch
    if not xs:
        raise ValueError("the loader gave no batch to score the weights with")
    return np.concatenate(xs), np.concatenate(ys)


# ----- from scores to kept units ----------------------------------------------------------------
class UnitRanking:
    """The units of every prunable layer in one format, and the choice of the best-scored ones."""

    def __init__(self, model, method):
        layers = prunable_layers(model)
        names = [n for n, _ in layers]
        dense = {names[0] if d == "first" else names[-1] if d == "last" else d
                 for d in method.dense_layers}
        unknown = dense - set(names)
        if unknown:
            raise ValueError(f"dense_layers names no prunable layer: {sorted(unknown)}; "
                             f"the model has {names} ('first' and 'last' may be used)")
        self.shapes = {n: (weight_shape(m)[0], int(np.prod(weight_shape(m)[1:])))
                       for n, m in layers}                       # (out, in * kh * kw)
        self.dense, self.free = dense, [n for n in names if n not in dense]
        self.scope, self.distribution = method.scope, method.distribution
        self.cls, self.options = FORMATS[method.format], method.format_options()
        self.fixed_n = method.n if method.format == "nm" else None      # n of every m
        if self.fixed_n is None:
            # one object per layer holding every unit: its unit_scores and update say what a
            # unit is in this format, so the ranking below never needs to know
            self.full = {n: self.cls.from_dense(np.zeros(self.shapes[n], np.float32),
                                                mask=np.ones(self.shapes[n], bool), **self.options)
                         for n in self.free}
            per_unit = {f.nnz // f.n_units for f in self.full.values()}
            if len(per_unit) > 1:
                raise ValueError(f"layers have units of different sizes {sorted(per_unit)}")
            self.unit_size = per_unit.pop() if per_unit else 1

    def unit_counts(self, density):
        """Units to keep: one total (scope global) or {layer: count} (scope layer)."""
        sizes = {n: int(np.prod(s)) for n, s in self.shapes.items()}
        if self.scope == "layer":
            kept = layer_counts(self.shapes, density, self.distribution, dense_layers=self.dense)
            return {n: max(1, int(round(kept[n] / self.unit_size))) for n in self.free}
        budget = int(round(density * sum(sizes.values()))) - sum(sizes[n] for n in self.dense)
        total = int(round(budget / self.unit_size))
        if total < len(self.free):
            raise ValueError(f"density {density} leaves {max(budget, 0)} weights for "
                             f"{len(self.free)} pruned layers: too few to keep one unit in each")
        return total

    def select(self, scores, density, alive=None) -> dict:
        """{layer: bool mask (out, in*k)} of the kept weights at `density`.

        scores: {layer: float array (out, in*k)}, higher = keep; alive: {layer: bool mask} of the
        weights still present (iterative pruning): a pruned weight never comes back.
        """
        for n in self.free:
            if not np.isfinite(scores[n]).all():
                raise FloatingPointError(f"the scores of layer {n!r} hold NaN or infinity")
        if self.fixed_n is not None:
            return self._select_groups(scores, density, alive)
        low = min(float(scores[n].min()) for n in self.free) if self.free else 0.0
        units = {}
        for n in self.free:
            # signed scores (GraSP) are shifted to be >= 0: no element changes rank, and a
            # block's L2 norm then grows with the scores it holds
            s = scores[n] - low if low < 0 else scores[n]
            u = self.full[n].unit_scores(self._in_order(s))
            if alive is not None:
                u = np.where(self.full[n].unit_scores(self._in_order(alive[n] * 1.0)) > 0,
                             u, -np.inf)
            units[n] = u.astype(np.float64)
        counts = self.unit_counts(density)
        if not isinstance(counts, dict):         # one ranking over all layers
            for u in units.values():
                u[np.argmax(u)] = np.inf         # every layer keeps at least its best unit
            everything = np.concatenate([units[n] for n in self.free])
            keep_all = np.zeros(everything.size, dtype=bool)
            keep_all[np.argsort(-everything, kind="stable")[:counts]] = True
            bounds = np.cumsum([0] + [units[n].size for n in self.free])
            keep = {n: keep_all[a:b] for n, a, b in zip(self.free, bounds[:-1], bounds[1:])}
        else:
            keep = {}
            for n in self.free:
                keep[n] = np.zeros(units[n].size, dtype=bool)
                keep[n][np.argsort(-units[n], kind="stable")[:counts[n]]] = True
        empty = np.zeros(0, dtype=np.int64)
        return self._in_model_order({n: self.full[n].update(~keep[n], empty, empty)[0].mask()
                                     for n in self.free})

    def _in_model_order(self, masks):
        """The masks of the pruned layers plus all-True ones for the layers kept dense."""
        return {n: masks[n] if n in masks else np.ones(self.shapes[n], bool) for n in self.shapes}

    def _in_order(self, elem):
        """Element scores (out, in*k) in the storage order of the layer's all-units object."""
        return self.cls.from_dense(np.asarray(elem, np.float64), mask=np.ones(elem.shape, bool),
                                   **self.options).values

    def _select_groups(self, scores, density, alive):
        """N:M: the top c scores of every group of m inputs, c = n at the final density (and
        round(m * density) on the way there, for SynFlow's schedule)."""
        n, m = self.fixed_n, self.options["m"]
        per_group = int(np.clip(round(m * density), n, m))
        masks = {}
        for name in self.free:
            rows, cols = self.shapes[name]
            s = np.array(scores[name], dtype=np.float64)
            if alive is not None:
                s[~alive[name]] = -np.inf
            order = np.argsort(-s.reshape(rows, cols // m, m), axis=-1, kind="stable")
            keep = np.zeros((rows, cols // m, m), dtype=bool)
            np.put_along_axis(keep, order[..., :per_group], True, axis=-1)
            masks[name] = keep.reshape(rows, cols)
        return self._in_model_order(masks)


def apply_masks(model, masks, format, options) -> None:
    """Replace each masked dense layer by its sparse twin holding the initial weights kept."""
    modules = dict(model.named_modules())
    for name, keep in masks.items():
        dense = modules[name]
        if keep.all():
            continue                         # nothing pruned: it stays an ordinary dense layer
        device = backend.device_of(dense.weight.data)
        W0 = backend.to_numpy(dense.weight.data).reshape(keep.shape)
        weight = FORMATS[format].from_dense(np.ascontiguousarray(W0), mask=keep, **options)
        bias = dense.bias is not None
        if isinstance(dense, Linear):
            sparse = SparseLinear(dense.in_features, dense.out_features, weight=weight, bias=bias)
        else:
            sparse = SparseConv2d(dense.in_channels, dense.out_channels, dense.kernel_size,
                                  dense.stride, dense.padding, weight=weight, bias=bias)
        if bias:
            sparse.bias.data = backend.to_numpy(dense.bias.data).copy()
        if device != "cpu":
            sparse.to(device)
        model.replace_submodule(name, sparse)


# ----- the method -------------------------------------------------------------------------------
class PruningAtInit(SparseMethod):
    """Score once (or a few times) at initialization, prune, then train normally.

    Subclasses define `scores(model, loader, alive=None) -> {layer: (out, in*k) array}`, the
    scores of the network masked by `alive` (None: nothing pruned yet), and add their scoring
    work with `self.count_passes`. `iterations` > 1 prunes in steps (SynFlow, iterative SNIP).
    sparse_init=True rescales the kept initial weights to each neuron's stored fan-in
    (`common.rescale_to_sparse_fan_in`, Evci et al. 2022); the papers keep them as drawn.
    """

    iterations = 1
    option_help = {
        "scope": "global: one ranking over the units of all layers | layer: the per-layer "
                 "counts of `distribution`",
        "sparse_init": "rescale the kept initial weights to each neuron's stored fan-in (Evci "
                       "et al. 2022); off: the papers keep them as drawn",
    }

    def __init__(self, sparsity=0.9, scope="global", sparse_init=False, **options):
        super().__init__(sparsity=sparsity, **options)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if not isinstance(sparse_init, bool):
            raise ValueError(f"sparse_init must be true or false, got {sparse_init!r}")
        self.scope, self.sparse_init = scope, sparse_init
        self.passes = 0.0               # forward+backward passes of one sample spent on scoring
        self.report, self._changed, self._flops = {}, False, 0.0

    def scores(self, model, loader, alive=None) -> dict:
        raise NotImplementedError

    def select_masks(self, model, loader, ranking) -> dict:
        """Score, keep the best, rescore what is left: `iterations` steps whose kept density
        falls as rho^(k/n), rho = 1 - sparsity (one step prunes to rho at once)."""
        rho, alive = 1.0 - self.sparsity, None
        for k in range(1, self.iterations + 1):
            scores = self.scores(model, loader, alive)      # on the network pruned so far
            alive = ranking.select(scores, rho ** (k / self.iterations), alive)
        return alive

    def count_passes(self, samples):
        self.passes += samples

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        if optimizer is not None:
            raise RuntimeError(f"{self.name} replaces layers in setup: call it before the "
                               "optimizer is built (optimizer=None), as sparsenet.train does")
        layers = prunable_layers(model)
        if layers[0][0] == "":
            raise ValueError(f"{self.name} needs a model that contains its layers (a Sequential), "
                             "not a bare layer")
        if any(isinstance(m, SPARSE_TYPES) for _, m in layers):
            raise ValueError(f"{self.name} prunes a dense model at initialization; this one "
                             "already has sparse layers")
        self.passes, self.report, start = 0.0, {}, time.perf_counter()
        masks = self.select_masks(model, loader, UnitRanking(model, self))
        self.report["scoring_seconds"] = time.perf_counter() - start
        shape = getattr(getattr(loader, "x", None), "shape", None)
        if shape is not None and self.passes:         # forward + backward = 3 forward FLOPs
            positions = metrics.layer_positions(model, shape[1:])
            dense_forward = metrics.forward_flops(model, positions)[1]
            self._flops = 3.0 * dense_forward * self.passes
        self.report["layers"] = self._layer_report(masks)
        apply_masks(model, masks, self.format, self.format_options())
        if self.sparse_init:             # not in the papers: Evci et al. 2022's rescaling
            rescale_to_sparse_fan_in([(n, m) for n, m in prunable_layers(model)
                                      if isinstance(m, SPARSE_TYPES)])
        self._changed = True

    def _layer_report(self, masks) -> dict:
        density = 1.0 - self.sparsity
        rows = {}
        for name, keep in masks.items():
            rows[name] = {"density": float(keep.mean()), "weights": int(keep.sum()),
                          "dead_outputs": int((~keep.any(axis=1)).sum())}
            if keep.mean() < COLLAPSE_RATIO * density:
                warnings.warn(f"{self.name}: layer {name} keeps {keep.sum()} weights "
                              f"(density {keep.mean():.2e} against {density:.2e} overall): "
                              "layer collapse", stacklevel=2)
        self.report["layer_collapse"] = [n for n, r in rows.items()
                                         if r["density"] < COLLAPSE_RATIO * density]
        # a subtler collapse: enough weights, but most output units left without any input
        # (GraSP at 95 % on lenet300 once kept 191 weights in 3 of layer "3"'s 100 units)
        self.report["disconnected"] = [n for n, keep in masks.items()
                                       if rows[n]["dead_outputs"] > DISCONNECTED * keep.shape[0]]
        for name in self.report["disconnected"]:
            warnings.warn(f"{self.name}: layer {name} leaves {rows[name]['dead_outputs']} of its "
                          f"{masks[name].shape[0]} output units without any input", stacklevel=2)
        return rows

    def extra_flops(self) -> float:
        """The scoring passes, counted once (at the first training step)."""
        flops, self._flops = self._flops, 0.0
        return flops

    def describe(self) -> dict:
        return {**super().describe(), "scope": self.scope, "sparse_init": self.sparse_init,
                "scoring_passes": self.passes,
                **self.report}
