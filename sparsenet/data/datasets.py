"""Finding and loading Fashion-MNIST and MNIST.

`source="auto"` looks in these places, in order, and uses the first directory
that holds all four files:

1. `$SPARSENET_DATA/<name>/`, then `$SPARSENET_DATA/` itself;
2. the user cache, `$XDG_CACHE_HOME/sparsenet/<name>` (default
   `~/.cache/sparsenet/<name>`), where `download_dataset` puts files;
3. `/usr/share/datasets/<name>` (Debian's `dataset-fashion-mnist` package);
4. the bundled 6000/1000 subset of Fashion-MNIST (there is none for MNIST).

`source="full"` is the same search without step 4, `source="subset"` is
step 4 alone, and any other string or path is an explicit directory that is
used alone.

When searching ("auto", "full"), a place whose files fail to load (a corrupt
or truncated download in the user cache, say) is skipped with a warning that
names it and says why, and the next place is tried.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .idx import read_idx

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAMES",
    "Dataset",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "find_data",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "to_float",
    "user_cache_dir",
]

DATASET_NAMES = ("fashion-mnist", "mnist")

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# Mean and standard deviation of all pixels of the 60000 Fashion-MNIST
# training images after scaling to [0, 1]. Computed in float64 from
# /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz (Debian's
# dataset-fashion-mnist package, same pixels as the official release):
# mean 0.28604059..., population std 0.35302424...
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

# The four files of a dataset, in the order of the Dataset fields.
FILE_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

SYSTEM_DATA_DIR = Path("/usr/share/datasets")
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_ORIGIN = "bundled subset"
_BUNDLED_NAME = "fashion-mnist"  # the only dataset with a bundled subset


# eq=False: a generated __eq__ would compare arrays with ==, which raises.
@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of 28x28 grey images with integer labels.

    Images are uint8 arrays of shape (N, 28, 28); labels are int64 of shape
    (N,). `origin` says where the files came from: a directory or
    "bundled subset".
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str
    origin: str

    @property
    def num_classes(self) -> int:
        return 10


def user_cache_dir(name: str) -> Path:
    """The per-user cache directory for dataset `name` (XDG base-dir spec)."""
    _check_name(name)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "sparsenet" / name


def _check_name(name) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"name must be one of {DATASET_NAMES}, got {name!r}")


def _file_in(directory: Path, stem: str) -> Path | None:
    """The gzipped or raw version of one file, or None when neither exists."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _holds_dataset(directory: Path) -> bool:
    return all(_file_in(directory, stem) is not None for stem in FILE_STEMS)


def _search_order(name: str, include_bundled: bool) -> list[tuple[Path | None, str]]:
    """Candidate directories as (path or None, description) pairs, in order."""
    places: list[tuple[Path | None, str]] = []
    env = os.environ.get("SPARSENET_DATA", "")
    if env:
        # The subfolder first: a bare directory of four files cannot say
        # whether it holds MNIST or Fashion-MNIST, a named subfolder can.
        places.append((Path(env) / name, f"$SPARSENET_DATA/{name}"))
        places.append((Path(env), "$SPARSENET_DATA"))
    else:
        places.append((None, "$SPARSENET_DATA (not set)"))
    places.append((user_cache_dir(name), "user cache"))
    places.append((SYSTEM_DATA_DIR / name, "system datasets"))
    if include_bundled:
        if name == _BUNDLED_NAME:
            places.append((BUNDLED_DIR, BUNDLED_ORIGIN))
        else:
            places.append((None, f"bundled subset (none for {name})"))
    return places


def _locate(name: str, source) -> tuple[Path, str]:
    """Return (directory, origin) for dataset `name` and `source`."""
    _check_name(name)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "source must be 'auto', 'full', 'subset' or a directory path, "
            f"got {type(source).__name__}"
        )

    if isinstance(source, str) and source == "subset":
        if name != _BUNDLED_NAME:
            raise FileNotFoundError(
                f"source='subset': there is no bundled subset of {name}; "
                "only fashion-mnist has one"
            )
        if not _holds_dataset(BUNDLED_DIR):
            raise FileNotFoundError(f"the bundled subset is missing from {BUNDLED_DIR}")
        return BUNDLED_DIR, BUNDLED_ORIGIN

    if isinstance(source, str) and source in ("auto", "full"):
        return _found_places(name, source)[0][:2]
    return _explicit_directory(source)


def _found_places(name: str, source: str) -> list:
    """[(directory, origin, description)] of every searched place holding the four files, in
    search order; FileNotFoundError listing the places looked when there is none."""
    looked, found = [], []
    for directory, description in _search_order(name, source == "auto"):
        if directory is not None and _holds_dataset(directory):
            origin = BUNDLED_ORIGIN if directory == BUNDLED_DIR else str(directory)
            found.append((directory, origin, description))
        looked.append(description if directory is None else f"{description}: {directory}")
    if not found:
        if name == _BUNDLED_NAME:
            hint = (f"get them with sparsenet.data.download_dataset({name!r}) "
                    "or set $SPARSENET_DATA")
        else:
            hint = "put them in one of these places or set $SPARSENET_DATA"
        raise FileNotFoundError(
            f"{name} not found (source={source!r}); looked in:\n  "
            + "\n  ".join(looked)
            + f"\nEach place needs the files {', '.join(FILE_STEMS)} (optionally .gz); {hint}."
        )
    return found


def _explicit_directory(source) -> tuple[Path, str]:
    """Anything else is an explicit directory, used alone: falling back to
    other places would hide a typo in the path."""
    if isinstance(source, str) and not source:
        raise ValueError("source must be 'auto', 'full', 'subset' or a directory path, got ''")
    directory = Path(source)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"source directory {directory} does not exist (a source other than "
            "'auto', 'full' or 'subset' is taken as a directory)"
        )
    missing = [stem for stem in FILE_STEMS if _file_in(directory, stem) is None]
    if missing:
        raise FileNotFoundError(
            f"source directory {directory} lacks {', '.join(missing)} (raw or .gz)"
        )
    return directory, str(directory)


def find_data(name: str = "fashion-mnist", source="auto") -> Path:
    """The directory `load_dataset(name, source)` would read from.

    Raises FileNotFoundError, listing the places looked, when there is none.
    """
    return _locate(name, source)[0]


def _load_split(directory: Path, images_stem: str, labels_stem: str):
    images_path = _file_in(directory, images_stem)
    labels_path = _file_in(directory, labels_stem)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected uint8 labels of shape (N,), "
            f"got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return images, labels.astype(np.int64)


def load_dataset(name: str = "fashion-mnist", source="auto") -> Dataset:
    """Load dataset `name` ("fashion-mnist" or "mnist") from `source`.

    `source` is "auto", "full", "subset" or a directory (see the module
    docstring for the search order).
    """
    directory, origin = _locate(name, source)
    if not (isinstance(source, str) and source in ("auto", "full")):
        return _load_from(directory, name, origin)
    places = _found_places(name, source)
    failures = []
    for directory, origin, description in places:
        try:
            return _load_from(directory, name, origin)
        except (ValueError, OSError) as exc:        # IDXError is a ValueError
            failures.append(f"{description} ({directory}): {exc}")
            warnings.warn(f"{name}: skipped the {description} ({directory}): {exc}",
                          stacklevel=2)
    raise ValueError(f"{name}: every place holding its files failed to load: "
                     + "; ".join(failures))


def _load_from(directory: Path, name: str, origin: str) -> Dataset:
    train_images, train_labels = _load_split(directory, FILE_STEMS[0], FILE_STEMS[1])
    test_images, test_labels = _load_split(directory, FILE_STEMS[2], FILE_STEMS[3])
    return Dataset(train_images, train_labels, test_images, test_labels, name, origin)


def load_fashion_mnist(source="auto") -> Dataset:
    """Load Fashion-MNIST; see `load_dataset`."""
    return load_dataset("fashion-mnist", source)


def load_mnist(source="auto") -> Dataset:
    """Load MNIST; see `load_dataset`. There is no bundled subset of MNIST."""
    return load_dataset("mnist", source)


def to_float(images: np.ndarray, mean: float = FASHION_MNIST_MEAN,
             std: float = FASHION_MNIST_STD) -> np.ndarray:
    """uint8 images (N, 28, 28) -> standardized float32 (N, 1, 28, 28).

    Pixels are scaled to [0, 1], then standardized with `mean` and `std`
    (by default the Fashion-MNIST training statistics). The channel axis is
    added because the convolution layers expect NCHW.
    """
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy.ndarray, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must have dtype uint8, got {images.dtype}")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images must have shape (N, 28, 28), got {images.shape}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    scaled = images.astype(np.float32) / np.float32(255.0)
    standardized = (scaled - np.float32(mean)) / np.float32(std)
    return standardized[:, np.newaxis, :, :]
