"""The test images behind a report's exemplars: from the data set the records name, or from the
bundled subset when that set is absent (then only the exemplars the subset holds are shown).

The bundled subset (scripts/make_subset.py) drew 600 training and 100 test images per class
from the full Fashion-MNIST with numpy.random.default_rng(20170828), training split first, and
kept them in order. Given the full test labels (which every record with predictions carries),
the same draws give the full-set index of each subset image; the subset's own labels check the
mapping, and a mapping that does not check out is not used.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["exemplar_images"]

SUBSET_SEED, SUBSET_TRAIN_PER_CLASS, SUBSET_TEST_PER_CLASS = 20170828, 600, 100
FULL_TRAIN_PER_CLASS = 6000          # Fashion-MNIST's training set: 6000 images of each class
FULL_TEST = 10000                    # and its test set


def _subset_test_indices(full_labels, num_classes):
    """Full-test-set index of each bundled test image, in the subset's order."""
    rng = np.random.default_rng(SUBSET_SEED)
    for _ in range(num_classes):          # the training draws come first (only their sizes matter)
        rng.choice(np.arange(FULL_TRAIN_PER_CLASS), size=SUBSET_TRAIN_PER_CLASS, replace=False)
    chosen = [rng.choice(np.flatnonzero(full_labels == c), size=SUBSET_TEST_PER_CLASS,
                         replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))


def exemplar_images(record, labels) -> tuple:
    """(images (N, 28, 28) uint8 or None, index map, note): `index map` takes a record's test
    index to a row of `images` (-1 where the image is not available); `note` says where the
    images came from, or why there are none."""
    from ..data import load_dataset
    dataset = (record.get("hyperparameters") or {}).get("dataset", "fashion-mnist")
    origin = (record.get("data") or {}).get("origin", "")
    if str(record.get("evaluated_on", "test")).startswith("validation"):
        return None, None, "no images: the records were evaluated on held-out training images"
    tried = []
    for source in ([origin] if origin and os.path.isdir(origin) else []) + ["subset"]:
        try:
            ds = load_dataset(dataset, source)
        except (ValueError, OSError) as err:
            tried.append(f"{source}: {err}")
            continue
        images, ds_labels = ds.test_images.reshape(len(ds.test_labels), 28, 28), ds.test_labels
        if len(ds_labels) >= len(labels) and np.array_equal(ds_labels[:len(labels)], labels):
            note = f"images from {ds.origin}"
            return images, np.arange(len(labels)), note
        if source == "subset" and dataset == "fashion-mnist" and len(labels) == FULL_TEST:
            try:
                indices = _subset_test_indices(labels, 10)
            except ValueError:
                indices = None
            if indices is not None and np.array_equal(labels[indices], ds_labels):
                index_map = np.full(len(labels), -1)
                index_map[indices] = np.arange(len(indices))
                absent = f"{origin} is not here" if origin else "the data set is not here"
                return images, index_map, (f"images from the bundled subset ({absent}): only "
                                           f"the exemplars among its {len(indices)} test images "
                                           "are shown")
        tried.append(f"{source}: its test labels are not the records'")
    return None, None, "no images: " + "; ".join(tried)
