"""`sparsenet compress` and `sparsenet evaluate`: Deep Compression from the command line.

    sparsenet compress --model lenet300 [--from model.safetensors] [--sparsity S | --densities
                       0.08,0.09,0.26] [--bits 6 | --bits conv=8,fc=5 | --bits 8,8,5,5]
                       [--index-bits 5] --out FILE [--json REC]   (+ every `sparsenet train` option)
    sparsenet evaluate FILE [--data auto] [--json REC]

`compress` trains the dense model first unless `--from` gives one, then prunes, quantizes and
Huffman-codes it (sparsenet/algorithms/deep_compression.py; stage options such as rounds or
centroid_lr through `--opt`), writes the compressed file and prints the stage table and the
paper's Tables 2/3 beside ours. `evaluate` scores any saved model, safetensors or compressed:
test accuracy, per-class accuracy, bytes on disk and inference energy.
"""
from __future__ import annotations

import json
import os


def parse_bits(text):
    """--bits: 6 (every layer) | 8,8,5,5 (per layer) | conv=8,fc=5 (per layer type)."""
    if text is None:
        return None
    try:
        if "=" in text:
            pairs = [item.split("=") for item in text.split(",")]
            bits = {key.strip(): int(value) for key, value in pairs}
            if not set(bits) <= {"conv", "fc"}:
                raise ValueError
            return bits
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--bits expects 6, 8,8,5,5 or conv=8,fc=5, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def parse_densities(text):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--densities expects comma-separated densities, got {text!r}") from None


def cmd_compress(args):
    from . import io
    from .cli import config_from_args
    from .compression_report import energy_table, paper_table, stage_table
    from .train import train_model
    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a directory; give a file name")
    args.method = "deep_compression"
    config = config_from_args(args)
    options = dict(config.method_options, out=args.out)
    for key, value in (("bits", parse_bits(args.bits)), ("densities", parse_densities(args.densities)),
                       ("index_bits", args.index_bits)):
        if value is not None:
            options[key] = value
    model = None
    if args.from_path:
        model = io.load(args.from_path)
        if getattr(model, "spec", None) != config.model:
            raise ValueError(f"--from {args.from_path} holds a {getattr(model, 'spec', None)} model, "
                             f"--model says {config.model}")
        options["pretrained"] = True
    config.method_options = options
    model, record = train_model(config, log=None if args.no_progress else print, model=model)
    report = record["deep_compression"]
    print(stage_table(report, config.model))
    print()
    print(paper_table(report, config.model))
    print()
    print(energy_table(report))
    print(f"\ncompressed model written to {args.out} ({report['quantized']['file_bytes']:,} bytes, "
          f"{report['ratios']['huffman_file']:.1f}x smaller than the dense float32 file)")
    if args.json:
        _write_json(args.json, record)


def evaluate_file(path, data="auto", dataset="fashion-mnist") -> dict:
    """Test accuracy, per-class accuracy, bytes on disk and inference energy of a saved model."""
    from . import io, metrics
    from .compressed_model import is_compressed_file, load_compressed
    from .train import evaluate, load_arrays
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path}")
    compressed = is_compressed_file(path)
    model = load_compressed(path) if compressed else io.load(path)
    x_train, y_train, x_test, y_test, origin = load_arrays(data, dataset)
    accuracy, predictions = evaluate(model, x_test, y_test)
    storage = None
    if compressed:
        from .compressed_io import read_compressed
        storage = {layer.name: layer.file_bytes for layer in read_compressed(path).layers}
    return {"file": os.fspath(path), "format": "deep-compression" if compressed else "safetensors",
            "file_bytes": os.path.getsize(path), "test_accuracy": accuracy,
            "per_class_accuracy": metrics.per_class_accuracy(predictions, y_test,
                                                             int(y_test.max()) + 1),
            "density": metrics.sparsity_summary(model)["density"],
            "energy": metrics.inference_energy(model, x_test.shape[1:], storage),
            "data": {"origin": origin, "test": int(len(y_test))}}


def cmd_evaluate(args):
    result = evaluate_file(args.file, args.data, args.dataset)
    classes = " ".join(f"{100 * a:.1f}" if a is not None else "-"
                       for a in result["per_class_accuracy"])
    print(f"{result['file']} ({result['format']}, {result['file_bytes']:,} bytes): test accuracy "
          f"{100 * result['test_accuracy']:.2f} % on {result['data']['test']:,} images, density "
          f"{result['density']:.4f}, energy {result['energy']['total_pj'] / 1e6:.3f} uJ per inference")
    print(f"per class (%): {classes}")
    if args.json:
        _write_json(args.json, result)


def _write_json(path, record):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    print(f"record written to {path}")


def add_compress_parser(sub, formatter_class=None):
    from .cli import add_train_arguments
    help = "Deep Compression: prune, quantize, Huffman-code to a file"
    p = sub.add_parser("compress", help=help, description=help, formatter_class=formatter_class)
    add_train_arguments(p)
    p.add_argument("--from", dest="from_path", help="start from this trained model (safetensors) "
                   "instead of training the dense model")
    p.add_argument("--densities", help="per-layer densities, e.g. 0.08,0.09,0.26 (default: the "
                   "paper's for lenet300 and lenet5)")
    p.add_argument("--bits", help="weight bits: 6 | 8,8,5,5 | conv=8,fc=5 (default: the paper's)")
    p.add_argument("--index-bits", type=int, default=None, help="bits of a relative index (5)")
    p.add_argument("--out", required=True, help="the compressed file to write")
    p.add_argument("--json", help="write the run record (with the stage report) to this file")
    p.set_defaults(func=cmd_compress)

    help = "test accuracy, per class, bytes and energy of a saved model"
    p = sub.add_parser("evaluate", help=help, description=help, formatter_class=formatter_class)
    p.add_argument("file", help="a model file: safetensors (sparsenet save) or compressed")
    p.add_argument("--data", default="auto", help="auto | subset | full | a directory")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--json", help="write the result to this file")
    p.set_defaults(func=cmd_evaluate)
