"""Saving and loading models through safetensors: plain arrays and a JSON header, never pickle.

The file holds `model.state_dict()` (for a sparse layer: its values and index arrays, so the file
shrinks with the sparsity) and, in the header, the model's spec and each sparse layer's format,
so that `sn.load(path)` can rebuild the model without being handed one.
"""
from __future__ import annotations

import json
import os

from safetensors.numpy import load_file, save_file, safe_open

from .nn.module import Module


def _sparse_layout(model: Module) -> dict:
    """{layer name: its sparse configuration} for every layer that has one."""
    return {name: m.sparse_config() for name, m in model.named_modules()
            if hasattr(m, "sparse_config")}


def save(model: Module, path) -> None:
    """Write `model`'s parameters and buffers to `path` (safetensors)."""
    if not isinstance(model, Module):
        raise TypeError(f"save expects a Module, got {type(model).__name__}")
    from . import __version__
    metadata = {"format": "sparsenet", "version": __version__,
                "sparse_layers": json.dumps(_sparse_layout(model))}
    if getattr(model, "spec", None):
        metadata["model"] = model.spec
    tmp = f"{os.fspath(path)}.tmp"
    save_file(dict(model.state_dict()), tmp, metadata=metadata)
    os.replace(tmp, path)                    # a crash mid-write never leaves a half file behind


def read_metadata(path) -> dict:
    with safe_open(os.fspath(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def load(path, model: Module | None = None) -> Module:
    """Load a file written by `save`. Without `model`, rebuild it from the spec in the header."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    metadata = read_metadata(path)
    if model is None:
        if "model" not in metadata:
            raise ValueError(f"{path} records no model spec; pass the model to load into")
        from .nn.models import build_model
        layout = json.loads(metadata.get("sparse_layers", "{}"))
        # sparse layers come as empty placeholders: no dense weight is built to be replaced
        model = build_model(metadata["model"], sparse_layout=layout)
    model.load_state_dict(load_file(os.fspath(path)))
    return model
