"""The data layer: IDX files, Fashion-MNIST/MNIST loading, batching, download, and the
bundled character-level text corpus (`load_text("shakespeare")`, `TextBatches`).

Quick start::

    from sparsenet.data import load_fashion_mnist, to_float, BatchLoader
    data = load_fashion_mnist()          # full set if found, else the subset
    x = to_float(data.train_images)      # float32 (N, 1, 28, 28)
    for xb, yb in BatchLoader(x, data.train_labels, batch_size=128, seed=0):
        ...
"""

from .datasets import (
    CLASS_NAMES,
    Dataset,
    find_data,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    to_float,
)
from .download import DownloadError, download_dataset
from .idx import IDXError, read_idx, write_idx
from .loader import BatchLoader
from .text import TEXT_DATASETS, TextBatches, TextCorpus, Vocabulary, evaluation_windows, load_text

__all__ = [
    "BatchLoader",
    "TEXT_DATASETS",
    "TextBatches",
    "TextCorpus",
    "Vocabulary",
    "evaluation_windows",
    "load_text",
    "CLASS_NAMES",
    "Dataset",
    "DownloadError",
    "IDXError",
    "download_dataset",
    "find_data",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "to_float",
    "write_idx",
]
