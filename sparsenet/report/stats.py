"""The report's numbers: accuracy over seeds, costs, per-class change with bootstrap intervals,
and pruning-identified exemplars.

Per-class change (of a sparse population against the dense one, each a set of runs of one
setting over seeds): for class c, delta_c = mean over sparse runs of their accuracy on the
test images of class c, minus the same mean over dense runs. Its 95 % interval is a bootstrap
over both sources of chance: each of B resamples draws the class's test images with replacement
(the same draw for both populations, since they saw the same images: a paired comparison) and
each population's runs with replacement, and takes the 2.5th and 97.5th percentiles of the
resampled deltas. A class is flagged "hurt" when the whole interval lies below zero.

Pruning-identified exemplars (Hooker, Courville, Clark, Dauphin and Frome 2019, "What Do
Compressed Deep Neural Networks Forget?", arXiv:1911.05248, Section 3.1): the test images on
which the modal (most frequent) prediction of the sparse population differs from the modal
prediction of the dense population. With few runs a vote can tie: here an image is an exemplar
only when no modal class of one population is a modal class of the other (the sets of tied
winners are disjoint), so a tie never makes an exemplar by itself.
"""
from __future__ import annotations

import numpy as np

__all__ = ["accuracy_summary", "cost_summary", "per_class_change", "modal_classes",
           "exemplars", "BOOTSTRAP_SAMPLES", "BOOTSTRAP_SEED"]

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 20191105          # fixed: a report built twice gives the same intervals


def _accuracy(record) -> float:
    return record["test_accuracy"] if "test_accuracy" in record else record["val_accuracy"]


def accuracy_summary(cell) -> dict:
    """Mean, sample standard deviation (0 for one run), min and max accuracy over the runs."""
    values = np.array([_accuracy(r) for r in cell.records], dtype=float)
    return {"runs": len(values), "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max()),
            "density": float(np.mean([r["density"] for r in cell.records]))}


COST_FIELDS = (("training FLOPs (x dense)", ("flops", "training_relative")),
               ("inference FLOPs (x dense)", ("flops", "inference_relative")),
               ("inference FLOPs per image", ("flops", "inference_per_sample")),
               ("weight bytes", ("bytes", "weights")),
               ("training bytes", ("bytes", "total")),
               ("inference energy (J per image)", ("energy", "inference_joules_per_sample")))


def cost_summary(cell) -> dict:
    """Mean of each cost field over the runs that have it (None where no run has it)."""
    out = {}
    for name, (group, key) in COST_FIELDS:
        values = [r[group][key] for r in cell.records
                  if isinstance(r.get(group), dict) and r[group].get(key) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def per_class_change(sparse_correct, dense_correct, labels, num_classes,
                     samples=BOOTSTRAP_SAMPLES, seed=BOOTSTRAP_SEED) -> list:
    """Per class: {class, delta, low, high, hurt, sparse, dense} (accuracies as fractions).

    sparse_correct (runs_s, images), dense_correct (runs_d, images): 1 where a run predicted
    the image's label; labels (images,).
    """
    rng = np.random.default_rng(seed)
    sparse_correct = np.asarray(sparse_correct, dtype=float)
    dense_correct = np.asarray(dense_correct, dtype=float)
    rows = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            rows.append({"class": c, "images": 0, "delta": None, "low": None, "high": None,
                         "hurt": False, "sparse": None, "dense": None})
            continue
        s, d = sparse_correct[:, members], dense_correct[:, members]   # (runs, images of c)
        sparse_acc, dense_acc = s.mean(), d.mean()
        # image resampling as multinomial counts: (samples, images of c), rows summing to n_c
        counts = rng.multinomial(members.size, np.full(members.size, 1 / members.size),
                                 size=samples).astype(float)
        per_run_s = counts @ s.T / members.size                       # (samples, runs_s)
        per_run_d = counts @ d.T / members.size                       # (samples, runs_d)
        pick_s = rng.integers(0, s.shape[0], size=(samples, s.shape[0]))
        pick_d = rng.integers(0, d.shape[0], size=(samples, d.shape[0]))
        deltas = (np.take_along_axis(per_run_s, pick_s, axis=1).mean(axis=1)
                  - np.take_along_axis(per_run_d, pick_d, axis=1).mean(axis=1))
        low, high = np.percentile(deltas, [2.5, 97.5])
        rows.append({"class": c, "images": int(members.size),
                     "delta": float(sparse_acc - dense_acc), "low": float(low),
                     "high": float(high), "hurt": bool(high < 0),
                     "sparse": float(sparse_acc), "dense": float(dense_acc)})
    return rows


def modal_classes(predicted, num_classes) -> np.ndarray:
    """(images, classes) booleans: True for every class that got the most votes of the runs.

    predicted: (runs, images) class indices."""
    predicted = np.asarray(predicted, dtype=np.int64)
    votes = np.zeros((predicted.shape[1], num_classes), dtype=np.int64)
    for run in predicted:
        votes[np.arange(run.size), run] += 1
    return votes == votes.max(axis=1, keepdims=True)


def exemplars(sparse_predicted, dense_predicted, labels, num_classes) -> dict:
    """The pruning-identified exemplars of a sparse population against the dense one:
    {indices, share, per_class: [count per true class], per_class_share, sparse_modal,
    dense_modal (the lowest-indexed modal class of each, for labelling)}."""
    sparse_modal = modal_classes(sparse_predicted, num_classes)
    dense_modal = modal_classes(dense_predicted, num_classes)
    is_exemplar = ~(sparse_modal & dense_modal).any(axis=1)            # disjoint winners
    indices = np.flatnonzero(is_exemplar)
    per_class = np.bincount(labels[indices], minlength=num_classes)
    class_sizes = np.bincount(labels, minlength=num_classes)
    return {"indices": indices.tolist(), "count": int(indices.size),
            "share": float(indices.size / labels.size) if labels.size else 0.0,
            "per_class": per_class.tolist(),
            "per_class_share": [float(n / m) if m else None for n, m in zip(per_class,
                                                                            class_sizes)],
            "sparse_modal": sparse_modal.argmax(axis=1)[indices].tolist(),
            "dense_modal": dense_modal.argmax(axis=1)[indices].tolist()}
