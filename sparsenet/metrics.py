"""What a run is judged by: accuracy, per-class accuracy, FLOPs, parameters and bytes, and
the inference energy (Horowitz 45 nm; its own section at the end, with its assumptions).

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


# ===== Inference energy: Horowitz's 45 nm figures ==============================================
# An estimate of the energy of one inference (one sample), per layer, in picojoules.
#
# Energies per operation: Horowitz, "Computing's energy problem (and what we can do about it)",
# ISSCC 2014, 45 nm, as Han et al. quote them (Deep Compression, Section 1; Learning both
# Weights and Connections, Figure 1): 32-bit float add 0.9 pJ, 32-bit float multiply 3.7 pJ,
# 32-bit SRAM read 5 pJ, 32-bit DRAM read 640 pJ.
#
# The model's assumptions, all of them:
# 1. Arithmetic: every multiply-accumulate of a stored weight (stored weights x output positions)
#    costs one 32-bit float multiply and one add. Biases, activations and pooling are not counted.
# 2. Weight fetches: every stored byte of a layer's weight (values and indices, or codes,
#    indices, codebook and Huffman tables) is read from memory once per inference; a conv weight
#    is then reused from registers across output positions. Reading b bits costs b/32 of a 32-bit
#    read. Activation traffic is not counted.
# 3. Where the weights live: a layer whose stored bytes fit `on_chip_bytes` (ON_CHIP_BYTES,
#    128 KiB, our choice: a mid-sized on-chip SRAM) is read from SRAM, else from DRAM.
# 4. Stored bytes are the layer's form: dense float32 (4 per weight); a sparse format's `nbytes`
#    (CSR: a 4-byte value and a 4-byte column index per weight, 8 bytes per row pointer); for a
#    Deep Compression file, the layer's bytes in the file. Decoding a code through the codebook
#    is a register read and, like Huffman decoding (done once, at load), is not counted.
HOROWITZ_45NM_PJ = {"fp32_add": 0.9, "fp32_mult": 3.7, "sram_read_32bit": 5.0,
                    "dram_read_32bit": 640.0}
ON_CHIP_BYTES = 128 * 1024


def weight_storage_bytes(module) -> int:
    """Bytes the layer's weight occupies in memory (assumption 4 above)."""
    weight = module.weight
    if isinstance(weight, Tensor):
        mask = getattr(module, "mask", None)
        return int(weight.data.nbytes) + (int(mask.nbytes) if mask is not None else 0)
    return int(weight.nbytes)


def inference_energy(model, input_shape, storage_bytes=None, on_chip_bytes=ON_CHIP_BYTES) -> dict:
    """{"layers": [...], "total_pj", "arithmetic_pj", "fetch_pj", "assumptions"} for one sample.

    storage_bytes: {layer name: bytes} overriding a layer's in-memory bytes (a layer's bytes in
    a compressed file). Each layer row: name, macs, weight_bytes, memory ("sram" | "dram"),
    fetch_pj, arithmetic_pj, total_pj.
    """
    e = HOROWITZ_45NM_PJ
    positions = layer_positions(model, input_shape)
    rows = []
    for name, m in model.named_modules():
        counts = weight_counts(m)
        if counts is None or name not in positions:
            continue
        macs = counts[0] * positions[name]
        nbytes = int((storage_bytes or {}).get(name, weight_storage_bytes(m)))
        memory = "sram" if nbytes <= on_chip_bytes else "dram"
        fetch = nbytes * 8 / 32 * e[f"{memory}_read_32bit"]
        arithmetic = macs * (e["fp32_mult"] + e["fp32_add"])
        rows.append({"name": name, "macs": int(macs), "weight_bytes": nbytes, "memory": memory,
                     "fetch_pj": fetch, "arithmetic_pj": arithmetic, "total_pj": fetch + arithmetic})
    fetch, arithmetic = sum(r["fetch_pj"] for r in rows), sum(r["arithmetic_pj"] for r in rows)
    return {"layers": rows, "fetch_pj": fetch, "arithmetic_pj": arithmetic,
            "total_pj": fetch + arithmetic, "on_chip_bytes": int(on_chip_bytes),
            "assumptions": "sparsenet.metrics: Horowitz 45 nm; weights fetched once per sample "
                           "from SRAM if a layer's bytes fit on chip, else DRAM; one fp32 "
                           "multiply and add per MAC; activations and biases not counted"}
