"""Models to and from Deep Compression files (the format is in sparsenet/compressed_io.py).

- `save_compressed(model, path, quantization)`: a quantized model (CSR layers whose values
  are each layer's codebook entries) written as a compressed file; returns its byte counts.
- `load_compressed(path)`: the model back, with `form="codebook"` (CodebookLinear /
  CodebookConv2d: inference on one-byte codes, the default) or `form="csr"` (SparseLinear /
  SparseConv2d holding the float values codebook[codes]: exactly the quantized model).
- `is_compressed_file(path)`: does the file start with the format's magic bytes.
"""
from __future__ import annotations

import os

import numpy as np

from .compressed_io import (MAGIC, CompressedFileError, LayerCodes, read_compressed,
                            write_compressed)
from .nn.codebook_layers import CodebookConv2d, CodebookLinear
from .nn.layers import Conv2d, Linear
from .nn.sparse_layers import SparseConv2d, SparseLinear
from .sparse import CSR
from .sparse.codebook import CodebookCSR


def is_compressed_file(path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def layer_codes(model, quantization: dict, index_bits: dict) -> list:
    """LayerCodes of the layers in `quantization` {name: (codes, codebook, weight_bits)}.

    Each named layer must be a CSR SparseLinear/SparseConv2d whose values are exactly
    codebook[codes] (what trained quantization leaves), so the file decodes to this model.
    """
    out = []
    for name, (codes, codebook, bits) in quantization.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, (SparseLinear, SparseConv2d)) or layer.format != "csr":
            raise ValueError(f"layer {name!r} must be a CSR SparseLinear or SparseConv2d to be "
                             f"compressed, got {type(layer).__name__}")
        weight = layer.weight
        codes, codebook = np.asarray(codes), np.asarray(codebook, dtype=np.float32)
        if codes.dtype != np.uint8 or codes.shape != (weight.nnz,):
            raise ValueError(f"layer {name!r}: codes must be uint8 of shape ({weight.nnz},), got "
                             f"{codes.dtype} {codes.shape}")
        if not np.array_equal(codebook[codes], weight.values):
            raise ValueError(f"layer {name!r}: its values are not codebook[codes]; quantize it "
                             "(and re-share the values after fine-tuning) before saving")
        out.append(LayerCodes(name, layer.kind, weight.shape, weight.indptr, weight.indices,
                              codes, codebook, int(bits), int(index_bits[name])))
    return out


def save_compressed(model, path, quantization: dict, index_bits: dict, use_huffman=True,
                    input_shape=(1, 28, 28), num_classes=10) -> dict:
    """Write `model` with the layers of `quantization` compressed and the rest stored dense."""
    layers = layer_codes(model, quantization, index_bits)
    compressed = {f"{layer.name}.{key}" for layer in layers for key in ("values", "indptr", "indices")}
    dense = {k: v for k, v in model.state_dict().items() if k not in compressed}
    return write_compressed(path, layers, dense, getattr(model, "spec", None), input_shape,
                            num_classes, use_huffman)


def _geometry(module):
    """(kind, weight matrix shape, conv options) of a Linear/Conv2d or its sparse twin."""
    if isinstance(module, (Linear, SparseLinear)):
        return "linear", (module.out_features, module.in_features), {}
    if isinstance(module, (Conv2d, SparseConv2d)):
        kh, kw = module.kernel_size if isinstance(module.kernel_size, tuple) else \
            (module.kernel_size, module.kernel_size)
        options = dict(in_channels=module.in_channels, kernel_size=(kh, kw),
                       stride=module.stride, padding=module.padding)
        return "conv2d", (module.out_channels, module.in_channels * kh * kw), options
    return None, None, None


def load_compressed(path, form: str = "codebook", model=None):
    """The model stored in a compressed file (see the module docstring for `form`)."""
    if form not in ("codebook", "csr"):
        raise ValueError(f"form must be 'codebook' or 'csr', got {form!r}")
    cf = read_compressed(path)
    if model is None:
        spec = cf.header.get("model")
        if not isinstance(spec, str):
            raise CompressedFileError(f"{cf.path}: header.model: records no model spec; pass the "
                                      "model to load into")
        from .nn.models import build_model
        try:
            model = build_model(spec, input_shape=tuple(cf.header.get("input_shape", (1, 28, 28))),
                                num_classes=int(cf.header.get("num_classes", 10)))
        except (TypeError, ValueError) as err:
            raise CompressedFileError(f"{cf.path}: header.model: {err}") from None
    state = dict(cf.dense)
    for i, codes in enumerate(cf.layers):
        where = f"{cf.path}: layers[{i}]"
        try:
            module = model.get_submodule(codes.name)
        except KeyError:
            raise CompressedFileError(f"{where}.name: the model has no layer {codes.name!r}") from None
        kind, shape, options = _geometry(module)
        if (kind, shape) != (codes.kind, codes.shape):
            raise CompressedFileError(f"{where}.shape: the file holds a {codes.kind} {codes.shape} "
                                      f"weight, the model's layer {codes.name!r} is {kind} {shape}")
        has_bias = module.bias is not None
        if form == "csr":
            weight = CSR(codes.indptr, codes.indices, codes.codebook[codes.codes], codes.shape)
            new = (SparseLinear(shape[1], shape[0], weight=weight, bias=has_bias) if kind == "linear"
                   else SparseConv2d(out_channels=shape[0], weight=weight, bias=has_bias, **options))
            state.update({f"{codes.name}.values": weight.values,
                          f"{codes.name}.indptr": weight.indptr,
                          f"{codes.name}.indices": weight.indices})
        else:
            weight = CodebookCSR(codes.indptr, codes.indices, codes.codes, codes.codebook, codes.shape)
            bias = state.get(f"{codes.name}.bias") if has_bias else None
            bias = np.zeros(shape[0], np.float32) if has_bias and bias is None else bias
            new = (CodebookLinear(weight, bias) if kind == "linear"
                   else CodebookConv2d(weight, bias=bias, **options))
            state.update((f"{codes.name}.{k}", v) for k, v in new._own_state().items()
                         if k != "bias")
        model.replace_submodule(codes.name, new)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as err:
        raise CompressedFileError(f"{cf.path}: dense: does not fit the model: {err}") from None
    model.eval()
    return model


def file_bytes(path) -> int:
    return os.path.getsize(path)
