"""A million neurons on two cores: what a truly sparse SET network costs as it widens.

Three hidden layers of the same width, from 1,000 to 333,334 (1,000,002 hidden neurons), SET
at ε = 20 (Mocanu et al. 2018) on the full Fashion-MNIST (the bundled subset when it is not
installed: the record says which), at the engine's defaults. For each width:

- sparsenet: `sparsenet train --max-steps N` in a fresh process; seconds per step over those
  N steps (the first one included: it builds the transposed indices), the epoch (469 steps)
  PROJECTED from them, samples/s, the process's peak RSS (construction included), bytes held
  per connection (weights, index arrays, gradients, optimizer state);
- the dense model of the same shape, where its memory estimate fits (else the estimate);
- PyTorch CSR (benchmarks/torch_sparse.py: the same topology, torch.sparse products), where
  PyTorch is installed and the network fits.

Steps are few for the wide networks: N < 100 means no SET topology update is among them (an
epoch has four); the full-epoch run of the million-neuron network (`--full-epoch`) measures
them. Records: benchmarks/results/scale-<machine>-<date>.{json,md,png}.

    python benchmarks/scale.py                        # every width, projected epochs
    python benchmarks/scale.py --widths 1000,3333 --steps 100
    python benchmarks/scale.py --full-epoch           # one real epoch of the 333,334-wide net
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, markdown_table  # noqa: E402

WIDTHS = (1000, 3333, 10000, 33334, 100000, 333334)
STEPS = {1000: 300, 3333: 200, 10000: 120, 33334: 40, 100000: 20, 333334: 12}
EPOCH_STEPS = 469                     # 60,000 training images in batches of 128
EPSILON = 20


def spec_of(width):
    return f"mlp:784-{width}-{width}-{width}-10"


def train_probe(spec, method, steps, data, extra=()):
    """One `sparsenet train` process stopped after `steps` steps; its record."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "record.json")
        argv = [sys.executable, "-m", "sparsenet.cli", "train", "--model", spec, "--method", method,
                "--epochs", "1", "--data", data, "--no-progress", "--json", path,
                *(["--max-steps", str(steps)] if steps else []), *extra]
        if method == "set":
            argv += ["--opt", f"epsilon={EPSILON}"]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
        with open(path) as f:
            return json.load(f)


def summary(record, steps_per_epoch=EPOCH_STEPS):
    if "error" in record:
        return record
    h = record["history"][0]
    per_step = h["seconds"] / h["steps"]
    return {"steps": h["steps"], "seconds_per_step": per_step,
            "epoch_seconds": h["seconds"] if not h["partial"] else per_step * steps_per_epoch,
            "epoch_projected": bool(h["partial"]), "samples_per_second": h["samples_per_second"],
            "peak_rss_bytes": record["peak_rss_bytes"], "build_seconds": record.get("build_seconds"),
            "connections": record["parameters"], "bytes": record["bytes"]["total"],
            "bytes_per_connection": record["bytes"]["total"] / record["parameters"],
            "test_accuracy": record.get("test_accuracy"), "threads": record["threads"]}


def dense_fits(spec):
    from sparsenet.limits import human_bytes, memory_limit
    from sparsenet.nn.memory import available_bytes, estimate
    from sparsenet.nn.models import architecture, weight_shapes
    shapes = weight_shapes(architecture(spec))
    need = estimate(shapes, dict.fromkeys(shapes, 1.0))["total"]
    room = min(memory_limit(), available_bytes() or 2 ** 63) // 2   # leave room for the rest
    return need <= room, f"does not fit: needs {human_bytes(need)}"


def torch_probe(width, steps):
    """Seconds per step of the PyTorch CSR network in its own process (its memory apart)."""
    code = (f"import sys, json, warnings; warnings.simplefilter('ignore'); "
            f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import torch_sparse, resource; t, n = torch_sparse.time_steps("
            f"[784, {width}, {width}, {width}, 10], {steps}); "
            f"print(json.dumps(dict(seconds_per_step=t, connections=n, peak_rss_bytes="
            f"resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["epoch_seconds"] = out["seconds_per_step"] * EPOCH_STEPS
    return out


def run(widths, steps_override, data, with_dense, with_torch):
    import torch_sparse
    rows = []
    for width in widths:
        spec, steps = spec_of(width), steps_override or STEPS.get(width, 20)
        print(f"{spec}: sparsenet SET, {steps} steps ...", flush=True)
        row = {"width": width, "hidden_neurons": 3 * width, "model": spec,
               "sparsenet": summary(train_probe(spec, "set", steps, data))}
        fits, why = dense_fits(spec)
        if with_dense and fits:
            print(f"{spec}: dense ...", flush=True)
            row["dense"] = summary(train_probe(spec, "dense", max(10, steps // 4), data))
        else:
            row["dense"] = {"error": why if not fits else "not run (--no-dense)"}
        if with_torch and torch_sparse.available() and width <= 100000:
            print(f"{spec}: PyTorch CSR ...", flush=True)
            row["torch_csr"] = torch_probe(width, max(5, min(steps, 50)))
        else:
            row["torch_csr"] = {"error": "not run (PyTorch absent, or the widest networks: "
                                         "--torch-max-width)"}
        rows.append(row)
        print(json.dumps(row["sparsenet"]), flush=True)
    return rows


def _cell(d, key, fmt):
    return fmt.format(d[key]) if d.get(key) is not None else d.get("error", "n/a")


def table(rows):
    header = ["hidden neurons", "connections", "sparsenet s/step", "sparsenet epoch s",
              "samples/s", "peak RSS", "bytes/connection", "dense epoch s", "PyTorch CSR epoch s",
              "dense / sparsenet", "PyTorch / sparsenet"]
    lines = []
    for r in rows:
        s, d, t = r["sparsenet"], r["dense"], r["torch_csr"]
        if "error" in s:
            lines.append([f"{r['hidden_neurons']:,}", s["error"]] + [""] * 9)
            continue
        proj = " (projected)" if s["epoch_projected"] else ""
        lines.append([
            f"{r['hidden_neurons']:,}", f"{s['connections']:,}", f"{s['seconds_per_step']:.4f}",
            f"{s['epoch_seconds']:.1f}{proj}", f"{s['samples_per_second']:,.0f}",
            f"{s['peak_rss_bytes'] / 2 ** 30:.2f} GiB", f"{s['bytes_per_connection']:.1f}",
            _cell(d, "epoch_seconds", "{:.1f} (projected)"),
            _cell(t, "epoch_seconds", "{:.1f} (projected)"),
            f"{d['epoch_seconds'] / s['epoch_seconds']:.1f}x" if "epoch_seconds" in d else "",
            f"{t['epoch_seconds'] / s['epoch_seconds']:.1f}x" if "epoch_seconds" in t else ""])
    return markdown_table(header, lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("sparsenet", "sparsenet SET (CSR)"), ("torch_csr", "PyTorch CSR"),
                       ("dense", "dense (NumPy/BLAS)")):
        pts = [(r["hidden_neurons"], r[key]["epoch_seconds"]) for r in rows
               if "epoch_seconds" in r[key]]
        if pts:
            ax.loglog(*zip(*pts), "o-", label=label)
    ax.set_xlabel("hidden neurons (3 layers)")
    ax.set_ylabel("seconds per epoch (projected from a probe)")
    ax.legend()
    pts = [(r["hidden_neurons"], r["sparsenet"]["peak_rss_bytes"] / 2 ** 30) for r in rows
           if "peak_rss_bytes" in r["sparsenet"]]
    if pts:
        ax2.loglog(*zip(*pts), "o-", label="peak RSS, sparsenet")
    ax2.set_xlabel("hidden neurons (3 layers)")
    ax2.set_ylabel("GiB")
    ax2.legend()
    fig.suptitle(f"SET, ε = {EPSILON}, batch 128, two cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def full_epoch(width, data):
    """One whole epoch of the widest network, its record kept as it is."""
    spec = spec_of(width)
    record = train_probe(spec, "set", None, data)
    return {"width": width, "hidden_neurons": 3 * width, "model": spec, "record": record}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    p.add_argument("--steps", type=int, default=None, help="steps per probe (default by width)")
    p.add_argument("--data", default="auto", help="auto | full | subset | a directory")
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--full-epoch", action="store_true",
                   help="train one whole epoch of the widest network instead of the probes")
    p.add_argument("--out", default=None, help="record name (default scale-<machine>-<date>)")
    args = p.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    name = args.out or f"scale-{machine()['host']}-{stamp}"
    os.makedirs(RESULTS, exist_ok=True)
    if args.full_epoch:
        out = full_epoch(max(widths), args.data)
        name = args.out or f"scale-epoch-{machine()['host']}-{stamp}"
        with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
            json.dump({"benchmark": "scale-full-epoch", "machine": machine(), **out}, f, indent=1)
        print(json.dumps({k: v for k, v in out["record"].items() if k != "method_details"}, indent=1)[:3000])
        return
    rows = run(widths, args.steps, args.data, not args.no_dense, not args.no_torch)
    text = table(rows)
    print(text)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump({"benchmark": "scale", "machine": machine(), "epsilon": EPSILON,
                   "epoch_steps": EPOCH_STEPS, "rows": rows}, f, indent=1)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(f"# Scale: SET (ε = {EPSILON}) networks of three hidden layers\n\n"
                f"Machine: {machine()}\n\nProduced by `python benchmarks/scale.py "
                f"{' '.join(argv or sys.argv[1:])}`. Epochs marked projected are seconds per "
                f"step of a probe times {EPOCH_STEPS}.\n\n{text}\n")
    plot(rows, os.path.join(RESULTS, f"{name}.png"))
    print("written", os.path.join(RESULTS, name + ".{json,md,png}"))


if __name__ == "__main__":
    main()
