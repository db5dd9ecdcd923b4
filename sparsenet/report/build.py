"""From run records to the report's numbers (`analyse`), all of them in one JSON-able dict that
`render` turns into markdown, figures and HTML (and `report.json`, which tests recompute)."""
from __future__ import annotations

import os

import numpy as np

from ..predictions import has_predictions
from . import stats
from .records import ReportError, check_compatible, group_cells, load_records

__all__ = ["analyse"]


def _class_names(dataset, num_classes):
    from ..data.datasets import CLASS_NAMES
    if dataset == "fashion-mnist" and num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [str(c) for c in range(num_classes)]


def _reference(cells, reference):
    dense = [c for c in cells if c.method == "dense"]
    if reference is not None:
        chosen = [c for c in cells if c.label == reference]
        if not chosen:
            raise ReportError(f"--reference {reference!r} names no cell; the cells are "
                              + ", ".join(sorted({c.label for c in cells})))
        return chosen[0]
    if len(dense) > 1:
        raise ReportError("the records hold " + str(len(dense)) + " dense settings ("
                          + ", ".join(c.label for c in dense) + "): choose the reference "
                          "with --reference LABEL")
    return dense[0] if dense else None


def _population(cells):
    """(predicted (runs, images), labels, runs) pooled over cells' records with predictions."""
    predicted, labels = [], None
    for cell in cells:
        p, lab = cell.predictions()
        if p is not None:
            predicted.append(p)
            labels = lab
    if not predicted:
        return None, None, 0
    stacked = np.concatenate(predicted)
    return stacked, labels, stacked.shape[0]


def _compare(name, cells, reference_predicted, labels, num_classes, samples, extra=None):
    predicted, _, runs = _population(cells)
    if predicted is None:
        return None
    rows = stats.per_class_change(predicted == labels, reference_predicted == labels, labels,
                                  num_classes, samples=samples)
    found = stats.exemplars(predicted, reference_predicted, labels, num_classes)
    return {"name": name, "cells": [c.name for c in cells], "runs": runs,
            "accuracy": float((predicted == labels).mean()), "per_class": rows,
            "exemplars": found, **(extra or {})}


def analyse(paths, reference=None, samples=stats.BOOTSTRAP_SAMPLES) -> tuple:
    """(report, records): every number of the report of the run records under `paths` (files
    or folders), and the records it read."""
    records, skipped = load_records(paths)
    check_compatible(records)
    cells = group_cells(records)
    num_classes = len(records[0]["per_class_accuracy"])
    dataset = (records[0].get("hyperparameters") or {}).get("dataset", "fashion-mnist")
    ref = _reference(cells, reference)
    without = [r["path"] for r in records if not has_predictions(r)]
    report = {
        "model": records[0]["model"], "dataset": dataset, "num_classes": num_classes,
        "class_names": _class_names(dataset, num_classes),
        "data_origin": records[0]["data"].get("origin"),
        "evaluated_on": records[0].get("evaluated_on", "test"),
        "evaluation_images": records[0]["data"].get("test"),
        "records": [os.path.relpath(r["path"]) for r in records],
        "skipped": [[os.path.relpath(p), why] for p, why in skipped],
        "without_predictions": [os.path.relpath(p) for p in without],
        "reference": ref.name if ref else None,
        "bootstrap": {"samples": samples, "seed": stats.BOOTSTRAP_SEED, "interval": 0.95},
        "cells": [], "comparisons": [], "families": [],
    }
    for cell in cells:
        report["cells"].append({"name": cell.name, "label": cell.label, "method": cell.method,
                                "family": cell.family, "sparsity": cell.sparsity,
                                "seeds": cell.seeds, "runs_with_predictions":
                                    len(cell.with_predictions()),
                                "accuracy": stats.accuracy_summary(cell),
                                "costs": stats.cost_summary(cell)})
    ref_predicted, labels, _ = _population([ref]) if ref else (None, None, 0)
    if ref_predicted is None:
        return report, records
    report["reference_runs"] = int(ref_predicted.shape[0])
    for cell in cells:
        if cell is ref:
            continue
        compared = _compare(cell.name, [cell], ref_predicted, labels, num_classes, samples,
                            {"family": cell.family, "sparsity": cell.sparsity})
        if compared:
            report["comparisons"].append(compared)
    # families pooled at each sparsity and training budget: every setting of the family there
    by_family = {}
    for cell in cells:
        if cell is not ref and cell.method != "dense":
            by_family.setdefault((cell.family, cell.sparsity, cell.epochs), []).append(cell)
    for (family, sparsity, epochs), members in sorted(
            by_family.items(), key=lambda kv: (kv[0][2] != ref.epochs, kv[0][2], kv[0][1], kv[0][0])):
        budget = "" if epochs == ref.epochs else f", {epochs} epochs"
        compared = _compare(f"{family} @ {100 * sparsity:g} %{budget}", members, ref_predicted,
                            labels, num_classes, samples,
                            {"family": family, "sparsity": sparsity, "epochs": epochs})
        if compared:
            report["families"].append(compared)
    return report, records
