"""From dense models to sparse ones, and sparse weights to and from plain arrays.

- `sparsify(model, ...)` swaps every Linear and Conv2d (or the ones named) for its sparse twin.
- `apply_sparse_layout(model, layout)` does the same from the `sparse_config()` dicts that
  `sparsenet.save` writes, so `sparsenet.load` can rebuild a sparse model before loading it.
- `state_arrays` / `weight_from_arrays`: a weight's index arrays by name (what a state_dict
  holds) and back, with full validation.

The layers live in `sparsenet.nn`, above this package, so they are imported inside functions.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .block import Block
from .csr import CSR
from .masked import Masked
from .nm import NM

FORMATS = {"csr": CSR, "block": Block, "nm": NM, "masked": Masked}
OPTION_NAMES = {"csr": ("constant_fan_in",), "masked": ("constant_fan_in",),
                "block": ("block_size",), "nm": ("n", "m")}


# ----- weights <-> named arrays --------------------------------------------------------------
def format_options(weight) -> dict:
    """The options that, with the shape, define a weight's structure."""
    if isinstance(weight, Block):
        return {"block_size": weight.block_size}
    if isinstance(weight, NM):
        return {"n": weight.n, "m": weight.m}
    return {"constant_fan_in": weight.constant_fan_in}


def state_arrays(weight) -> "OrderedDict[str, np.ndarray]":
    """The index arrays a state_dict holds for this weight (the values are the layer's)."""
    if isinstance(weight, (CSR, Block)):
        return OrderedDict(indptr=weight.indptr, indices=weight.indices)
    if isinstance(weight, NM):
        return OrderedDict(idx=weight.idx)
    return OrderedDict(mask=weight._mask)


def empty_weight(format, shape, dtype, options):
    """The smallest weight of `format` and `shape`: no stored unit for CSR and Block; N:M has a
    fixed count (n of every m), Masked stores every position, so theirs are zeros."""
    n_rows, n_cols = shape
    if format == "csr":
        return CSR(np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype),
                   shape, options.get("constant_fan_in", False))
    if format == "block":
        bs = options.get("block_size", 16)
        return Block(np.zeros(n_rows // max(bs, 1) + 1, np.int64), np.zeros(0, np.int32),
                     np.zeros(0, dtype), shape, bs)
    if format == "nm":
        n, m = options.get("n", 2), options.get("m", 4)
        idx = np.broadcast_to(np.arange(n, dtype=np.uint8), (n_rows, n_cols // m, n))
        return NM(np.zeros(idx.size, dtype), idx, m)
    if format == "masked":
        return Masked(np.zeros(n_rows * n_cols, dtype), np.zeros(shape, bool),
                      options.get("constant_fan_in", False))
    raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")


def weight_from_arrays(format, arrays, shape, options, copy=True):
    """A weight of `format` from its named arrays (`values` plus `state_arrays`), validated."""
    take = np.array if copy else np.asarray
    values = take(arrays["values"])
    if format == "csr":
        weight = CSR(take(arrays["indptr"]), take(arrays["indices"]), values, shape,
                     options["constant_fan_in"])
    elif format == "block":
        weight = Block(take(arrays["indptr"]), take(arrays["indices"]), values, shape,
                       options["block_size"])
    elif format == "nm":
        weight = NM(values, take(arrays["idx"]), options["m"])
        if weight.n != options["n"]:
            raise ValueError(f"idx keeps {weight.n} per group, expected n = {options['n']}")
    elif format == "masked":
        weight = Masked(values, take(arrays["mask"]), options["constant_fan_in"])
    else:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    if weight.shape != tuple(shape):
        raise ValueError(f"the arrays describe a {weight.shape} weight, expected {tuple(shape)}")
    return weight


# ----- models ----------------------------------------------------------------------------------
def _dense_layers(model):
    from ..nn.layers import Conv2d, Linear
    return [(name, m) for name, m in model.named_modules() if type(m) in (Linear, Conv2d)]


def _chosen_layers(model, layers, keep_dense):
    candidates = [name for name, _ in _dense_layers(model)]
    if not candidates:
        raise ValueError("the model has no Linear or Conv2d layer to sparsify")
    chosen = candidates if layers is None else list(layers)
    unknown = [name for name in chosen if name not in candidates]
    keep = {candidates[0] if k == "first" else candidates[-1] if k == "last" else k
            for k in keep_dense}
    unknown += [name for name in keep if name not in candidates]
    if unknown:
        raise ValueError(f"no Linear or Conv2d layer named {unknown}; the model has {candidates} "
                         "('first' and 'last' may be used in keep_dense)")
    return [name for name in chosen if name not in keep]


def sparsify(model, sparsity=None, format="csr", layers=None, density_per_layer=None,
             keep_dense=(), from_dense=True, rng=None, **format_options):
    """Replace Linear and Conv2d layers by SparseLinear and SparseConv2d, in place; returns model.

    sparsity: for every chosen layer (default 0.9; NM takes n/m); density_per_layer
    {name: density} overrides it per layer (how ERK sets its densities). layers: names to
    sparsify (default all); keep_dense: names (or 'first', 'last') to leave dense.
    from_dense=True (the default) keeps the largest-magnitude weights of each layer, as
    `CSR.from_dense` does: what a trained model wants. from_dense=False draws a uniformly random
    pattern instead (the kept weights keep their values): what sparse training from scratch
    wants, and what the dynamic sparse methods ask for on their freshly initialized models.
    format_options: block_size (block), n and m (nm), constant_fan_in (csr, masked).
    """
    from .. import backend, random
    from ..nn.module import Module
    from ..nn.sparse_layers import resolve_density, sparse_like
    from .topology import random_pattern
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    extra = set(format_options) - set(OPTION_NAMES[format])
    if extra:
        raise TypeError(f"format {format!r} takes the options {OPTION_NAMES[format]}, "
                        f"got {sorted(extra)}")
    n, m = format_options.get("n", 2), format_options.get("m", 4)
    chosen = _chosen_layers(model, layers, keep_dense)
    densities = dict(density_per_layer or {})
    stray = set(densities) - set(chosen)
    if stray:
        raise ValueError(f"density_per_layer names layers that are not sparsified: {sorted(stray)}")
    rng = rng if rng is not None else random.generator()
    modules = dict(model.named_modules())
    for name in chosen:
        dense = modules[name]
        density = resolve_density(format, sparsity if name not in densities else None,
                                  densities.get(name), n, m)
        device = backend.device_of(dense.weight.data)     # the pattern is chosen on the host
        matrix = backend.to_numpy(dense.weight.data).reshape(dense.weight.shape[0], -1)
        if from_dense:
            weight = FORMATS[format].from_dense(matrix, density=density, **format_options)
        else:
            pattern = random_pattern(format, matrix.shape, density, rng, matrix.dtype,
                                     **format_options)
            rows, cols = pattern.coords()
            kept = matrix[rows, cols]
            if format == "masked":
                kept = kept * pattern.mask().ravel()
            weight = pattern.with_values(np.ascontiguousarray(kept))
        sparse = sparse_like(dense, weight)
        if device != "cpu":
            sparse.to(device)
        if name == "":
            return sparse                    # the model itself was one layer
        model.replace_submodule(name, sparse)
    return model


def apply_sparse_layout(model, layout: dict):
    """Swap in sparse layers described by `sparse_config()` dicts {layer name: config}."""
    from ..nn.sparse_layers import SparseConv2d, SparseLinear
    kinds = {"linear": SparseLinear, "conv2d": SparseConv2d}
    for name, config in layout.items():
        if config.get("kind") not in kinds:
            raise ValueError(f"layout entry {name!r} has kind {config.get('kind')!r}, "
                             f"expected one of {sorted(kinds)}")
        sparse = kinds[config["kind"]].from_config(config)
        old = model.get_submodule(name)
        old_shape = getattr(old, "weight_shape", None) or \
            tuple(old.weight.shape[:1]) + (int(np.prod(old.weight.shape[1:])),)
        if tuple(old_shape) != sparse.weight_shape:
            raise ValueError(f"layout entry {name!r} describes a {sparse.weight_shape} weight, "
                             f"the model's layer has {tuple(old_shape)}")
        model.replace_submodule(name, sparse)
    return model
