"""Character-level language models on the bundled Shakespeare: dense, mixture-of-experts,
sparse FFNs. The tables of issue 13, reproduced.

Parts (`--part`, default all):
- `train`: every cell for `--seeds` seeds (default 2), validation bits per character and wall
  time. The model is gpt:L2-D128-H4-T64 (2 blocks, width 128, 4 heads, 64 characters of
  context; 0.43 M weights), trained `--steps` steps (default 2000) of 16 windows (1,024
  characters a step, 2.0 M in all: under half a pass over the 4.4 M training characters),
  AdamW lr 3e-3, weight decay 0.1, cosine schedule with 5 % warm-up. Sized for 2 shared cores:
  a run is minutes of CPU time, not hours. Cells:
      dense          the dense transformer
      moe            8 experts, top-2, noisy top-k gating with importance and load losses
                     (0.1 each): each expert 128-256-128, so a token uses as many FFN weights as
                     the dense model's 128-512-128
      moe-nobalance  the same without the balancing losses (B0)
      rigl           RigL at 90 % on the attention projections and FFNs (head dense, ERK)
      sr_ste         SR-STE 2:4 on the FFNs (attention dense)
  Expert load max/mean is tokens x choices per expert in a batch: its most-loaded expert's
  share against an even split (1 is even; top-2 of 8 caps it at 4), per step of training
  (the goal's measure: the mean over the last tenth of the steps and the layers) and, at the
  end, over the validation split's batches with evaluation routing (no noise).
  Records: benchmarks/results/lm/<cell>-<steps>steps-s<seed>.json; table: benchmarks/results/lm.md.
- `timing`: forward + backward seconds per token of the MoE layer against the dense FFN of the
  same active size (one training batch, 1,024 tokens of width 128: dense 128-512-128 against 8
  experts 128-256-128, top-2), medians over interleaved repeats, at one thread and at the
  default threads, each in a fresh process. Record: benchmarks/results/lm-timing.json (table in lm.md).
- `lenet300`: SR-STE 2:4 against dense on LeNet-300-100, full Fashion-MNIST, 20 epochs, the
  `nm` suite of benchmarks/accuracy.py (table: results/accuracy-nm-lenet300.md).

    python benchmarks/lm.py --jobs 2                    # everything (hours on 2 shared cores)
    python benchmarks/lm.py --part train --cells dense,moe --seeds 1
    python benchmarks/lm.py --part table                # the table from the records on disk

A part reuses records already on disk (delete them to rerun). `--jobs N` trains N runs at
once, each on one thread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, markdown_table, train_runs  # noqa: E402

MODEL = "gpt:L2-D128-H4-T64"
TRAINING = dict(dataset="shakespeare", optimizer="adamw", lr=3e-3, weight_decay=0.1,
                batch_size=16, schedule="cosine")
CELLS = {
    "dense": (MODEL, "dense", None, {}),
    "moe": (MODEL + "-E8-K2", "dense", None, {}),
    "moe-nobalance": (MODEL + "-E8-K2-B0", "dense", None, {}),
    # 90 % of the attention and FFN weights, the head dense: RigL's sparsity is of all the
    # weighted layers, so it is 0.9 times their share (rigl_sparsity)
    "rigl": (MODEL, "rigl", "rigl", {"dense_layers": ["last"]}),
    "sr_ste": (MODEL, "sr_ste", None, {"layers": "*ffn*"}),     # 2:4 sets its own sparsity
}
LM_DIR = os.path.join(RESULTS, "lm")


# ----- training ---------------------------------------------------------------------------------
def rigl_sparsity(model_spec, sparsity=0.9, vocabulary=83):
    """The overall sparsity that leaves the layers other than the head at `sparsity`."""
    from sparsenet.algorithms.common import prunable_layers
    from sparsenet.nn import build_model
    sizes = [layer.weight.size for _, layer in
             prunable_layers(build_model(model_spec, num_classes=vocabulary))]
    return sparsity * sum(sizes[:-1]) / sum(sizes)


def record_path(cell, seed, steps):
    """Records of runs of different lengths live side by side: the table compares one length."""
    return os.path.join(LM_DIR, f"{cell}-{steps}steps-s{seed}.json")


def train(cells, seeds, steps, jobs):
    os.makedirs(LM_DIR, exist_ok=True)
    todo = []
    for cell in cells:
        model, method, sparsity, options = CELLS[cell]
        sparsity = rigl_sparsity(model) if sparsity == "rigl" else sparsity
        for seed in range(seeds):
            path = record_path(cell, seed, steps)
            if not os.path.exists(path):
                fields = dict(TRAINING, model=model, method=method, sparsity=sparsity, seed=seed,
                              steps=steps)
                todo.append((fields, options, path))
    print(f"{len(todo)} runs to do, {jobs} at once", flush=True)
    train_runs(todo, jobs)


def compact(record) -> str:
    """JSON with indent 1, but every list of plain numbers on one line: a record's per-step
    arrays (2,000 steps x layers) would otherwise take a line per number."""
    text = json.dumps(record, indent=1)
    return re.sub(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def compact_records():
    for name in sorted(os.listdir(LM_DIR)) if os.path.isdir(LM_DIR) else []:
        path = os.path.join(LM_DIR, name)
        with open(path) as f:
            text = f.read()
        record = json.loads(text)
        if compact(record) != text:
            with open(path, "w") as f:
                f.write(compact(record))


def load_cells(seeds, steps):
    found = {}
    for cell in CELLS:
        rs = [json.load(open(record_path(cell, s, steps))) for s in range(seeds)
              if os.path.exists(record_path(cell, s, steps))]
        if rs:
            found[cell] = rs
    return found


def mean(values):
    values = list(values)
    return statistics.mean(values) if values else float("nan")


def spread(values):
    values = list(values)
    return f"{mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 \
        else f"{mean(values):.4f}"


def sparse_density(record):
    """Density of the layers the method sparsified (the others are dense)."""
    sparse = [layer for layer in record["layers"] if layer["density"] < 1]
    if not sparse:
        return 1.0
    return sum(layer["nnz"] for layer in sparse) / sum(
        layer["shape"][0] * layer["shape"][1] for layer in sparse)


def moe_stat(record, key):
    summary = (record.get("moe") or {}).get("summary", {})
    return summary[key]["last_tenth"] if key in summary else None


def validation_load(record):
    """Mean over MoE layers of the per-batch load max/mean on the validation split."""
    loads = (record.get("moe") or {}).get("validation_load")
    return mean(v["batch_load_max_mean"] for v in loads.values()) if loads else None


def train_table(found):
    dense = mean(r["val_bpc"] for r in found.get("dense", []))
    rows = []
    for cell, rs in found.items():
        load = [moe_stat(r, "load_max_mean") for r in rs]
        eval_load = [validation_load(r) for r in rs if validation_load(r) is not None]
        dropped = [moe_stat(r, "dropped") for r in rs]
        rows.append([cell, rs[0]["model"], rs[0]["method"], spread(r["val_bpc"] for r in rs),
                     f"{mean(r['val_bpc'] for r in rs) - dense:+.4f}",
                     spread(r["test_bpc"] for r in rs),
                     f"{mean(load):.3f}" if load[0] is not None else "",
                     f"{mean(eval_load):.3f}" if eval_load else "",
                     f"{mean(dropped):.4f}" if dropped[0] is not None else "",
                     f"{mean(sparse_density(r) for r in rs):.3f}",
                     f"{mean(r['active_weights_per_token'] for r in rs):,.0f}",
                     f"{mean(r['weights_stored'] for r in rs):,.0f}",
                     f"{mean(r['flops']['training_relative'] for r in rs):.3f}",
                     f"{mean(r['seconds_per_step'] for r in rs):.3f}",
                     f"{mean(r['train_seconds'] for r in rs) / 60:.1f}", len(rs)])
    header = ["cell", "model", "method", "val bits/char", "vs dense", "test bits/char",
              "load max/mean (training, last 10 %)", "load max/mean (validation)", "dropped", "density of sparsified layers",
              "weights used per token", "weights stored", "train FLOPs vs dense",
              "s/step", "train minutes", "seeds"]
    return markdown_table(header, rows)


# ----- timing -------------------------------------------------------------------------------------
TIMING_SCRIPT = r"""
import json, statistics, time
import numpy as np
import sparsenet as sn
from sparsenet import Tensor, threads
from sparsenet.nn.moe import MoE
from sparsenet.nn.transformer import FeedForward
tokens, width, repeats = 1024, 128, 25
rng = np.random.default_rng(0)
x = rng.standard_normal((tokens, width)).astype(np.float32)
g = rng.standard_normal((tokens, width)).astype(np.float32)
layers = {"dense FFN 128-512-128": FeedForward(width, 512),
          "MoE 8 x 128-256-128, top-2": MoE(width, 256, 8, 2)}
# the thread policy a training run applies (threads.py): one pool owns the cores, the other
# runs on one thread; without it BLAS and Numba fight over the cores
policy = threads.apply_policy(layers["MoE 8 x 128-256-128, top-2"])
policy = {k: policy[k] for k in ("owner", "numba_threads", "blas_threads")}
def step(layer):
    y = layer(Tensor(x, requires_grad=True))
    loss = (y * Tensor(g)).sum()
    if getattr(layer, "aux_loss", None) is not None:
        loss = loss + layer.aux_loss
    loss.backward()
times = {name: [] for name in layers}
for layer in layers.values():
    step(layer); step(layer)
for _ in range(repeats):                       # interleaved: both see the same machine load
    for name, layer in layers.items():
        t0 = time.perf_counter(); step(layer); times[name].append(time.perf_counter() - t0)
moe = layers["MoE 8 x 128-256-128, top-2"]
out = {name: statistics.median(ts) / tokens for name, ts in times.items()}
out["load_max_mean"] = moe.stats["load_max_mean"]
out["policy"] = policy
print(json.dumps(out))
"""


def timing():
    rows, load_before = [], os.getloadavg()[0]
    for label, env in (("1", {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
                       ("default", {})):
        result = subprocess.run([sys.executable, "-c", TIMING_SCRIPT], capture_output=True,
                                text=True, check=True, env=dict(os.environ, **env))
        out = json.loads(result.stdout.strip().splitlines()[-1])
        names = [k for k in out if k not in ("load_max_mean", "policy")]
        dense, moe = out[names[0]], out[names[1]]
        rows.append({"threads": label, "dense_us_per_token": 1e6 * dense,
                     "moe_us_per_token": 1e6 * moe, "ratio": moe / dense,
                     "load_max_mean": out["load_max_mean"], "policy": out["policy"]})
        print(f"threads {label}: dense {1e6 * dense:.2f} us/token, MoE {1e6 * moe:.2f} "
              f"us/token, ratio {moe / dense:.2f}", flush=True)
    with open(os.path.join(RESULTS, "lm-timing.json"), "w") as f:
        json.dump({"machine": machine(), "rows": rows,
                   "load_average": [load_before, os.getloadavg()[0]]}, f, indent=1)
    return rows


def timing_table(rows):
    return markdown_table(
        ["threads", "pools (owner; Numba, BLAS threads)", "dense FFN µs/token (fwd+bwd)",
         "MoE µs/token (fwd+bwd)", "MoE / dense", "expert load max/mean"],
        [[r["threads"], _pools(r), f"{r['dense_us_per_token']:.2f}",
          f"{r['moe_us_per_token']:.2f}", f"{r['ratio']:.2f}", f"{r['load_max_mean']:.2f}"]
         for r in rows])


def _pools(row):
    policy = row.get("policy")
    if not policy:
        return ("1, 1 (environment; no thread policy)" if row["threads"] == "1"
                else "libraries' defaults (no thread policy)")
    return f"{policy['owner']}; {policy['numba_threads']}, {policy['blas_threads']}"


# ----- the goals ----------------------------------------------------------------------------------
def goals(found, timing_rows):
    lines = []

    def check(text, ok):
        lines.append(f"- {text}: **{'yes' if ok else 'no'}**")
    bpc = {cell: mean(r["val_bpc"] for r in rs) for cell, rs in found.items()}
    if {"dense", "moe"} <= set(bpc):
        check(f"MoE 8 x top-2 below dense at equal steps and weights per token: "
              f"{bpc['moe']:.4f} vs {bpc['dense']:.4f} bits/char", bpc["moe"] < bpc["dense"])
    if {"moe", "moe-nobalance"} <= set(bpc):
        balanced = mean(moe_stat(r, "load_max_mean") for r in found["moe"])
        free = mean(moe_stat(r, "load_max_mean") for r in found["moe-nobalance"])
        check(f"without the balancing loss, load max/mean at least twice the balanced run's: "
              f"{free:.3f} vs {balanced:.3f} ({free / balanced:.2f}x)", free >= 2 * balanced)
        check(f"balanced runs keep max/mean <= 1.3: {balanced:.3f}", balanced <= 1.3)
        evaluated = {c: [validation_load(r) for r in found[c] if validation_load(r)]
                     for c in ("moe", "moe-nobalance")}
        if all(evaluated.values()):
            ratio = mean(evaluated["moe-nobalance"]) / mean(evaluated["moe"])
            lines.append(f"- the same on the validation split (evaluation routing, no noise; "
                         f"not the goal's measure): {mean(evaluated['moe-nobalance']):.3f} vs "
                         f"{mean(evaluated['moe']):.3f} ({ratio:.2f}x)")
    for r in timing_rows:
        check(f"MoE forward + backward per token <= 1.5x the dense FFN ({r['threads']} "
              f"thread(s)): {r['ratio']:.2f}x", r["ratio"] <= 1.5)
    if {"dense", "sr_ste"} <= set(bpc):
        check(f"SR-STE 2:4 on the FFNs within 0.05 bits/char of dense: "
              f"{bpc['sr_ste'] - bpc['dense']:+.4f}", bpc["sr_ste"] - bpc["dense"] <= 0.05)
    nm_dir = os.path.join(RESULTS, "accuracy", "nm-lenet300")
    if os.path.isdir(nm_dir):
        recs = [json.load(open(os.path.join(nm_dir, n))) for n in sorted(os.listdir(nm_dir))]
        acc = {m: mean(100 * r["test_accuracy"] for r in recs if r["method"] == m)
               for m in ("dense", "sr_ste")}
    if os.path.isdir(nm_dir) and not any(math.isnan(v) for v in acc.values()):
        check(f"SR-STE 2:4 within 0.5 points of dense on lenet300 (full Fashion-MNIST, 20 "
              f"epochs): {acc['sr_ste']:.2f} vs {acc['dense']:.2f} %",
              acc["dense"] - acc["sr_ste"] <= 0.5)
    return "\n".join(lines)


def earlier_timing() -> str:
    """The table of lm-timing-no-thread-policy.json, if kept: the same timing by the script's
    first version, with both libraries' pools at their defaults (before the thread policy)."""
    path = os.path.join(RESULTS, "lm-timing-no-thread-policy.json")
    if not os.path.exists(path):
        return ""
    earlier = json.load(open(path))
    return (f"Without the thread policy (both pools at the libraries' defaults; measured "
            f"{earlier['machine']['date']} by the script's first version, record "
            f"lm-timing-no-thread-policy.json):\n\n{timing_table(earlier['rows'])}\n\n")


def write_table(seeds, steps):
    compact_records()
    found = load_cells(seeds, steps)
    timing_path = os.path.join(RESULTS, "lm-timing.json")
    timing = json.load(open(timing_path)) if os.path.exists(timing_path) else {"rows": []}
    timing_rows = timing["rows"]
    measured = (f"Measured {timing['machine']['date']} on {timing['machine']['cpus']} cores"
                + (f", 1-minute load average {timing['load_average'][0]:.1f} before and "
                   f"{timing['load_average'][1]:.1f} after" if "load_average" in timing else "")
                + "; medians of 25 interleaved repeats.\n\n") if timing_rows else ""
    text = (f"# Character-level language models: {MODEL} on Shakespeare's plays\n\n"
            f"Produced by `python benchmarks/lm.py --steps {steps} --seeds {seeds}` (records in "
            f"results/lm/*-{steps}steps-s*.json). {steps} steps of "
            f"16 x 64 characters, AdamW lr 3e-3, weight decay 0.1, cosine schedule, 5 % warm-up; "
            f"bits per character on the whole validation split (Julius Caesar, Twelfth Night; "
            f"230,987 characters) and the test split (Macbeth, The Tempest), mean ± std over "
            f"seeds. Each run had one thread, and `--jobs` of them ran at once on a shared 2-core "
            f"machine, so seconds are indicative only (the timing table measures in one "
            f"process).\n\n"
            f"{train_table(found)}\n\n## MoE layer time per token\n\n"
            f"{measured}{timing_table(timing_rows) if timing_rows else '(not run)'}\n\n"
            f"{earlier_timing()}"
            f"## Goals (issue 13)\n\n{goals(found, timing_rows)}\n")
    with open(os.path.join(RESULTS, "lm.md"), "w") as f:
        f.write(text)
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all",
                        choices=["all", "train", "timing", "lenet300", "table"])
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    parser.add_argument("--out", default=None, help="records and tables here instead of "
                        "benchmarks/results (a trial run)")
    args = parser.parse_args(argv)
    if args.out:
        global RESULTS, LM_DIR
        RESULTS, LM_DIR = args.out, os.path.join(args.out, "lm")
    cells = [c for c in args.cells.split(",") if c]
    unknown = set(cells) - set(CELLS)
    if unknown:
        parser.error(f"unknown cells {sorted(unknown)}; expected some of {list(CELLS)}")
    if args.part in ("all", "timing"):
        timing()
    if args.part in ("all", "train"):
        train(cells, args.seeds, args.steps, args.jobs)
    if args.part in ("all", "lenet300"):
        import accuracy
        accuracy.main(["--suite", "nm", "--seeds", str(args.seeds), "--jobs", str(args.jobs)])
    write_table(args.seeds, args.steps)


if __name__ == "__main__":
    main()
