"""A training state as arrays and JSON, and back: what a checkpoint file holds (checkpoint.py).

`capture(...)` gathers the model (its state_dict and the layout of its sparse layers), the
optimizer and schedule (`state_dict()`), the method (`Method.state_dict()`), the library's random
generator and the loader's epoch into ({name: array}, JSON-able dict); `restore(...)` puts them
back into freshly set-up objects, in place, checking each part against what it is loaded into.

Plain data goes through `pack` / `unpack`: NumPy arrays become named tensors (the JSON holds
{"__array__": name}), and tuples, NumPy scalars, generators and dicts with integer keys are
tagged so that they come back as they went (a float32 scalar stays float32, a tuple a tuple).
"""
from __future__ import annotations

import numpy as np

from . import io, random
from .nn.sparse_layers import SparseConv2d, SparseLinear
from .tensorfile import TensorFileError

TAGS = ("__array__", "__tuple__", "__scalar__", "__generator__", "__items__")
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


# ----- plain data <-> JSON + arrays ----------------------------------------------------------
def pack(value, key: str, arrays: dict):
    """A JSON-able form of plain data; arrays are put in `arrays` under names below `key`."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{key}: an object array cannot be saved")
        arrays[key] = np.ascontiguousarray(value)
        return {"__array__": key}
    if isinstance(value, np.random.Generator):
        return {"__generator__": pack(value.bit_generator.state, key, arrays)}
    if isinstance(value, np.generic):
        return {"__scalar__": [value.dtype.str, value.item()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [pack(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [pack(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = [[k, pack(v, f"{key}/{i}", arrays)] for i, (k, v) in enumerate(value.items())]
        if all(isinstance(k, str) and k not in TAGS for k in value):
            return dict(items)
        return {"__items__": items}
    raise TypeError(f"{key}: cannot save a {type(value).__name__}")


def unpack(obj, arrays: dict, path=""):
    """The value `pack` was given (arrays taken from `arrays`)."""
    if isinstance(obj, list):
        return [unpack(v, arrays, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tag = next((t for t in TAGS if t in obj), None)
    if tag is not None and len(obj) != 1:
        raise ValueError(f"{path}: a tagged value {tag} has other keys {sorted(obj)}")
    if tag == "__array__":
        if obj[tag] not in arrays:
            raise ValueError(f"{path}: the array {obj[tag]!r} is not in the file")
        return arrays[obj[tag]]
    if tag == "__tuple__":
        return tuple(unpack(v, arrays, path) for v in obj[tag])
    if tag == "__scalar__":
        dtype, value = obj[tag]
        if np.dtype(dtype).kind not in "biuf":
            raise ValueError(f"{path}: a scalar of dtype {dtype!r} is not plain data")
        return np.dtype(dtype).type(value)
    if tag == "__generator__":
        state = unpack(obj[tag], arrays, path)
        if not isinstance(state, dict) or state.get("bit_generator") not in BIT_GENERATORS:
            raise ValueError(f"{path}: a generator state needs bit_generator in {BIT_GENERATORS}")
        generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
        generator.bit_generator.state = state
        return generator
    if tag == "__items__":
        return {k: unpack(v, arrays, path) for k, v in obj[tag]}
    return {k: unpack(v, arrays, path) for k, v in obj.items()}


def array_names(obj) -> set:
    """Every array name a packed object refers to."""
    if isinstance(obj, list):
        return set().union(*(array_names(v) for v in obj)) if obj else set()
    if isinstance(obj, dict):
        if "__array__" in obj:
            return {obj["__array__"]}
        return set().union(*(array_names(v) for v in obj.values())) if obj else set()
    return set()


# ----- a training state ------------------------------------------------------------------------
def capture(model, optimizer, scheduler, method, loader) -> tuple[dict, dict]:
    """({name: array}, JSON-able dict) of everything a run needs to continue."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    state = {
        "model_layout": io._sparse_layout(model),
        "optimizer": pack(optimizer.state_dict(), "optimizer", arrays),
        "scheduler": pack(scheduler.state_dict(), "scheduler", arrays),
        "method": pack(method.state_dict(), "method", arrays),
        "method_class": type(method).__name__,
        "random": pack(random.generator(), "random", arrays),
        "loader_epoch": int(loader.epoch),
    }
    return arrays, state


def restore(path, state, arrays, model, optimizer, scheduler, method, loader):
    """Put a captured state back, in place; ValueError naming the file and the part if it does
    not fit (the objects must come from the same configuration, freshly set up)."""
    part = "model"
    try:
        _restore_model(path, model, state["model_layout"],
                       {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        part = "optimizer"
        optimizer.load_state_dict(unpack(state["optimizer"], arrays, part))
        part = "scheduler"
        scheduler.load_state_dict(unpack(state["scheduler"], arrays, part))
        part = "method"
        if state["method_class"] != type(method).__name__:
            raise ValueError(f"it is the state of a {state['method_class']}, the run's method is "
                             f"a {type(method).__name__}")
        method_state = unpack(state["method"], arrays, part)
        _check_method_state(method, method_state)
        method.load_state_dict(method_state)
        part = "random"
        random.generator().bit_generator.state = unpack(state["random"], arrays,
                                                        part).bit_generator.state
        part = "loader_epoch"
        epoch = state["loader_epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"must be an integer >= 0, got {epoch!r}")
        loader.epoch = epoch
    except TensorFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise TensorFileError(path, part, f"{type(err).__name__}: {err}" if isinstance(
            err, (KeyError, AttributeError)) else str(err)) from None


def _check_method_state(method, state):
    """A checkpoint may set plain attributes only, never replace the model, a layer or the
    optimizer a method holds."""
    from .algorithms.base import is_plain
    if not isinstance(state, dict):
        raise ValueError(f"must be a dict of attributes, got {type(state).__name__}")
    for name in state:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            raise ValueError(f"{name!r} is not an attribute name")
        if hasattr(method, name) and not is_plain(getattr(method, name)):
            raise ValueError(f"attribute {name!r} holds a {type(getattr(method, name)).__name__}, "
                             "which a checkpoint cannot replace")


def _weight_rows_cols(layer) -> tuple:
    if isinstance(layer, (SparseLinear, SparseConv2d)):
        return tuple(layer.weight_shape)
    shape = tuple(layer.weight.shape)
    return shape[0], int(np.prod(shape[1:]))


def _restore_model(path, model, layout, arrays):
    """The model's arrays, and its sparse layers where training changed them (a method that
    turns dense layers sparse, as autosparse and regularized do at the end)."""
    if not isinstance(layout, dict):
        raise ValueError(f"model_layout must be a dict, got {type(layout).__name__}")
    modules = dict(model.named_modules())
    current = io._sparse_layout(model)
    for name in set(current) - set(layout):
        raise ValueError(f"layer {name!r} is sparse in the run, dense in the checkpoint")
    for name, config in layout.items():
        io.check_layer_config(path, name, config)
        if current.get(name) == config:
            continue
        if name not in modules or name == "" or name in current:
            raise ValueError(f"layer {name!r} of the checkpoint ({config}) does not fit the "
                             f"run's model")
        layer = io._sparse_layer(path, name, config, arrays)
        if _weight_rows_cols(modules[name]) != tuple(layer.weight_shape):
            raise ValueError(f"layer {name!r} has a {layer.weight_shape} weight in the checkpoint, "
                             f"{_weight_rows_cols(modules[name])} in the run")
        model.replace_submodule(name, layer)
    model.load_state_dict(arrays)
