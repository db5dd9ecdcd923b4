"""Build the bundled Fashion-MNIST subset in sparsenet/data/bundled/.

Usage: python scripts/make_subset.py [FULL_DIR] [OUT_DIR]

FULL_DIR defaults to /usr/share/datasets/fashion-mnist (Debian's
dataset-fashion-mnist package); OUT_DIR to sparsenet/data/bundled.

The subset is stratified: 600 training and 100 test images per class, drawn
without replacement with a fixed seed. Selected images keep their original
relative order, so the subset is as class-mixed as the full set. Output files
are gzipped IDX with a name-less, time-stamp-free gzip header, so running the
script again on the same input gives the same arrays and, with the same zlib,
byte-identical files; the manifest records the SHA-256 of inputs and outputs
so that can be checked.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from sparsenet.data.datasets import FILE_STEMS
from sparsenet.data.idx import read_idx, write_idx

SEED = 20170828  # the Fashion-MNIST paper's date; any fixed value would do
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
NUM_CLASSES = 10

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FULL_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT_DIR = REPO_ROOT / "sparsenet" / "data" / "bundled"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory} has neither {stem}.gz nor {stem}")


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator):
    """`per_class` indices of each class, drawn without replacement, sorted."""
    chosen = []
    for cls in range(NUM_CLASSES):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(f"class {cls} has {len(members)} examples, need {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    full_dir = Path(argv[0]) if len(argv) > 0 else DEFAULT_FULL_DIR
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(SEED)
    manifest = {
        "description": "Stratified subset of Fashion-MNIST made by scripts/make_subset.py",
        "source_dir": str(full_dir),
        "seed": SEED,
        "train_per_class": TRAIN_PER_CLASS,
        "test_per_class": TEST_PER_CLASS,
        "inputs": {},
        "outputs": {},
    }
    # Train first, then test, each from the same generator: the order of the
    # draws is part of what makes the output reproducible.
    splits = (("train", FILE_STEMS[0], FILE_STEMS[1], TRAIN_PER_CLASS),
              ("test", FILE_STEMS[2], FILE_STEMS[3], TEST_PER_CLASS))
    for split, images_stem, labels_stem, per_class in splits:
        images_path = find_file(full_dir, images_stem)
        labels_path = find_file(full_dir, labels_stem)
        images, labels = read_idx(images_path), read_idx(labels_path)
        keep = stratified_indices(labels, per_class, rng)
        for stem, path, array in ((images_stem, images_path, images[keep]),
                                  (labels_stem, labels_path, labels[keep])):
            out_path = out_dir / f"{stem}.gz"
            write_idx(out_path, array)
            manifest["inputs"][path.name] = sha256_of(path)
            manifest["outputs"][out_path.name] = sha256_of(out_path)
        print(f"{split}: kept {len(keep)} of {len(labels)} examples")

    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum((out_dir / name).stat().st_size for name in manifest["outputs"])
    print(f"wrote {out_dir} ({total / 1e6:.2f} MB of data)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
