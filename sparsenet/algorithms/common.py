"""What every method needs from a model, written once so the algorithm files stay short.

- `prunable_layers(model)`: the weighted layers (Linear, Conv2d and their sparse twins).
- `sparsify_model(model, sparsity, distribution="erk", format=...)`: replace the dense layers by
  sparse ones whose densities follow a layer distribution (uniform, ER, ERK).
- `lowest_units(scores, count, groups)`: which stored units to drop (the `count` lowest scores,
  or so many per constraint group), the same choice whatever the format.
- `change_topology(layer, drop, rows, cols, optimizer)`: one call that updates a layer's
  topology and carries the optimizer state across (see `sparsenet.optim`).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..nn.layers import Conv2d, Linear
from ..nn.sparse_layers import SparseConv2d, SparseLinear
from ..sparse import sparsify
from ..sparse.distributions import layer_counts

DENSE_TYPES = (Linear, Conv2d)
SPARSE_TYPES = (SparseLinear, SparseConv2d)


def prunable_layers(model, sparse_only=False) -> list:
    """[(name, layer)] of the weighted layers in model order."""
    types = SPARSE_TYPES if sparse_only else DENSE_TYPES + SPARSE_TYPES
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, types)]
    if not layers:
        kind = "sparse layer (SparseLinear, SparseConv2d)" if sparse_only else "Linear or Conv2d layer"
        raise ValueError(f"the model has no {kind}: nothing to prune")
    return layers


def weight_shape(layer) -> tuple:
    """The dense shape of a layer's weight: (out, in) or (out, in, kh, kw)."""
    if isinstance(layer, DENSE_TYPES):
        return tuple(layer.weight.shape)
    if isinstance(layer, SparseConv2d):
        return (layer.out_channels, layer.in_channels, *layer.kernel_size)
    return tuple(layer.weight_shape)


def layer_densities(model, sparsity, distribution="erk", dense_layers=()) -> dict:
    """{layer name: density} for the prunable layers, with exact total (distributions.py)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    layers = prunable_layers(model)
    names = [n for n, _ in layers]
    dense_layers = [names[0] if d == "first" else names[-1] if d == "last" else d
                    for d in dense_layers]
    shapes = {n: weight_shape(m) for n, m in layers}
    counts = layer_counts(shapes, 1.0 - sparsity, distribution, dense_layers=dense_layers)
    return {n: counts[n] / int(np.prod(shapes[n])) for n in names}


def sparsify_model(model, sparsity, format="csr", distribution="erk", dense_layers=(),
                   from_dense=False, rng=None, **format_options):
    """Replace the dense layers by sparse twins at densities from `distribution`, in place.

    Layers that the distribution makes dense (density 1) stay ordinary dense layers. For the
    N:M format the density is n/m in every layer and `sparsity` is ignored.
    """
    if format == "nm":
        return sparsify(model, format="nm", from_dense=from_dense, rng=rng,
                        keep_dense=dense_layers, **format_options)
    densities = layer_densities(model, sparsity, distribution, dense_layers)
    keep = [n for n, d in densities.items() if d >= 1.0]
    chosen = {n: d for n, d in densities.items() if d < 1.0}
    if not chosen:
        return model
    return sparsify(model, format=format, density_per_layer=chosen, layers=list(chosen),
                    from_dense=from_dense, rng=rng, keep_dense=keep, **format_options)


def lowest_units(scores, count, groups=None) -> np.ndarray:
    """Boolean mask over units: the `count` lowest scores (ties: the lower unit index).

    With `groups` (the constraint group of each unit) and `count` an array with one number per
    group, the lowest count[g] of each group g are chosen instead.
    """
    scores = np.asarray(scores, dtype=np.float64)
    drop = np.zeros(scores.size, dtype=bool)
    if np.ndim(count) == 0:
        count = int(count)
        if not 0 <= count <= scores.size:
            raise ValueError(f"count must be in [0, {scores.size}], got {count}")
        drop[np.argsort(scores, kind="stable")[:count]] = True
        return drop
    count = np.asarray(count, dtype=np.int64)
    order = np.lexsort((np.arange(scores.size), scores, groups))     # by group, then score
    sorted_groups = groups[order]
    rank = np.arange(order.size) - np.searchsorted(sorted_groups, sorted_groups, side="left")
    drop[order[rank < count[sorted_groups]]] = True
    return drop


def units_per_group(layer) -> np.ndarray:
    """Number of stored units in each constraint group of a sparse layer."""
    w = layer.weight
    return np.bincount(w.unit_groups(), minlength=w.n_groups)


def change_topology(layer, drop, grow_rows=None, grow_cols=None, optimizer=None, grow_values=None):
    """Drop units (bool mask) and grow units at coordinates; optimizer state follows."""
    empty = np.zeros(0, dtype=np.int64)
    new, new_from_old = layer.weight.update(drop, empty if grow_rows is None else grow_rows,
                                            empty if grow_cols is None else grow_cols, grow_values)
    layer.set_topology(new, new_from_old, optimizer)
    return new_from_old


def rescale_to_sparse_fan_in(layers):
    """Scale each neuron's initial weights by sqrt(dense fan-in / stored fan-in), so a sparse
    neuron starts with the output variance the dense initialization meant (Evci et al. 2022,
    "Gradient Flow in Sparse Neural Networks and How Lottery Tickets Win"). SRigL's reference
    code has a sparse initialization too, on by default, but its default variant draws
    σ = 2 / fan_in rather than this Kaiming σ ∝ 1 / √fan_in (see srigl.py)."""
    for _, layer in layers:
        w = layer.weight
        fan_in = np.bincount(w.active()[0], minlength=w.shape[0])       # stored inputs per row
        scale = np.sqrt(w.shape[1] / np.maximum(fan_in, 1))
        rows, _ = w.coords()                                            # aligned with values
        values = layer.values.data
        values *= backend.array_module(values).asarray(scale[rows].astype(values.dtype))
