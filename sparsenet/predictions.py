"""Per-example predictions in a run record: one byte per test image, pickle-free.

A record's `predictions` field holds the class the trained model predicted for every evaluated
image, in the order of the evaluation set, and the true labels beside them, so that any later
analysis (per-class changes, pruning-identified exemplars: `sparsenet report`) runs from the
records alone, without retraining:

    "predictions": {"encoding": "base64 uint8", "count": 10000, "classes": 10,
                    "predicted": "<base64 of 10000 bytes>", "labels": "<base64 of 10000 bytes>",
                    "labels_sha256": "<hex digest of the label bytes>"}

Each array is the raw bytes of a uint8 vector (class index 0..classes-1), base64-encoded
(RFC 4648, standard alphabet): 10,000 test images cost about 13 KB per array in the JSON file.
`labels_sha256` tells records evaluated on different images apart without decoding them.
Up to 256 classes fit in a byte; a run with more classes stores no predictions (said so in
the field: {"encoding": "none", "reason": ...}).
"""
from __future__ import annotations

import base64
import binascii
import hashlib

import numpy as np

ENCODING = "base64 uint8"
MAX_CLASSES = 256

__all__ = ["ENCODING", "encode_predictions", "decode_predictions", "has_predictions"]


def encode_predictions(predicted, labels, num_classes: int) -> dict:
    """The record's `predictions` field for predicted classes and true labels (same length)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and labels must be vectors of one length, got shapes "
                         f"{predicted.shape} and {labels.shape}")
    if num_classes > MAX_CLASSES:
        return {"encoding": "none",
                "reason": f"{num_classes} classes do not fit in one byte per image"}
    for name, array in (("predicted", predicted), ("labels", labels)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in [0, {num_classes}), got values "
                             f"from {array.min()} to {array.max()}")
    label_bytes = labels.astype(np.uint8).tobytes()
    return {"encoding": ENCODING, "count": int(labels.size), "classes": int(num_classes),
            "predicted": base64.b64encode(predicted.astype(np.uint8).tobytes()).decode("ascii"),
            "labels": base64.b64encode(label_bytes).decode("ascii"),
            "labels_sha256": hashlib.sha256(label_bytes).hexdigest()}


def has_predictions(record) -> bool:
    field = record.get("predictions") if isinstance(record, dict) else None
    return isinstance(field, dict) and field.get("encoding") == ENCODING


def _decode_array(field: dict, key: str, count: int, classes: int) -> np.ndarray:
    text = field.get(key)
    if not isinstance(text, str):
        raise ValueError(f"predictions.{key} must be a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"predictions.{key} is not valid base64 ({err})") from None
    if len(raw) != count:
        raise ValueError(f"predictions.{key} holds {len(raw)} bytes, expected count={count}")
    array = np.frombuffer(raw, dtype=np.uint8).copy()
    if array.size and array.max() >= classes:
        raise ValueError(f"predictions.{key} has class {array.max()}, expected < classes={classes}")
    return array


def decode_predictions(record) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, labels) uint8 vectors of a record; ValueError naming the field when absent
    or malformed."""
    field = record.get("predictions") if isinstance(record, dict) else None
    if not isinstance(field, dict):
        raise ValueError("the record has no predictions field (made before per-example "
                         "predictions were recorded: rerun it)")
    if field.get("encoding") != ENCODING:
        raise ValueError(f"predictions.encoding must be {ENCODING!r}, got "
                         f"{field.get('encoding')!r} ({field.get('reason', 'unknown encoding')})")
    count, classes = field.get("count"), field.get("classes")
    if not isinstance(count, int) or count < 0 or isinstance(count, bool):
        raise ValueError(f"predictions.count must be a non-negative integer, got {count!r}")
    if not isinstance(classes, int) or not 1 <= classes <= MAX_CLASSES or isinstance(classes, bool):
        raise ValueError(f"predictions.classes must be an integer in [1, {MAX_CLASSES}], "
                         f"got {classes!r}")
    predicted = _decode_array(field, "predicted", count, classes)
    labels = _decode_array(field, "labels", count, classes)
    return predicted, labels
