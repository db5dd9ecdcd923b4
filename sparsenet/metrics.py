"""What a run is judged by: accuracy, per-class accuracy, FLOPs, parameters and bytes.

FLOPs count multiply-adds as 2 and only the weight products (the bias adds and activations are
small next to them), as the RigL paper (Evci et al. 2020, Appendix H) does: a layer's forward
costs 2 * stored weights * output positions, and a training step costs 3 forwards (the forward,
the input gradient and the weight gradient).
"""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor, no_grad


def accuracy(logits, labels) -> float:
    logits = logits.data if isinstance(logits, Tensor) else logits
    return float((backend.to_numpy(logits).argmax(axis=1) == backend.to_numpy(labels)).mean())


def per_class_accuracy(predictions, labels, n_classes: int) -> list:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    out = []
    for c in range(n_classes):
        sel = labels == c
        out.append(float((predictions[sel] == c).mean()) if sel.any() else None)
    return out


def weight_counts(module) -> tuple[int, int] | None:
    """(stored weights, weights of the dense layer) of a Linear/Conv layer or its sparse twin."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    if hasattr(weight, "nnz"):                                  # a sparse format object
        return int(weight.nnz), int(np.prod(weight.shape))
    if isinstance(weight, Tensor) and weight.ndim >= 2:
        mask = getattr(module, "mask", None)
        stored = int(backend.to_numpy(mask).sum()) if mask is not None else weight.size
        return stored, weight.size
    return None


def layer_positions(model, input_shape) -> dict:
    """Output positions per sample of each weighted layer (1 for Linear, H_out*W_out for Conv).

    Found by running one zero sample through the model and watching each layer's output shape.
    """
    seen, originals = {}, []
    for name, m in model.named_modules():
        if weight_counts(m) is None:
            continue
        original = m.forward

        def watching(x, *a, _name=name, _f=original, **k):
            y = _f(x, *a, **k)
            seen[_name] = int(np.prod(y.shape[2:])) if y.ndim > 2 else 1
            return y
        m.forward = watching
        originals.append(m)
    try:
        was_training = model.training
        model.eval()
        params = model.parameters()
        device = backend.device_of(params[0].data) if params else "cpu"
        with no_grad():
            model(Tensor(backend.to_device(np.zeros((1, *input_shape), dtype=np.float32), device)))
        model.train(was_training)
    finally:
        for m in originals:
            del m.forward                          # back to the class's method
    return seen


def forward_flops(model, positions: dict) -> tuple[int, int]:
    """(FLOPs of one sample's forward with the current sparsity, FLOPs of the dense model)."""
    sparse = dense = 0
    for name, m in model.named_modules():
        counts = weight_counts(m)
        if counts is None or name not in positions:
            continue
        stored, full = counts
        sparse += 2 * stored * positions[name]
        dense += 2 * full * positions[name]
    return sparse, dense


def layer_table(model) -> list:
    """One entry per weighted layer: name, shape, density, format, stored weights."""
    rows = []
    for name, m in model.named_modules():
        counts = weight_counts(m)
        if counts is None:
            continue
        stored, full = counts
        weight = m.weight
        fmt = getattr(weight, "format", None) or getattr(m, "format", None) or "dense"
        rows.append({"name": name, "type": type(m).__name__, "shape": list(weight.shape),
                     "density": stored / full, "format": fmt, "nnz": stored})
    return rows


def parameter_bytes(model, optimizer=None) -> dict:
    """Bytes held for weights (values and index arrays), gradients and optimizer state."""
    weights = grads = state = 0
    for m in model.modules():
        for arr in m._own_state().values():
            weights += arr.nbytes
        w = getattr(m, "weight", None)
        cache = getattr(w, "cache_nbytes", 0) if w is not None else 0
        weights += cache
    for p in model.parameters():
        grads += p.data.nbytes                     # a gradient is the size of its parameter
    if optimizer is not None:
        for st in optimizer.state.values():
            state += sum(a.nbytes for k, a in st.items() if k != "step")
    return {"weights": weights, "gradients": grads, "optimizer_state": state,
            "total": weights + grads + state}


def sparsity_summary(model) -> dict:
    """Overall density of the weighted layers (biases excluded) and parameter counts."""
    stored = full = 0
    for m in model.modules():
        counts = weight_counts(m)
        if counts is not None:
            stored += counts[0]
            full += counts[1]
    density = stored / full if full else 1.0
    return {"density": density, "sparsity": 1.0 - density, "weights_stored": stored,
            "weights_dense": full}


def evaluated_accuracy(record) -> tuple:
    """("test", accuracy) of a run record, or ("validation", accuracy) for a run made with a
    validation split (`TrainConfig.val`), whose record holds no test accuracy."""
    if "test_accuracy" in record:
        return "test", record["test_accuracy"]
    return "validation", record["val_accuracy"]
