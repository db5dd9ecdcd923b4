"""Where a sparse training step's time goes: the sparse kernels against everything else.

Every kernel call a step makes (the products, the fused ReLU backward, the optimizer updates)
is timed, and the rest of the step (Python, NumPy elementwise work, the dense output layer,
the loss, data) is what remains of the step's wall time. Medians over steps, after a warm-up,
at the engine's defaults (its thread policy included), on the full Fashion-MNIST batches.

    python benchmarks/step_profile.py [--steps 200]

Cells: SET (ε = 20) on mlp:784-1000-1000-1000-10, RigL 99 % on mlp:784-4096-4096-10.
Record: benchmarks/results/step_profile.{json,md}.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table, write_record  # noqa: E402

import sparsenet as sn  # noqa: E402
from sparsenet import threads  # noqa: E402
from sparsenet.algorithms import get_method  # noqa: E402
from sparsenet.data import BatchLoader  # noqa: E402
from sparsenet.kernels import cpu  # noqa: E402
from sparsenet.nn.functional import cross_entropy  # noqa: E402
from sparsenet.nn.models import architecture, weight_shapes  # noqa: E402
from sparsenet.train import TrainConfig, load_arrays, make_optimizer  # noqa: E402

CELLS = (("mlp:784-1000-1000-1000-10", "set", {"epsilon": 20}),
         ("mlp:784-4096-4096-10", "rigl", {"sparsity": 0.99}))
TIMED = {"products": ("csr_spmm", "csr_spmm_t", "csr_sddmm", "csr_spmm_t_sddmm"),
         "relu backward": ("relu_backward",), "optimizer": ("sgd_update", "adam_update")}


def instrument(spent):
    """Wrap the kernels a step calls so that each call adds its time to `spent[group]`."""
    originals = []
    for group, names in TIMED.items():
        for module in (cpu.trusted, cpu):
            for name in names:
                fn = getattr(module, name, None)
                if fn is None:
                    continue

                def timed(*args, _fn=fn, _group=group, **kwargs):
                    t0 = time.perf_counter()
                    try:
                        return _fn(*args, **kwargs)
                    finally:
                        spent[_group] += time.perf_counter() - t0
                originals.append((module, name, fn))
                setattr(module, name, timed)
    return originals


def profile(spec, method_name, options, steps, data):
    sn.manual_seed(0)
    method = get_method(method_name, **options)
    model = sn.nn.build_model(spec, **method.build_options(weight_shapes(architecture(spec))))
    loader = BatchLoader(data[0], data[1], 128, shuffle=True, seed=0)
    method.setup(model, None, loader, len(loader))
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    method.optimizer = optimizer
    policy = threads.apply_policy(model)
    spent = collections.defaultdict(float)
    originals = instrument(spent)
    rows = collections.defaultdict(list)
    try:
        batches = iter(loader)
        for i in range(steps):
            xb, yb = next(batches)
            spent.clear()
            t0 = time.perf_counter()
            loss = cross_entropy(model(sn.Tensor(xb)), yb)
            optimizer.zero_grad()
            loss.backward()
            method.after_backward(i)
            optimizer.step()
            method.after_step(i)
            total = time.perf_counter() - t0
            if i >= 10 and not method.is_update_step(i):    # warm-up and topology updates apart
                rows["total"].append(total)
                for group in TIMED:
                    rows[group].append(spent[group])
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)
    median = {k: float(np.median(v)) for k, v in rows.items()}
    kernels = sum(median[g] for g in TIMED)
    return {"model": spec, "method": method_name, "options": options,
            "steps_measured": len(rows["total"]), "step_s": median["total"],
            **{f"{g}_s": median[g] for g in TIMED}, "kernel_fraction": kernels / median["total"],
            "other_s": median["total"] - kernels, "threads": policy}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default="step_profile")
    args = p.parse_args(argv)
    data = load_arrays("auto")
    rows = [profile(spec, m, o, args.steps, data) for spec, m, o in CELLS]
    table = markdown_table(
        ["model", "method", "step ms", "products ms", "relu backward ms", "optimizer ms",
         "everything else ms", "kernels' share"],
        [[r["model"], r["method"], f"{1e3 * r['step_s']:.2f}", f"{1e3 * r['products_s']:.2f}",
          f"{1e3 * r['relu backward_s']:.2f}", f"{1e3 * r['optimizer_s']:.2f}",
          f"{1e3 * r['other_s']:.2f}", f"{100 * r['kernel_fraction']:.0f} %"] for r in rows])
    print(table)
    print("written", write_record(args.out, rows, table, {"data": data[4]}))


if __name__ == "__main__":
    main()
