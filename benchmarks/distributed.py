"""Data-parallel training on MPI: what a step costs, what it sends, and how it would scale.

    python benchmarks/distributed.py [--quick]

1. Measured here: seconds per training step, split into compute and communication (the
   gradient Allreduce with its packing, RigL's growth-score sums, the topology checks), for one
   process without MPI, 1 rank and 2 ranks under mpiexec (each rank gets cores / ranks threads:
   on 2 cores, 2 ranks of 1 thread). One epoch of the bundled subset (6,000 images, global
   batch 128), median over repeats after a warm-up run. Communication includes waiting for the
   slower rank.
2. Counted: the bytes of the buffer reduced every step (every parameter's gradient: a sparse
   layer's stored values only, plus 4 counters), sparse against dense, by sparsity; RigL's
   growth scores (the sparse layers' dense gradient, summed a chunk at a time) on update
   steps, and that spread over the steps (ΔT = 100, T_end = 75 %). The 2-rank runs of part 1
   check the counted numbers against what they sent.
3. The WASAP-SGD protocol (Curci, Mocanu & Pechenizkiy 2021, reference code
   SelimaC/large-scale-sparse-neural-networks, wasap_sgd/mpi/process.py): each worker step
   sends the master a pickled dict {layer: (weight gradient as scipy CSR, bias gradient)} and
   gets back a pickled dict of every layer's weights (CSR, float64 as its lil_matrix builds
   them), biases and momentum (CSR): the bytes here are those objects pickled for the same
   network, and the seconds to pickle and unpickle them, measured.
4. PROJECTED, not measured: scaling efficiency at 8 and 64 ranks over 10 and 100 Gb/s links,
   from a cost model (see `allreduce_seconds`) and the compute time measured at 1 rank.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, markdown_table, write_record  # noqa: E402

MEASURED = [("lenet300", "dense", 0.0), ("lenet300", "rigl", 0.99),
            ("mlp:784-1000-1000-10", "dense", 0.0), ("mlp:784-1000-1000-10", "rigl", 0.9),
            ("mlp:784-1000-1000-10", "rigl", 0.99)]
COUNTED_MODELS = ["lenet300", "mlp:784-1000-1000-10", "mlp:784-4096-4096-10"]
SPARSITIES = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
DELTA_T, T_END = 100, 0.75                         # RigL's defaults: growth summed this often
LINKS = {"10 Gb/s": (10e9 / 8, 25e-6), "100 Gb/s": (100e9 / 8, 3e-6)}   # bytes/s, latency
RANKS = [8, 64]
COUNTED_TITLE = ("## Counted: bytes per step (float32), sparse against dense, and WASAP-SGD's "
                 "pickled messages for the same network\n\n")


# ----- 1. measured: one epoch per configuration, on every rank ----------------------------------
def worker(out_path, repeats, quick):
    """Runs under mpiexec (or alone with --plain): times each MEASURED configuration."""
    from sparsenet import distributed
    from sparsenet.train import TrainConfig, train_model
    plain = os.environ.get("SPARSENET_BENCH_PLAIN") == "1"
    comm = None if plain else distributed.Communicator()
    rows = []
    for model, method, sparsity in (MEASURED[:2] if quick else MEASURED):
        config = TrainConfig(model=model, method=method, sparsity=sparsity, epochs=1,
                             batch_size=128, data="subset", progress=False,
                             method_options={"delta_t": 10} if method == "rigl" else {})
        if comm is not None:
            config.threads = comm.threads_per_rank()
        runs = []
        for repeat in range(repeats + 1):                   # the first one warms up
            if comm is None:
                _, record = train_model(config, log=None)
            else:
                with comm.running():
                    comm.stats = {k: 0 * v for k, v in comm.stats.items()}
                    _, record = train_model(config, log=lambda *a: None)
            if repeat:
                runs.append(record)
        steps = runs[0]["steps"]
        step = statistics.median(r["history"][0]["seconds"] / steps for r in runs)
        if comm is None:
            comm_s, sent = 0.0, 0
        else:
            d = [r["distributed"] for r in runs]
            comm_s = statistics.median((x["gradient_seconds"] + x["growth_seconds"]
                                        + x["check_seconds"]) / steps for x in d)
            sent = d[0]["gradient_bytes_per_step"]
        rows.append({"model": model, "method": method, "sparsity": sparsity,
                     "ranks": 0 if comm is None else comm.size, "threads": runs[0]["threads"][
                         "threads"], "steps": steps, "step_seconds": step,
                     "communication_seconds": comm_s, "compute_seconds": step - comm_s,
                     "gradient_bytes_per_step": sent, "parameters": runs[0]["parameters"],
                     "growth_bytes": runs[0].get("distributed", {}).get("growth_bytes", 0)})
    if comm is None or comm.rank == 0:
        with open(out_path, "w") as f:
            json.dump(rows, f)


def measure(repeats, quick) -> list:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    rows = []
    for ranks in (0, 1, 2):
        out = os.path.join(RESULTS, f".distributed-{ranks}.json")
        command = [sys.executable, __file__, "--worker", out, "--repeats", str(repeats)]
        command += ["--quick"] if quick else []
        env = dict(os.environ, SPARSENET_BENCH_PLAIN="1" if ranks == 0 else "0")
        env.pop("SPARSENET_FAST", None)
        subprocess.run(command if ranks == 0 else [mpiexec, "-n", str(ranks)] + command,
                       env=env, check=True)
        with open(out) as f:
            rows += json.load(f)
        os.remove(out)
    return rows


# ----- 2. counted: the buffer of one step, by sparsity ------------------------------------------
def buffer_bytes(spec, sparsity) -> dict:
    """Bytes reduced per step (all gradients + 4 counters, float32) and RigL's growth bytes
    per update step (every sparse layer's dense shape), for `spec` built sparse (ERK)."""
    from sparsenet.algorithms import get_method
    from sparsenet.nn import build_model
    from sparsenet.nn.models import architecture, weight_shapes
    from sparsenet.nn.sparse_layers import _SparseLayer
    shape = (1, 28, 28)
    if sparsity == 0:
        model = build_model(spec, input_shape=shape, num_classes=10)
    else:
        method = get_method("rigl", sparsity=sparsity)
        options = method.build_options(weight_shapes(architecture(spec, shape, 10)))
        model = build_model(spec, input_shape=shape, num_classes=10, **options)
    params = sum(p.data.size for p in model.parameters())
    growth = sum(int(np.prod(m.weight.shape)) for _, m in model.named_modules()
                 if isinstance(m, _SparseLayer))
    return {"model": model, "gradient_bytes": 4 * (params + 4), "growth_bytes": 4 * growth}


def wasap_objects(model):
    """What a WASAP-SGD worker sends (update) and receives (weights) per step, for `model`:
    its layers as the reference code holds them, scipy CSR of shape (in, out)."""
    import scipy.sparse as sp

    from sparsenet.nn.layers import Linear
    from sparsenet.nn.sparse_layers import _SparseLayer
    update, weights = {}, {"w": {}, "b": {}, "pdw": {}, "pdd": {}}
    layers = [m for _, m in model.named_modules() if isinstance(m, (Linear, _SparseLayer))]
    for i, layer in enumerate(layers, 1):
        if isinstance(layer, _SparseLayer):
            rows, cols, values = layer.weight.active()
            out_f, in_f = layer.weight.shape
        else:
            out_f, in_f = layer.weight.data.shape
            rows, cols = np.divmod(np.arange(out_f * in_f), in_f)
            values = layer.weight.data.ravel()
        csr = sp.csr_matrix((values.astype(np.float32), (cols, rows)), shape=(in_f, out_f))
        bias = np.zeros(out_f, np.float32)
        update[i] = (csr, bias)
        weights["w"][i], weights["b"][i] = csr.astype(np.float64), bias
        weights["pdw"][i], weights["pdd"][i] = csr.copy(), bias.copy()
    return update, weights


def pickled(obj, repeats=5) -> tuple:
    """(bytes, seconds to pickle and unpickle) with mpi4py's protocol (the highest): the cost of
    WASAP-SGD's pickled messages, measured on objects made here. Nothing read from a file or
    another process is ever unpickled; sparsenet's own runs send buffers only."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        times.append(time.perf_counter() - t0)
    return len(data), statistics.median(times)


def count(models) -> list:
    rows = []
    for spec in models:
        dense = buffer_bytes(spec, 0.0)["gradient_bytes"]
        for sparsity in SPARSITIES:
            b = buffer_bytes(spec, sparsity)
            update, weights = wasap_objects(b["model"])
            up, up_s = pickled(update)
            down, down_s = pickled(weights)
            growth = b["growth_bytes"] if sparsity else 0
            rows.append({"model": spec, "sparsity": sparsity, "gradient_bytes": b["gradient_bytes"],
                         "relative_to_dense": b["gradient_bytes"] / dense,
                         "growth_bytes_per_update": growth,
                         "growth_bytes_per_step": growth * T_END / DELTA_T,
                         "wasap_update_bytes": up, "wasap_weights_bytes": down,
                         "wasap_pickle_seconds": up_s + down_s})
    return rows


# ----- 4. projected: a cost model -------------------------------------------------------------
def allreduce_seconds(nbytes, ranks, bandwidth, latency) -> float:
    """Ring Allreduce (reduce-scatter then all-gather): 2 (N-1) messages, each rank sending
    2 (N-1)/N of the buffer, at the full link rate (an optimistic bound)."""
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * nbytes / bandwidth


def project(measured, counted) -> list:
    """Weak scaling (128 samples per rank): efficiency = compute / (compute + communication),
    compute as measured at 1 rank here; WASAP-SGD's master handles every worker's update in
    turn, so it keeps up while N (transfer + pickling) fits in one worker's compute."""
    rows = []
    for m in measured:
        if m["ranks"] != 1:
            continue
        c = next(r for r in counted if r["model"] == m["model"] and r["sparsity"] == m["sparsity"])
        per_step = c["gradient_bytes"] + (c["growth_bytes_per_step"] if m["method"] == "rigl" else 0)
        for link, (bandwidth, latency) in LINKS.items():
            for ranks in RANKS:
                comm = allreduce_seconds(per_step, ranks, bandwidth, latency)
                master = ranks * ((c["wasap_update_bytes"] + c["wasap_weights_bytes"]) / bandwidth
                                  + c["wasap_pickle_seconds"])
                rows.append({"model": m["model"], "method": m["method"],
                             "sparsity": m["sparsity"], "link": link, "ranks": ranks,
                             "compute_seconds": m["compute_seconds"], "allreduce_seconds": comm,
                             "efficiency": m["compute_seconds"] / (m["compute_seconds"] + comm),
                             "wasap_efficiency": min(1.0, m["compute_seconds"] / master)})
    return rows


def counted_table(counted) -> str:
    """Part 2 and 3 as a markdown table."""
    return markdown_table(
        ["model", "sparsity", "bytes reduced/step", "of dense", "RigL growth bytes/update",
         "growth bytes/step (ΔT 100)", "WASAP up (pickled)", "WASAP down (pickled)",
         "WASAP pickle+unpickle ms"],
        [[c["model"], c["sparsity"], f"{c['gradient_bytes']:,}",
          f"1/{1 / c['relative_to_dense']:.1f}" if c["sparsity"] else "1",
          f"{c['growth_bytes_per_update']:,}", f"{c['growth_bytes_per_step']:,.0f}",
          f"{c['wasap_update_bytes']:,}", f"{c['wasap_weights_bytes']:,}",
          f"{1e3 * c['wasap_pickle_seconds']:.2f}"] for c in counted])


def tables(measured, counted, projected) -> str:
    ranks = {0: "1 process, no MPI", 1: "1 rank", 2: "2 ranks"}
    t1 = markdown_table(
        ["model", "method", "sparsity", "run", "threads/rank", "ms/step", "compute ms",
         "communication ms", "bytes reduced/step"],
        [[m["model"], m["method"], m["sparsity"], ranks[m["ranks"]], m["threads"],
          f"{1e3 * m['step_seconds']:.2f}", f"{1e3 * m['compute_seconds']:.2f}",
          f"{1e3 * m['communication_seconds']:.2f}", f"{m['gradient_bytes_per_step']:,.0f}"]
         for m in measured])
    t2 = counted_table(counted)
    t3 = markdown_table(
        ["model", "method", "sparsity", "link", "ranks", "compute ms (measured, 1 rank)",
         "Allreduce ms (projected)", "efficiency (projected)", "WASAP-SGD master (projected)"],
        [[p["model"], p["method"], p["sparsity"], p["link"], p["ranks"],
          f"{1e3 * p['compute_seconds']:.2f}", f"{1e3 * p['allreduce_seconds']:.3f}",
          f"{100 * p['efficiency']:.1f} %", f"{100 * p['wasap_efficiency']:.1f} %"]
         for p in projected])
    return ("## Measured here: time per step (one epoch of the subset, global batch 128, "
            "median of repeats; shared 2-core machine)\n\n" + t1 +
            "\n\n" + COUNTED_TITLE + t2 +
            "\n\n## PROJECTED (a cost model, not a measurement): weak scaling at 128 samples "
            "per rank; ring Allreduce at the full link rate, latency 25 µs (10 Gb/s Ethernet) "
            "or 3 µs (100 Gb/s); WASAP-SGD's master serving every worker in turn\n\n" + t3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two configurations, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--counted-only", action="store_true",
                        help="part 2 and 3 alone (no training, no projection) for lenet300 and "
                             "the 1000-wide MLP: record distributed-counted")
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.repeats, args.quick)
    if args.counted_only:
        counted = count(COUNTED_MODELS[:2])
        table = COUNTED_TITLE + counted_table(counted)
        print(table)
        print(f"record: {write_record('distributed-counted', counted, table, quick=args.quick)}")
        return
    repeats = 1 if args.quick else args.repeats
    measured = measure(repeats, args.quick)
    counted = count(COUNTED_MODELS[:1] if args.quick else COUNTED_MODELS)
    for m in measured:              # what the runs sent is what was counted
        c = next((r for r in counted if r["model"] == m["model"]
                  and r["sparsity"] == m["sparsity"]), None)
        if c and m["ranks"]:
            assert m["gradient_bytes_per_step"] == c["gradient_bytes"], (m, c)
    projected = project(measured, counted)
    table = tables(measured, counted, projected)
    print(table)
    path = write_record("distributed", measured, table, quick=args.quick,
                        extra={"counted": counted, "projected": projected})
    print(f"record: {path}")


if __name__ == "__main__":
    main()
