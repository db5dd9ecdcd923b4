"""Seconds per training step (forward, backward, SGD with momentum) at batch 128.

sparsenet against PyTorch on the CPU with the same thread count (when PyTorch is installed).
Both spend most of the step in BLAS matmuls, so the ratio measures the engine's own overhead.

    python benchmarks/train_speed.py [--quick]

A --quick run writes benchmarks/results/quick/ (git-ignored), never the committed records.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table, median_time, threads, torch_or_none, write_record  # noqa: E402

import sparsenet as sn  # noqa: E402
import sparsenet.metrics  # noqa: E402,F401
import sparsenet.nn.functional as F  # noqa: E402

BATCH = 128


def sparsenet_step(spec, batch=BATCH, sparsify=None):
    """A closure running one training step of `spec`; `sparsify(model)` may replace layers."""
    sn.manual_seed(0)
    model = sn.nn.build_model(spec)
    if sparsify is not None:
        model = sparsify(model)
    opt = sn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = sn.Tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, batch)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, model, opt


def torch_step(torch, spec, batch=BATCH):
    sizes = {"lenet300": [784, 300, 100, 10]}.get(spec) or [int(s) for s in spec[4:].split("-")]
    layers = [torch.nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def dense_rows(repeats):
    torch = torch_or_none()
    rows = []
    for spec in ("lenet300", "mlp:784-4096-4096-10"):
        step, _, _ = sparsenet_step(spec)
        t_sn = median_time(step, repeats=repeats, warmup=3)
        t_torch = median_time(torch_step(torch, spec), repeats=repeats, warmup=3) if torch else None
        rows.append({"model": spec, "batch": BATCH, "threads": threads(),
                     "sparsenet_s": t_sn, "torch_s": t_torch,
                     "ratio_vs_torch": t_sn / t_torch if t_torch else None})
    return rows


def sparse_rows(repeats, sparsities=(0.9, 0.99), formats=("csr", "block", "masked")):
    """The 4096-wide MLP: a sparse training step against the dense step, and the bytes held."""
    spec = "mlp:784-4096-4096-10"
    dense_step, dense_model, dense_opt = sparsenet_step(spec)
    t_dense = median_time(dense_step, repeats=repeats, warmup=2)
    dense_bytes = sn.metrics.parameter_bytes(dense_model, dense_opt)["total"]
    rows = []
    for sparsity in sparsities:
        for fmt in formats:
            # 16x16 blocks do not tile the 10-output layer: it stays dense in the block rows
            options = {"block_size": 16, "keep_dense": ("last",)} if fmt == "block" else {}
            step, model, opt = sparsenet_step(
                spec, sparsify=lambda m: sn.sparsify(m, sparsity=sparsity, format=fmt, **options))
            t = median_time(step, repeats=repeats, warmup=2)
            nbytes = sn.metrics.parameter_bytes(model, opt)["total"]
            rows.append({"model": spec, "format": fmt, "sparsity": sparsity, "batch": BATCH,
                         "sparse_s": t, "dense_s": t_dense, "speedup": t_dense / t,
                         "bytes": nbytes, "dense_bytes": dense_bytes,
                         "bytes_fraction": nbytes / dense_bytes})
    return rows


EPOCH_CELLS = (
    # (model, method, sparsity, method options): each sparse cell against the dense epoch of
    # the same model, measured in the same run
    ("mlp:784-1000-1000-1000-10", "dense", 0.0, {}),
    ("mlp:784-1000-1000-1000-10", "set", 0.0, {"epsilon": 20}),        # SET's own network
    ("mlp:784-4096-4096-10", "dense", 0.0, {}),
    ("mlp:784-4096-4096-10", "rigl", 0.99, {"format": "csr"}),
)


def epoch_rows(cells=EPOCH_CELLS, data_source="auto"):
    """Wall time of one whole training epoch (469 steps of batch 128 on Fashion-MNIST's 60,000
    training images; the bundled subset if the full set is not installed: `data` says which)
    at the engine's defaults (its thread policy included), topology updates included; every
    sparse cell against the dense epoch of its model in the same run."""
    from sparsenet.train import TrainConfig, load_arrays, train_model
    data = load_arrays(data_source)
    rows, dense = [], {}
    for spec, method, sparsity, options in cells:
        config = TrainConfig(model=spec, method=method, sparsity=sparsity, epochs=1,
                             progress=False, method_options=dict(options))
        _, record = train_model(config, log=None, data=data)
        updates = len(record["method_details"].get("updates", []) or [])
        row = {"model": spec, "method": method, "sparsity": round(record["sparsity"], 4),
               "options": options, "epoch_s": record["history"][0]["seconds"],
               "steps": record["steps"], "topology_updates": updates, "data": data[4],
               "threads": record["threads"], "test_accuracy": record["test_accuracy"]}
        if method == "dense":
            dense[spec] = row["epoch_s"]
        row["speedup_vs_dense"] = dense[spec] / row["epoch_s"] if spec in dense else None
        rows.append(row)
    return rows


def epoch_table(erows):
    return markdown_table(
        ["model", "method", "sparsity", "steps", "topology updates", "epoch seconds",
         "speedup vs dense", "test accuracy"],
        [[r["model"], r["method"] + (f" {r['options']}" if r["options"] else ""),
          r["sparsity"], r["steps"], r["topology_updates"], f"{r['epoch_s']:.2f}",
          f"{r['speedup_vs_dense']:.1f}x" if r["speedup_vs_dense"] else "",
          f"{100 * r['test_accuracy']:.2f} %"] for r in erows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats; records go to benchmarks/results/quick/")
    parser.add_argument("--no-epoch", action="store_true",
                        help="skip the one-epoch timings (dense vs SET and RigL, a few minutes)")
    parser.add_argument("--epochs-only", action="store_true",
                        help="only the one-epoch timings")
    parser.add_argument("--out", default=None,
                        help="record name under benchmarks/results/ (default train_speed)")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 20
    if args.epochs_only:
        erows = epoch_rows()
        etable = epoch_table(erows)
        print(etable)
        print("written", write_record(args.out or "train_speed-epochs", erows, etable,
                                      quick=args.quick))
        return
    rows = dense_rows(repeats)
    table = markdown_table(
        ["model", "batch", "threads", "sparsenet ms/step", "PyTorch ms/step", "sparsenet / PyTorch"],
        [[r["model"], r["batch"], r["threads"], f"{1e3 * r['sparsenet_s']:.2f}",
          f"{1e3 * r['torch_s']:.2f}" if r["torch_s"] else "n/a",
          f"{r['ratio_vs_torch']:.2f}" if r["ratio_vs_torch"] else "n/a"] for r in rows])
    srows = sparse_rows(max(3, repeats // 2))
    stable = markdown_table(
        ["model", "format", "sparsity", "sparse ms/step", "dense ms/step", "speedup",
         "bytes (weights+grads+state)", "fraction of dense bytes"],
        [[r["model"], r["format"], r["sparsity"], f"{1e3 * r['sparse_s']:.1f}",
          f"{1e3 * r['dense_s']:.1f}", f"{r['speedup']:.1f}x", f"{r['bytes']:,}",
          f"1/{1 / r['bytes_fraction']:.0f}"] for r in srows])
    erows = epoch_rows() if not args.no_epoch else []
    etable = epoch_table(erows)
    text = table + "\n\n" + stable + ("\n\n" + etable if erows else "")
    print(text)
    print("written", write_record(args.out or "train_speed", rows + srows + erows, text,
                                  {"repeats": repeats}, quick=args.quick))


if __name__ == "__main__":
    main()
