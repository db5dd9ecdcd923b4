"""The PyTorch peers: what a user would pick instead of sparsenet, on the same recipe.

A plain PyTorch SNIP (Lee et al. 2019) and a plain PyTorch RigL (Evci et al. 2020), written
here from the papers (masks on torch.nn.Linear weights, no sparse library), trained with the
recipe of benchmarks/accuracy.py: LeNet-300-100 on the full Fashion-MNIST (standardized with
the training set's mean and std), 20 epochs, batch 128, SGD lr 0.05, momentum 0.9, weight decay
1e-4, cosine schedule, PyTorch's default initialization. Runs only when torch is installed (it
is never a dependency of sparsenet):

    .venv/bin/pip install torch==2.13.0
    python benchmarks/peers.py --seeds 2            # rigl 90/98 %, snip 95/98 %
    python benchmarks/peers.py --epochs 5 --cells rigl:0.9   # fewer epochs: said in the record

SNIP: one mini-batch of 128 training images, saliency |∂L/∂w · w| at initialization, one global
top-k over the three weight matrices. RigL: ERK layer densities, every ΔT = 100 steps until
75 % of training drop the fraction α/2 (1 + cos(π t / T_end)) (α = 0.3) of each layer's
smallest-magnitude weights and grow as many inactive ones with the largest dense-gradient
magnitude, grown weights and their momentum at zero (the update after that step's SGD step).

Each run's record (with per-example predictions, as sparsenet's) goes to
results/accuracy/peers-lenet300/, the summary to results/peers-lenet300.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, markdown_table, torch_or_none, write_record  # noqa: E402

CELLS = [("rigl", 0.9), ("rigl", 0.98), ("snip", 0.95), ("snip", 0.98)]
PEER = "plain PyTorch (benchmarks/peers.py)"


def load(torch):
    from sparsenet.data import load_dataset
    from sparsenet.data.datasets import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    ds = load_dataset("fashion-mnist", "full")

    def prep(images):
        x = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return torch.from_numpy((x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)
    return (prep(ds.train_images), torch.from_numpy(ds.train_labels.astype(np.int64)),
            prep(ds.test_images), torch.from_numpy(ds.test_labels.astype(np.int64)), ds.origin)


def lenet300(torch):
    nn = torch.nn
    return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def weights(model):
    return [m.weight for m in model if hasattr(m, "weight")]


def erk_densities(shapes, density):
    """Densities ∝ (n_in + n_out) / (n_in n_out) with the weighted mean `density`; layers the
    scale would push above 1 are kept dense and the rest rescaled (the RigL paper's ERK)."""
    dense = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        budget = density * sum(o * i for o, i in shapes) - sum(shapes[j][0] * shapes[j][1]
                                                               for j in dense)
        raw = {i: (shapes[i][0] + shapes[i][1]) / (shapes[i][0] * shapes[i][1]) for i in free}
        scale = budget / sum(raw[i] * shapes[i][0] * shapes[i][1] for i in free)
        over = [i for i in free if raw[i] * scale > 1]
        if not over:
            return [1.0 if i in dense else raw[i] * scale for i in range(len(shapes))]
        dense.update(over)


def snip_masks(torch, model, x, y, density):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, weights(model))
    scores = [(g * w).abs() for g, w in zip(grads, weights(model))]
    flat = torch.cat([s.flatten() for s in scores])
    keep = int(round(density * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    return [(s >= threshold).float() for s in scores]


def random_masks(torch, model, density, generator):
    shapes = [tuple(w.shape) for w in weights(model)]
    masks = []
    for w, d in zip(weights(model), erk_densities(shapes, density)):
        scores = torch.rand(w.shape, generator=generator)
        keep = int(round(d * w.numel()))
        mask = torch.zeros(w.numel())
        mask[torch.topk(scores.flatten(), keep).indices] = 1
        masks.append(mask.view_as(w))
    return masks


def rigl_update(torch, model, masks, optimizer, fraction):
    for w, mask in zip(weights(model), masks):
        active = int(mask.sum())
        k = int(fraction * active)
        if k == 0:
            continue
        grad = w.grad                      # dense: the mask is applied to w, not to the gradient
        flat_mask = mask.flatten()
        magnitude = torch.where(flat_mask.bool(), w.detach().abs().flatten(),
                                torch.full_like(flat_mask, float("inf")))
        drop = torch.topk(magnitude, k, largest=False).indices
        flat_mask[drop] = 0
        growth = torch.where(flat_mask.bool(), torch.full_like(flat_mask, -1.0),
                             grad.abs().flatten())
        grow = torch.topk(growth, k).indices
        flat_mask[grow] = 1
        mask.copy_(flat_mask.view_as(mask))
        with torch.no_grad():
            w.view(-1)[grow] = 0
            state = optimizer.state.get(w, {})
            if "momentum_buffer" in state and state["momentum_buffer"] is not None:
                state["momentum_buffer"].view(-1)[grow] = 0


def train(torch, method, sparsity, seed, data, epochs):
    x_train, y_train, x_test, y_test, _ = data
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = lenet300(torch)
    batch, steps_per_epoch = 128, math.ceil(len(y_train) / 128)
    total = epochs * steps_per_epoch
    density = 1 - sparsity
    if method == "snip":
        pick = torch.randperm(len(y_train), generator=generator)[:batch]
        masks = snip_masks(torch, model, x_train[pick], y_train[pick], density)
    else:
        masks = random_masks(torch, model, density, generator)
    with torch.no_grad():
        for w, m in zip(weights(model), masks):
            w.mul_(m)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    step, t_end, start = 0, int(0.75 * total), time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(y_train), batch):
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            if method == "snip":
                for w, m in zip(weights(model), masks):
                    w.grad.mul_(m)
            optimizer.step()
            schedule.step()
            if method == "rigl" and step % 100 == 0 and 0 < step < t_end:
                rigl_update(torch, model, masks, optimizer,
                            0.3 / 2 * (1 + math.cos(math.pi * step / t_end)))
            with torch.no_grad():
                for w, m in zip(weights(model), masks):
                    w.mul_(m)
            step += 1
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predicted = model(x_test).argmax(dim=1).numpy()
    labels = y_test.numpy()
    kept = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    return predicted, labels, kept, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cells", default="", help="METHOD:SPARSITY,... (default: all four)")
    args = parser.parse_args(argv)
    torch = torch_or_none()
    if torch is None:
        print("peers: torch is not installed (pip install torch==2.13.0); nothing run")
        return 0
    from sparsenet.metrics import per_class_accuracy
    from sparsenet.predictions import encode_predictions
    cells = ([(c.split(":")[0], float(c.split(":")[1])) for c in args.cells.split(",") if c]
             or CELLS)
    data = load(torch)
    folder = os.path.join(RESULTS, "accuracy", "peers-lenet300")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for method, sparsity in cells:
        accuracies = []
        for seed in range(args.seeds):
            predicted, labels, density, seconds = train(torch, method, sparsity, seed, data,
                                                        args.epochs)
            accuracy = float((predicted == labels).mean())
            accuracies.append(accuracy)
            record = {"method": f"torch-{method}", "model": "lenet300", "sparsity": 1 - density,
                      "density": density, "target_sparsity": sparsity,
                      "test_accuracy": accuracy, "evaluated_on": "test", "seed": seed,
                      "epochs": args.epochs, "train_seconds": seconds, "peer": PEER,
                      "per_class_accuracy": per_class_accuracy(predicted, labels, 10),
                      "predictions": encode_predictions(predicted, labels, 10),
                      "data": {"origin": data[4], "train": len(data[1]), "test": len(labels)},
                      "hyperparameters": {"epochs": args.epochs, "dataset": "fashion-mnist",
                                          "lr": 0.05, "weight_decay": 1e-4, "batch_size": 128},
                      "versions": {"torch": torch.__version__}}
            with open(os.path.join(folder, f"{method}-{sparsity:g}-e{args.epochs}-s{seed}.json"),
                      "w") as f:
                json.dump(record, f, indent=1)
            print(f"   torch {method} {sparsity:g} seed {seed}: {100 * accuracy:.2f} %  "
                  f"{seconds:.0f} s", flush=True)
        rows.append({"method": method, "sparsity": sparsity, "peer": "torch",
                     "accuracy_mean": float(np.mean(accuracies)), "seeds": args.seeds,
                     "accuracies": accuracies, "epochs": args.epochs})
    table = markdown_table(["method", "sparsity", "accuracy (%)", "seeds", "epochs"],
                           [[r["method"], r["sparsity"], f"{100 * r['accuracy_mean']:.2f}",
                             r["seeds"], r["epochs"]] for r in rows])
    write_record("peers-lenet300", rows, table, {"recipe": __doc__.split("\n\n")[1],
                                                 "machine_at_start": machine()})
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
