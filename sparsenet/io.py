"""Saving and loading models through safetensors: plain arrays and a JSON header, never pickle.

The file holds `model.state_dict()` (for a sparse layer: its values and index arrays, so the file
shrinks with the sparsity) and, in the header, the model's spec and each sparse layer's
configuration (`sparse_config()`), so that `sn.load(path)` can rebuild the model without being
handed one. `save` writes atomically (`files.atomic_write`): the old file survives any failure.

`load` trusts nothing in the file. The header is checked field by field (`tensorfile`); the spec
is checked for size before the model is built; every sparse layer's configuration (kind, sizes,
kernel, stride, padding, bias, dtype, format options) must be well formed and match the layer it
replaces; every tensor's name, dtype and shape is checked against the layer that will hold it:
all before a byte of tensor data is read. The index arrays are then validated by the sparse
constructors. Any problem is one `ModelFileError` (a ValueError) naming the file and the field,
and a model handed in is left as it was.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import tensorfile
from .nn.layers import Conv2d, Linear
from .nn.module import Module
from .nn.sparse_layers import SparseConv2d, SparseLinear
from .tensorfile import TensorFileError

FORMAT = "sparsenet"
METADATA_KEYS = {"format", "version", "sparse_layers", "model"}
SHAPE_KEYS = {"linear": ("in_features", "out_features"),
              "conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding")}
FORMAT_OPTIONS = {"csr": ("constant_fan_in",), "masked": ("constant_fan_in",),
                  "block": ("block_size",), "nm": ("n", "m")}
LAYER_DTYPES = ("float32", "float64")
INTEGERS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


ModelFileError = TensorFileError          # every malformed or mismatched file gives this one


def _sparse_layout(model: Module) -> dict:
    """{layer name: its sparse configuration} for every layer that has one."""
    return {name: m.sparse_config() for name, m in model.named_modules()
            if hasattr(m, "sparse_config")}


def save(model: Module, path) -> None:
    """Write `model`'s parameters and buffers to `path` (safetensors), atomically."""
    if not isinstance(model, Module):
        raise TypeError(f"save expects a Module, got {type(model).__name__}")
    from . import __version__
    metadata = {"format": FORMAT, "version": __version__,
                "sparse_layers": json.dumps(_sparse_layout(model))}
    if getattr(model, "spec", None):
        metadata["model"] = model.spec
    tensorfile.write(path, dict(model.state_dict()), metadata)


def read_metadata(path) -> dict:
    """The header's metadata ({str: str}), after the whole header was checked."""
    return tensorfile.read_header(path)[1]


def load(path, model: Module | None = None) -> Module:
    """Load a file written by `save`. Without `model`, rebuild it from the spec in the header."""
    if model is not None and not isinstance(model, Module):
        raise TypeError(f"model must be a Module or None, got {type(model).__name__}")
    path = os.fspath(path)
    entries, metadata = tensorfile.read_header(path)
    check_metadata(path, metadata, FORMAT)
    layout = parse_layout(path, metadata.get("sparse_layers", "{}"))
    built_here = False
    if model is None:
        if "model" not in metadata:
            raise ModelFileError(path, "metadata 'model'", "records no model spec; pass the "
                                 "model to load into: sn.load(path, model)")
        model = build_from_spec(path, metadata["model"], layout)
        built_here = True
    expected = expected_tensors(path, model, layout)
    tensorfile.check_names(path, entries, expected)
    for name, checks in expected.items():
        tensorfile.check_entry(path, entries[name], **checks)
    return install(path, model, layout, tensorfile.read_tensors(path, entries),
                   built_here=built_here)


# ----- the header's metadata ---------------------------------------------------------------
def check_metadata(path, metadata, expected_format, allowed=METADATA_KEYS):
    found = metadata.get("format")
    if found != expected_format:
        hint = {"sparsenet-checkpoint": "it is a training checkpoint: continue it with "
                "`sparsenet train ... --resume DIR`",
                "sparsenet": "it is a model file: load it with sparsenet.load"}.get(found, "")
        raise ModelFileError(path, "metadata 'format'", ("is missing" if found is None else
                             f"is {found!r}") + f", expected {expected_format!r}" +
                             (f" ({hint})" if hint else " (not written by sparsenet)"))
    unknown = sorted(set(metadata) - set(allowed))
    if unknown:
        raise ModelFileError(path, "metadata", f"unknown fields {unknown}; expected only "
                             f"{sorted(allowed)}")


def build_from_spec(path, spec, layout=None):
    """The model of `spec`, its sparse layers (the file's layout) as empty placeholders: no
    dense weight is built only to be replaced, so a sparse model of any width loads."""
    from .nn.models import build_model
    try:
        return build_model(spec, sparse_layout=layout)
    except (TypeError, ValueError) as err:
        raise ModelFileError(path, "metadata 'model'", str(err)) from None


def _int_at_least(value, least) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def parse_layout(path, text) -> dict:
    """{layer name: configuration} from the header's "sparse_layers", every field checked."""
    try:
        layout = json.loads(text)
    except ValueError as err:
        raise ModelFileError(path, "metadata 'sparse_layers'", f"is not JSON ({err})") from None
    if not isinstance(layout, dict):
        raise ModelFileError(path, "metadata 'sparse_layers'", "must be a JSON object")
    for name, config in layout.items():
        check_layer_config(path, name, config)
    return layout


def check_layer_config(path, name, config):
    field = f"sparse_layers[{name!r}]"
    if not isinstance(config, dict):
        raise ModelFileError(path, field, f"must be an object, got {type(config).__name__}")
    kind, fmt = config.get("kind"), config.get("format")
    if kind not in SHAPE_KEYS:
        raise ModelFileError(path, f"{field}.kind", f"is {kind!r}, expected one of "
                             f"{sorted(SHAPE_KEYS)}")
    if fmt not in FORMAT_OPTIONS:
        raise ModelFileError(path, f"{field}.format", f"is {fmt!r}, expected one of "
                             f"{sorted(FORMAT_OPTIONS)}")
    keys = {"kind", "format", "bias", "dtype", *SHAPE_KEYS[kind], *FORMAT_OPTIONS[fmt]}
    if set(config) != keys:
        missing, extra = sorted(keys - set(config)), sorted(set(config) - keys)
        raise ModelFileError(path, field, f"missing {missing}, unexpected {extra}")
    rules = {"in_features": 1, "out_features": 1, "in_channels": 1, "out_channels": 1,
             "block_size": 1, "n": 1, "m": 2}
    for key, least in rules.items():
        if key in config and not _int_at_least(config[key], least):
            raise ModelFileError(path, f"{field}.{key}", f"must be an integer >= {least}, "
                                 f"got {config[key]!r}")
    for key, least in (("kernel_size", 1), ("stride", 1), ("padding", 0)):
        value = config.get(key, [least, least])
        if not (isinstance(value, list) and len(value) == 2
                and all(_int_at_least(v, least) for v in value)):
            raise ModelFileError(path, f"{field}.{key}", f"must be two integers >= {least}, "
                                 f"got {value!r}")
    for key in ("bias", "constant_fan_in"):
        if key in config and not isinstance(config[key], bool):
            raise ModelFileError(path, f"{field}.{key}", f"must be true or false, got "
                                 f"{config[key]!r}")
    if config["dtype"] not in LAYER_DTYPES:
        raise ModelFileError(path, f"{field}.dtype", f"is {config['dtype']!r}, expected one of "
                             f"{LAYER_DTYPES}")
    if fmt == "nm" and not config["n"] < config["m"]:
        raise ModelFileError(path, f"{field}.n", f"must be below m={config['m']}, got "
                             f"{config['n']}")


# ----- what the model expects ------------------------------------------------------------------
def layer_geometry(layer) -> dict | None:
    """The configuration fields a layer fixes (kind, sizes, geometry, bias, dtype)."""
    if isinstance(layer, (SparseLinear, SparseConv2d)):
        config = layer.sparse_config()
        return {k: v for k, v in config.items() if k not in ("format", *FORMAT_OPTIONS[config["format"]])}
    bias, dtype = layer.bias is not None, str(layer.weight.dtype) if hasattr(layer, "weight") else None
    if type(layer) is Linear:
        return dict(kind="linear", in_features=layer.in_features,
                    out_features=layer.out_features, bias=bias, dtype=dtype)
    if type(layer) is Conv2d:
        from .nn.layers import conv_geometry
        kernel, stride, padding = conv_geometry(layer.kernel_size, layer.stride, layer.padding)
        return dict(kind="conv2d", in_channels=layer.in_channels, out_channels=layer.out_channels,
                    kernel_size=list(kernel), stride=list(stride), padding=list(padding),
                    bias=bias, dtype=dtype)
    return None


def _weight_shape(config) -> tuple:
    if config["kind"] == "linear":
        return config["out_features"], config["in_features"]
    kh, kw = config["kernel_size"]
    return config["out_channels"], config["in_channels"] * kh * kw


def expected_tensors(path, model, layout) -> dict:
    """{tensor name: checks for `tensorfile.check_entry`}, after matching the layout to the
    model's layers."""
    modules = dict(model.named_modules())
    for name, config in layout.items():
        if name not in modules:
            raise ModelFileError(path, f"sparse_layers[{name!r}]", f"the model has no layer "
                                 f"named {name!r}")
        geometry = layer_geometry(modules[name])
        if geometry is None:
            raise ModelFileError(path, f"sparse_layers[{name!r}]", f"layer {name!r} is a "
                                 f"{type(modules[name]).__name__}, not a Linear or Conv2d")
        for key, value in geometry.items():
            if config[key] != value:
                raise ModelFileError(path, f"sparse_layers[{name!r}].{key}", f"is {config[key]!r},"
                                     f" but the model's layer has {value!r}")
        current = modules[name]
        if isinstance(current, (SparseLinear, SparseConv2d)) and current.sparse_config() != config:
            raise ModelFileError(path, f"sparse_layers[{name!r}]", f"is {config}, but the model's "
                                 f"sparse layer is {current.sparse_config()}")
    expected = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if mod_name in layout:
            expected.update(_sparse_tensors(prefix, layout[mod_name]))
        elif isinstance(module, (SparseLinear, SparseConv2d)):
            raise ModelFileError(path, "metadata 'sparse_layers'", f"has no entry for the model's "
                                 f"sparse layer {mod_name!r}")
        elif not any(mod_name.startswith(f"{n}.") for n in layout if n):
            for name, array in module._own_state().items():
                expected[prefix + name] = dict(dtypes=[array.dtype], shape=array.shape)
    return expected


def _sparse_tensors(prefix, config) -> dict:
    rows, cols = _weight_shape(config)
    values = dict(dtypes=[config["dtype"]], ndim=1, max_size=rows * cols)
    out = {prefix + "values": values}
    if config["bias"]:
        out[prefix + "bias"] = dict(dtypes=[config["dtype"]], shape=(rows,))
    if config["format"] in ("csr", "block"):
        for name in ("indptr", "indices"):
            out[prefix + name] = dict(dtypes=INTEGERS, ndim=1, max_size=rows * cols + rows + 1)
    elif config["format"] == "nm":
        out[prefix + "idx"] = dict(dtypes=INTEGERS, ndim=3, max_size=rows * cols)
    else:
        out[prefix + "mask"] = dict(dtypes=[np.bool_], shape=(rows, cols))
    return out


# ----- building ------------------------------------------------------------------------------
def _sparse_layer(path, name, config, arrays):
    """The sparse layer of `config` holding the file's arrays (validated by the constructors)."""
    from .sparse.convert import weight_from_arrays
    prefix = f"{name}." if name else ""
    own = {k[len(prefix):]: v for k, v in arrays.items()
           if k.startswith(prefix) and "." not in k[len(prefix):]}
    options = {k: config[k] for k in FORMAT_OPTIONS[config["format"]]}
    try:
        weight = weight_from_arrays(config["format"], own, _weight_shape(config), options)
        if config["kind"] == "linear":
            layer = SparseLinear(config["in_features"], config["out_features"], weight=weight,
                                 bias=config["bias"])
        else:
            layer = SparseConv2d(config["in_channels"], config["out_channels"],
                                 tuple(config["kernel_size"]), tuple(config["stride"]),
                                 tuple(config["padding"]), weight=weight, bias=config["bias"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(path, f"layer {name!r}", str(err)) from None
    if config["bias"]:
        layer.bias.data = np.array(own["bias"])
    return layer


def _replace(model, name, layer):
    if name == "":
        return layer                    # the model was this one layer
    model.replace_submodule(name, layer)
    return model


def install(path, model, layout, arrays, built_here=False):
    """Swap in the sparse layers the file describes and load every array; on any failure the
    model is put back as it was. `built_here`: the model was built from the file's spec, its
    sparse layers are empty placeholders, all of them replaced by the file's."""
    modules = dict(model.named_modules())
    built = {name: _sparse_layer(path, name, config, arrays) for name, config in layout.items()
             if built_here or not isinstance(modules[name], (SparseLinear, SparseConv2d))}
    result = model
    try:
        for name, layer in built.items():
            result = _replace(result, name, layer)
        result.load_state_dict(arrays)
    except (KeyError, TypeError, ValueError) as err:
        for name in built:
            _replace(model, name, modules[name])
        raise ModelFileError(path, "tensors", str(err)) from None
    return result
