"""Models by name, as the papers define them (for 28x28 grey images, 10 classes by default).

- `lenet300`: LeNet-300-100, fully connected 784-300-100-10 (LeCun et al. 1998; the network of
  Han et al. 2015 and Frankle & Carbin 2019).
- `lenet5`: Caffe's LeNet-5: conv 20@5x5, pool 2, conv 50@5x5, pool 2, fc 500, fc 10.
- `conv2`, `conv4`, `conv6`: the Lottery Ticket paper's VGG-like convnets (Frankle & Carbin 2019,
  Figure 2): 3x3 convolutions with 64, 64 | 128, 128 | 256, 256 filters, a 2x2 max-pool after
  each pair, then fully connected 256-256-10.
- `mlp:784-4096-4096-10`: any stack of fully connected layers with ReLU between them.

A model is first described (`architecture`: a list of layer descriptions, no weights), then
built. That order is what lets `build_model` make a sparse model without ever allocating its
dense weights: given densities per layer (`density_per_layer`, or a `sparsity` shared by a
layer distribution, or SET's `epsilon`), each weighted layer is built directly as a sparse
layer whose pattern is sampled and whose values are drawn in O(nnz). A million-neuron network
(`mlp:784-333334-333334-333334-10`, 3.6e11 dense weights) builds in a few hundred megabytes.
"""
from __future__ import annotations

import numpy as np

from ..sparse.distributions import er_density, layer_densities
from .layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from .memory import check_fits

NAMED = ("lenet300", "lenet5", "conv2", "conv4", "conv6")


def _mlp(sizes):
    layers = [("flatten",)]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(("linear", n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(("relu",))
    return layers


def _lenet5(in_channels, image_size, num_classes):
    side = ((image_size - 4) // 2 - 4) // 2
    return [("conv", in_channels, 20, 5, 1, 0), ("maxpool", 2), ("conv", 20, 50, 5, 1, 0),
            ("maxpool", 2), ("flatten",), ("linear", 50 * side * side, 500), ("relu",),
            ("linear", 500, num_classes)]


def _lottery_convnet(n_pairs, in_channels, image_size, num_classes):
    layers, channels, side = [], in_channels, image_size
    for width in (64, 128, 256)[:n_pairs]:
        layers += [("conv", channels, width, 3, 1, 1), ("relu",), ("conv", width, width, 3, 1, 1),
                   ("relu",), ("maxpool", 2)]
        channels, side = width, side // 2
    return layers + [("flatten",), ("linear", channels * side * side, 256), ("relu",),
                     ("linear", 256, 256), ("relu",), ("linear", 256, num_classes)]


def architecture(spec: str, input_shape=(1, 28, 28), num_classes=10) -> list:
    """The layers of model `spec`, in order, as descriptions: ("linear", in, out), ("conv", in,
    out, kernel, stride, padding), ("relu",), ("maxpool", size), ("flatten",). No weights."""
    if not isinstance(spec, str):
        raise TypeError(f"model spec must be a string, got {type(spec).__name__}")
    channels, height, width = input_shape
    if spec == "lenet300":
        return _mlp([channels * height * width, 300, 100, num_classes])
    if spec == "lenet5":
        return _lenet5(channels, height, num_classes)
    if spec in ("conv2", "conv4", "conv6"):
        return _lottery_convnet(int(spec[-1]) // 2, channels, height, num_classes)
    if spec.startswith("mlp:"):
        try:
            sizes = [int(s) for s in spec[4:].split("-")]
        except ValueError:
            raise ValueError(f"mlp spec must look like 'mlp:784-300-10', got {spec!r}") from None
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ValueError(f"mlp spec needs at least two positive sizes, got {spec!r}")
        if sizes[0] != channels * height * width:
            raise ValueError(f"mlp spec {spec!r} starts with {sizes[0]} inputs but the data has "
                             f"{channels * height * width}")
        return _mlp(sizes)
    raise ValueError(f"unknown model {spec!r}: expected one of {', '.join(NAMED)} "
                     "or 'mlp:IN-H1-...-OUT'")


def weight_shapes(layers) -> dict:
    """{layer name: dense weight shape} of an architecture's weighted layers; the names are the
    positions in the Sequential ("1", "3", ...), as `model.named_modules()` gives them."""
    shapes = {}
    for i, layer in enumerate(layers):
        if layer[0] == "linear":
            shapes[str(i)] = (layer[2], layer[1])                          # (out, in)
        elif layer[0] == "conv":
            shapes[str(i)] = (layer[2], layer[1], layer[3], layer[3])      # (out, in, kh, kw)
    return shapes


def sparse_densities(shapes, sparsity=None, epsilon=None, distribution="erk",
                     density_per_layer=None, dense_layers=()) -> dict:
    """{layer name: density} for the weighted layers, from exactly one of: `sparsity` shared by
    `distribution` (uniform | er | erk, sparse/distributions.py), SET's `epsilon` (each layer
    at ε (n_in + n_out) / (n_in n_out)), or `density_per_layer` itself. Density 1 is dense."""
    given = [name for name, v in (("sparsity", sparsity), ("epsilon", epsilon),
                                  ("density_per_layer", density_per_layer)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give one of sparsity, epsilon and density_per_layer, got {given}")
    keep = set(dense_layers)
    unknown = keep - set(shapes)
    if unknown:
        raise ValueError(f"dense_layers names layers the model does not have: {sorted(unknown)}; "
                         f"its weighted layers are {list(shapes)}")
    if density_per_layer is not None:
        unknown = set(density_per_layer) - set(shapes)
        if unknown:
            raise ValueError(f"density_per_layer names layers the model does not have: "
                             f"{sorted(unknown)}; its weighted layers are {list(shapes)}")
        return {name: float(density_per_layer.get(name, 1.0)) for name in shapes}
    if epsilon is not None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        return {name: 1.0 if name in keep else er_density(shape, epsilon)
                for name, shape in shapes.items()}
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or \
            not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return layer_densities(shapes, 1.0 - sparsity, distribution, dense_layers=sorted(keep))


def build_model(spec: str, input_shape=(1, 28, 28), num_classes=10, rng=None, *,
                sparsity=None, epsilon=None, distribution="erk", density_per_layer=None,
                dense_layers=(), format="csr", init="kaiming_uniform", init_fan_in="stored",
                sparse_layout=None, **format_options) -> Sequential:
    """A model from its name (see the module docstring). The spec is kept as `model.spec`.

    Dense unless a sparsity is given: `sparsity` (shared among layers by `distribution`),
    `epsilon` (SET's Erdős–Rényi densities) or `density_per_layer` {name: density}; each layer
    below density 1 is then built sparse in `format` (csr | block | nm | masked, with
    block_size, n, m or constant_fan_in in `format_options`), never as a dense weight first,
    its values drawn at each neuron's stored fan-in (init_fan_in="stored"; "dense" draws them
    as the dense layer would). `dense_layers`: names kept dense. Before anything is allocated
    the model's memory is estimated, and a model that cannot fit is refused with the estimate.
    `sparse_layout` {name: layer.sparse_config()} (what `sparsenet.save` writes) builds those
    layers as empty sparse placeholders for a load to fill.
    """
    from .sparse_layers import SparseConv2d, SparseLinear
    layers = architecture(spec, input_shape, num_classes)
    shapes = weight_shapes(layers)
    if sparse_layout:            # the file's sizes are checked by the loader, the rest here
        fits = {str(i) for i, layer in enumerate(layers) if _fits_layout(layer, sparse_layout.get(str(i)))}
        check_fits(spec, shapes, {n: 0.0 if n in fits else 1.0 for n in shapes})
        return _placeholder_model(spec, layers, shapes, sparse_layout)
    sparse = any(v is not None for v in (sparsity, epsilon, density_per_layer))
    densities = (sparse_densities(shapes, sparsity, epsilon, distribution, density_per_layer,
                                  dense_layers) if sparse else dict.fromkeys(shapes, 1.0))
    check_fits(spec, shapes, densities, format, format_options)
    modules = []
    for i, layer in enumerate(layers):
        kind, density = layer[0], densities.get(str(i), 1.0)
        options = dict(density=density, format=format, init=init, rng=rng,
                       init_fan_in=init_fan_in, **format_options)
        if format == "nm":
            options.pop("density")
        if kind == "linear" and density < 1:
            modules.append(SparseLinear(layer[1], layer[2], **options))
        elif kind == "conv" and density < 1:
            modules.append(SparseConv2d(*layer[1:], **options))
        else:
            modules.append(_dense_module(layer, init, rng))
    model = Sequential(*modules)
    model.spec = spec
    # the input preprocessing sparsenet trains with, so a loaded model says what it expects
    from ..data.preprocess import Standardize
    model.preprocess = Standardize()
    return model


def _placeholder_model(spec, layers, shapes, sparse_layout):
    """The model with the layers of a saved sparse layout as empty placeholders (see
    `_SparseLayer.from_config`) and the other layers dense, for `sparsenet.load` to fill. An
    entry that does not fit the architecture (no such layer, another kind or shape) is left to
    the loader, which refuses the file naming the field."""
    from .sparse_layers import SparseConv2d, SparseLinear
    kinds = {"linear": SparseLinear, "conv2d": SparseConv2d}
    modules = []
    for i, layer in enumerate(layers):
        config = sparse_layout.get(str(i))
        sparse = None
        if _fits_layout(layer, config):
            try:
                sparse = kinds[config["kind"]].from_config(config)
            except (KeyError, TypeError, ValueError):
                sparse = None
        modules.append(sparse if sparse is not None else _dense_module(layer))
    model = Sequential(*modules)
    model.spec = spec
    return model


def _fits_layout(layer, config) -> bool:
    """True when a saved sparse layer's configuration matches this architecture entry."""
    if not isinstance(config, dict) or layer[0] not in ("linear", "conv"):
        return False
    kind = {"linear": "linear", "conv": "conv2d"}[layer[0]]
    return config.get("kind") == kind and config == dict(config, **_geometry(layer))


def _geometry(layer) -> dict:
    """The fields of a sparse layer's configuration that its architecture entry fixes."""
    if layer[0] == "linear":
        return {"in_features": layer[1], "out_features": layer[2]}
    _, c_in, c_out, kernel, stride, padding = layer
    return {"in_channels": c_in, "out_channels": c_out, "kernel_size": [kernel, kernel],
            "stride": [stride, stride], "padding": [padding, padding]}


def _dense_module(layer, init="kaiming_uniform", rng=None):
    """The ordinary (dense) module of one layer description."""
    kind = layer[0]
    if kind == "linear":
        return Linear(layer[1], layer[2], init=init, rng=rng)
    if kind == "conv":
        return Conv2d(*layer[1:], init=init, rng=rng)
    if kind == "relu":
        return ReLU()
    if kind == "maxpool":
        return MaxPool2d(layer[1])
    return Flatten()
