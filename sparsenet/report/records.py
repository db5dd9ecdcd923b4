"""Reading run records for a report: finding them, checking they belong together, grouping them.

A report compares runs of one model on one data set's evaluation images. Records of different
models, data sets, class counts or evaluation images are refused (a `ReportError` naming what
differs), never averaged together; records without per-example predictions are kept for the
accuracy and cost tables and excluded, by name, from the per-class and exemplar analyses.
"""
from __future__ import annotations

import json
import os

from ..predictions import decode_predictions, has_predictions

__all__ = ["ReportError", "Cell", "find_records", "load_records", "check_compatible",
           "cell_label", "group_cells", "family_of", "FAMILIES"]

# the methods' families, for the per-class summaries "pruning" and "dynamic sparse training"
FAMILIES = {
    "dense": "dense",
    "gmp": "pruning", "magnitude": "pruning", "lottery": "pruning", "structured": "pruning",
    "autosparse": "pruning",
    "snip": "pruning at initialization", "grasp": "pruning at initialization",
    "synflow": "pruning at initialization", "random": "pruning at initialization",
    "static": "static sparse",
    "set": "dynamic sparse training", "rigl": "dynamic sparse training",
    "srigl": "dynamic sparse training", "mest": "dynamic sparse training",
}
# training settings whose non-default values make a cell of their own
DEFAULTS = (("epochs", 20), ("lr", 0.05), ("weight_decay", 1e-4), ("l1", 0.0),
            ("group_lasso", 0.0), ("batch_size", 128), ("optimizer", "sgd"),
            ("schedule", "cosine"))


class ReportError(ValueError):
    """Input a report cannot be made from (the command line prints it as one line, exit 2)."""


def family_of(method: str) -> str:
    return FAMILIES.get(method, "other")


def find_records(paths) -> list:
    """The .json files among `paths` (files, or folders searched recursively), sorted."""
    if not paths:
        raise ReportError("RUNS: give at least one run record or folder of records")
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                            for name in names if name.endswith(".json"))
            if not inside:
                raise ReportError(f"RUNS: {path} holds no run records (*.json)")
            found += inside
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise ReportError(f"RUNS: {path} does not exist")
    return sorted(set(found))


def load_records(paths) -> tuple[list, list]:
    """(records, skipped): every file that is a run record, each with its `path`; `skipped`
    lists (path, why) for JSON files that are not run records (benchmark tables, say)."""
    records, skipped = [], []
    for path in find_records(paths):
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ReportError(f"RUNS: {path} is not a readable JSON file ({err})") from None
        missing = [k for k in ("method", "model", "density", "per_class_accuracy", "data")
                   if not isinstance(record, dict) or k not in record]
        if missing or not any(k in record for k in ("test_accuracy", "val_accuracy")):
            skipped.append((path, "not a run record (no " + ", ".join(missing or ["accuracy"])
                            + ")"))
            continue
        record["path"] = path
        records.append(record)
    if not records:
        raise ReportError("RUNS: none of the " + str(len(skipped)) + " JSON files is a run "
                          "record (a `sparsenet train --out` or benchmark record)")
    return records, skipped


def _dataset_of(record) -> str:
    return (record.get("hyperparameters") or {}).get("dataset", "fashion-mnist")


def check_compatible(records) -> None:
    """ReportError unless every record is of one model, data set, class count and set of
    evaluation images (the same images in the same order, when predictions say so)."""
    facts = {
        "models": lambda r: r["model"],
        "data sets": _dataset_of,
        "class counts": lambda r: len(r["per_class_accuracy"]),
        "evaluation sets": lambda r: (r.get("evaluated_on", "test"), r["data"].get("test")),
        "sets of evaluation images (label checksums)": lambda r: (r["predictions"]["labels_sha256"]
                                        if has_predictions(r) else None),
    }
    for what, fact in facts.items():
        values = {}
        for r in records:
            value = fact(r)
            if value is not None:
                values.setdefault(str(value), r["path"])
        if len(values) > 1:
            shown = "; ".join(f"{v} ({os.path.basename(p)})" for v, p in list(values.items())[:3])
            raise ReportError(f"RUNS: the records mix {len(values)} different {what} ({shown}); "
                              "a report compares runs of one model on one data set: give "
                              "them separately")


def cell_label(record) -> str:
    """Method name with the options and off-default settings that make a cell its own
    (e.g. `rigl[epochs=100]`, `magnitude[format=nm,m=4,n=2]`)."""
    hyper = record.get("hyperparameters") or {}
    options = dict(hyper.get("method_options") or {})
    options.pop("sparsity", None)
    for key, default in DEFAULTS:
        if key in hyper and hyper[key] != default:
            options[key] = hyper[key]
    if not options:
        return record["method"]
    return record["method"] + "[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]"


class Cell:
    """The runs of one method setting at one target sparsity (one per seed)."""

    def __init__(self, label, method, sparsity, records):
        self.label, self.method, self.sparsity, self.records = label, method, sparsity, records
        self.family = family_of(method)
        self.epochs = (records[0].get("hyperparameters") or {}).get("epochs",
                                                                  records[0].get("epochs"))

    @property
    def seeds(self):
        return [r.get("seed") for r in self.records]

    def with_predictions(self):
        return [r for r in self.records if has_predictions(r)]

    def predictions(self):
        """(predicted (seeds, images), labels (images,)) of the records with predictions."""
        decoded = [decode_predictions(r) for r in self.with_predictions()]
        if not decoded:
            return None, None
        import numpy as np
        return np.stack([p for p, _ in decoded]), decoded[0][1]

    @property
    def name(self):
        return f"{self.label} @ {100 * self.sparsity:g} %"


def group_cells(records) -> list:
    """Cells (label, target sparsity), sorted by method family, label and sparsity."""
    groups = {}
    for r in records:
        sparsity = r.get("target_sparsity")
        sparsity = float(r["sparsity"] if sparsity is None else sparsity)
        key = (cell_label(r), round(sparsity, 6))
        groups.setdefault(key, []).append(r)
    cells = [Cell(label, rs[0]["method"], sparsity, sorted(rs, key=lambda r: r.get("seed") or 0))
             for (label, sparsity), rs in groups.items()]
    order = list(dict.fromkeys(FAMILIES.values()))
    return sorted(cells, key=lambda c: (order.index(c.family) if c.family in order else 99,
                                        c.label, c.sparsity))
