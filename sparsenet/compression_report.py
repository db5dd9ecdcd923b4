"""Deep Compression's numbers for a run, stage by stage, beside the paper's Tables 2 and 3.

`add_stage(report, model, stage, ...)` is called by the algorithm after each stage (dense,
pruned, quantized); every size is a file it writes and measures:

- dense: the dense float32 safetensors file of the architecture (the ratio's numerator);
- pruned: the pruned model's safetensors file (CSR: float32 values and int32 indices);
- quantized: the compressed file with fixed-width codes (the paper's "P+Q") and with
  Huffman-coded ones ("P+Q+H", the file `sparsenet compress` writes).

`paper_table(report, model)` and `stage_table(report, model)` format them as markdown.
"""
from __future__ import annotations

import os

import numpy as np

from . import io, metrics
from .compressed_model import load_compressed, save_compressed

# Han, Mao & Dally 2016, Tables 2 and 3: layer, weights, weights % (P), weight bits (P+Q),
# weight bits (P+Q+H), index bits (P+Q), index bits (P+Q+H), rate (P+Q) %, rate (P+Q+H) %
PAPER_TABLES = {
    "lenet300": ("Table 2", [("ip1", "235K", 8, 6, 4.4, 5, 3.7, 3.1, 2.32),
                             ("ip2", "30K", 9, 6, 4.4, 5, 4.3, 3.8, 3.04),
                             ("ip3", "1K", 26, 6, 4.3, 5, 3.2, 15.7, 12.70),
                             ("total", "266K", 8, 6, 5.1, 5, 3.7, 3.1, 2.49)],
                 {"pruned": 12, "quantized": 32, "huffman": 40, "dense_kb": 1070,
                  "compressed_kb": 27}),
    "lenet5": ("Table 3", [("conv1", "0.5K", 66, 8, 7.2, 5, 1.5, 78.5, 67.45),
                           ("conv2", "25K", 12, 8, 7.2, 5, 3.9, 6.0, 5.28),
                           ("ip1", "400K", 8, 5, 4.5, 5, 4.5, 2.7, 2.45),
                           ("ip2", "5K", 19, 5, 5.2, 5, 3.7, 6.9, 6.13),
                           ("total", "431K", 8, 5.3, 4.1, 5, 4.4, 3.05, 2.55)],
               {"pruned": 12, "quantized": 33, "huffman": 39, "dense_kb": 1720,
                "compressed_kb": 44}),
}


def dense_file_bytes(model, path, input_shape) -> int:
    """Bytes of the dense float32 safetensors file of `model`'s architecture (its spec)."""
    from .nn.models import build_model
    spec = getattr(model, "spec", None)
    sparse = any(hasattr(m, "sparse_config") for m in model.modules())
    if sparse and spec is None:
        raise ValueError("the dense file size of a sparse model needs its spec (model.spec)")
    io.save(build_model(spec, tuple(input_shape), num_classes(model)) if sparse else model, path)
    return os.path.getsize(path)


def _layers(model):
    return [(name, m) for name, m in model.named_modules() if metrics.weight_counts(m)]


def num_classes(model) -> int:
    """Outputs of the model's last weighted layer."""
    name, last = _layers(model)[-1]
    return int(last.weight.shape[0])


def add_stage(report, model, stage, accuracy, scratch, input_shape, quantization=None,
              index_bits=None, path=None, evaluate=None):
    """Measure `model` after `stage` and add it to `report` (a dict, changed in place)."""
    entry = {"test_accuracy": accuracy, "density": metrics.sparsity_summary(model)["density"],
             "layers": [{"name": n, "weights": metrics.weight_counts(m)[1],
                         "kept": metrics.weight_counts(m)[0]} for n, m in _layers(model)]}
    if stage == "dense":
        report["dense_file_bytes"] = dense_file_bytes(model, os.path.join(scratch, "dense.st"),
                                                      input_shape)
    if stage != "quantized":
        file = os.path.join(scratch, f"{stage}.safetensors")
        io.save(model, file)
        entry["file_bytes"] = os.path.getsize(file)
        entry["energy"] = metrics.inference_energy(model, input_shape)
    else:
        shape = dict(input_shape=input_shape, num_classes=num_classes(model))
        fixed = save_compressed(model, os.path.join(scratch, "fixed.sndc"), quantization,
                                index_bits, use_huffman=False, **shape)
        coded = save_compressed(model, path, quantization, index_bits, **shape)
        entry["fixed_file_bytes"], entry["file_bytes"] = fixed["bytes"], coded["bytes"]
        entry["header_bytes"] = coded["header_bytes"]
        entry["path"] = os.fspath(path)
        for row, q, h in zip(entry["layers"], fixed["layers"], coded["layers"]):
            _, _, bits = quantization[row["name"]]
            row.update(_layer_bits(q, h, bits, index_bits[row["name"]], row["weights"]))
        entry["energy"] = metrics.inference_energy(
            model, input_shape, {r["name"]: r["bytes_huffman"] for r in entry["layers"]})
        decoded = load_compressed(path, form="csr")
        entry["decodes_exactly"] = all(
            np.array_equal(decoded.get_submodule(n).weight.to_dense(), m.weight.to_dense())
            for n, m in _layers(model))
        if evaluate is not None:
            entry["accuracy_from_file"] = evaluate(load_compressed(path))
    report[stage] = entry
    if stage == "quantized":
        dense = report["dense_file_bytes"]
        report["ratios"] = {"pruned_weights": 1 / report["pruned"]["density"],
                            "pruned_file": dense / report["pruned"]["file_bytes"],
                            "quantized_file": dense / entry["fixed_file_bytes"],
                            "huffman_file": dense / entry["file_bytes"]}
    return report


def _layer_bits(fixed, coded, bits, index_bits, dense_weights) -> dict:
    """Per-layer bits per kept weight and the layer's rate (its bytes over 4 per dense weight)."""
    nnz = max(fixed["nnz"], 1)
    fixed_bytes = fixed["codebook_bytes"] + -(-fixed["weight_stream_bits"] // 8) + \
        -(-fixed["index_stream_bits"] // 8)
    coded_bytes = coded["codebook_bytes"] + coded["weight_table_bytes"] + \
        coded["index_table_bytes"] + -(-coded["weight_stream_bits"] // 8) + \
        -(-coded["index_stream_bits"] // 8)
    return {"weight_bits": bits, "weight_bits_huffman": coded["weight_stream_bits"] / nnz,
            "index_bits": index_bits, "index_bits_with_fillers": fixed["index_stream_bits"] / nnz,
            "index_bits_huffman": coded["index_stream_bits"] / nnz,
            "fillers": fixed["entries"] - fixed["nnz"], "clusters": fixed["codebook_bytes"] // 4,
            "bytes_fixed": fixed_bytes, "bytes_huffman": coded_bytes,
            "rate_fixed": fixed_bytes / (4 * dense_weights),
            "rate_huffman": coded_bytes / (4 * dense_weights)}


def _k(n):
    return f"{n / 1000:.1f}K" if n < 10_000 else f"{n / 1000:.0f}K"


def paper_table(report, model_name) -> str:
    """Tables 2/3 layout: our rows, each followed by the paper's (when it has the model)."""
    q = report["quantized"]
    paper = PAPER_TABLES.get(model_name)
    lines = ["| layer | #weights | weights % (P) | weight bits (P+Q) | weight bits (P+Q+H) | "
             "index bits (P+Q) | index bits (P+Q+H) | compress rate (P+Q) | compress rate (P+Q+H) |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = q["layers"]
    kept, weights = sum(r["kept"] for r in rows), sum(r["weights"] for r in rows)
    for i, r in enumerate(rows):
        lines.append(f"| {r['name']} (ours) | {_k(r['weights'])} | {100 * r['kept'] / r['weights']:.1f} % "
                     f"| {r['weight_bits']} | {r['weight_bits_huffman']:.2f} | {r['index_bits']} "
                     f"({r['index_bits_with_fillers']:.2f} with fillers) | "
                     f"{r['index_bits_huffman']:.2f} | {100 * r['rate_fixed']:.2f} % | "
                     f"{100 * r['rate_huffman']:.2f} % |")
        if paper and i < len(paper[1]) - 1:
            lines.append(_paper_row(paper[1][i]))
    wb = sum(r["weight_bits"] * r["kept"] for r in rows) / kept
    wh = sum(r["weight_bits_huffman"] * r["kept"] for r in rows) / kept
    ih = sum(r["index_bits_huffman"] * r["kept"] for r in rows) / kept
    ratios = report["ratios"]
    lines.append(f"| total (ours, the files) | {_k(weights)} | {100 * kept / weights:.1f} % "
                 f"({ratios['pruned_weights']:.1f}x) | {wb:.1f} | {wh:.2f} | "
                 f"{rows[0]['index_bits']} | {ih:.2f} | "
                 f"{100 / ratios['quantized_file']:.2f} % ({ratios['quantized_file']:.1f}x) | "
                 f"{100 / ratios['huffman_file']:.2f} % ({ratios['huffman_file']:.1f}x) |")
    if paper:
        lines.append(_paper_row(paper[1][-1], paper[2]))
    return "\n".join(lines)


def _paper_row(row, totals=None):
    name, n, kept, wb, wh, ib, ih, rq, rh = row
    if totals:
        return (f"| total (paper, {name}) | {n} | {kept} % ({totals['pruned']}x) | {wb} | {wh} | "
                f"{ib} | {ih} | {rq} % ({totals['quantized']}x) | {rh} % ({totals['huffman']}x) |")
    return f"| {name} (paper) | {n} | {kept} % | {wb} | {wh} | {ib} | {ih} | {rq} % | {rh} % |"


def stage_table(report, model_name) -> str:
    """Accuracy, bytes on disk, ratio and inference energy after each stage."""
    paper = PAPER_TABLES.get(model_name, (None, None, {}))[2]
    dense, r = report["dense_file_bytes"], report["ratios"]
    rows = [("dense", report["dense"], dense, 1.0, "1x"),
            ("pruned (CSR safetensors file)", report["pruned"], report["pruned"]["file_bytes"],
             r["pruned_file"], f"{paper['pruned']}x (weights kept)" if paper else ""),
            ("+ quantization (fixed-width codes)", report["quantized"],
             report["quantized"]["fixed_file_bytes"], r["quantized_file"],
             f"{paper['quantized']}x" if paper else ""),
            ("+ Huffman coding (the file)", report["quantized"], report["quantized"]["file_bytes"],
             r["huffman_file"], f"{paper['huffman']}x" if paper else "")]
    lines = ["| stage | test accuracy | file bytes | ratio | paper | energy / inference |",
             "|---|---|---|---|---|---|"]
    for name, entry, size, ratio, theirs in rows:
        energy = entry.get("energy", {}).get("total_pj")
        energy = f"{energy / 1e6:.3f} uJ" if energy is not None else ""
        lines.append(f"| {name} | {100 * entry['test_accuracy']:.2f} % | {size:,} | "
                     f"{ratio:.1f}x | {theirs} | {energy} |")
    lines.append(f"\nWeights kept: {100 * report['pruned']['density']:.2f} % "
                 f"({r['pruned_weights']:.1f}x fewer; the paper's pruning column counts this)")
    return "\n".join(lines)


def energy_table(report) -> str:
    """Inference energy per layer and stage (sparsenet.metrics: Horowitz 45 nm, weights read
    once per inference from SRAM if the layer's bytes fit on chip, else from DRAM)."""
    stages = [("dense", report["dense"]["energy"]), ("pruned", report["pruned"]["energy"]),
              ("compressed", report["quantized"]["energy"])]
    lines = ["| layer | MACs (dense, kept) | " + " | ".join(f"{name}: bytes, memory, nJ" for name, _ in stages)
             + " |", "|---|---|" + "---|" * len(stages)]
    for i, row in enumerate(stages[0][1]["layers"]):
        cells = [f"{e['layers'][i]['weight_bytes']:,}, {e['layers'][i]['memory']}, "
                 f"{e['layers'][i]['total_pj'] / 1e3:,.1f}" for _, e in stages]
        lines.append(f"| {row['name']} | {row['macs']:,}, {stages[-1][1]['layers'][i]['macs']:,} | "
                     + " | ".join(cells) + " |")
    totals = [f"fetch {e['fetch_pj'] / 1e3:,.1f} + arithmetic {e['arithmetic_pj'] / 1e3:,.1f} = "
              f"**{e['total_pj'] / 1e3:,.1f}**" for _, e in stages]
    lines.append("| total (nJ) | | " + " | ".join(totals) + " |")
    return "\n".join(lines) + (f"\n\nOn chip: {stages[0][1]['on_chip_bytes']:,} bytes of SRAM; "
                               f"{stages[0][1]['assumptions']}.")
