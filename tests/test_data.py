"""Tests for sparsenet.data: IDX files, dataset lookup, the bundled subset, batching."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from sparsenet.data import (
    CLASS_NAMES,
    BatchLoader,
    IDXError,
    find_data,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    to_float,
    write_idx,
)
from sparsenet.data import datasets as datasets_module

REPO_ROOT = Path(__file__).resolve().parent.parent
FULL_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_full_set = pytest.mark.skipif(
    not (FULL_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="full Fashion-MNIST not installed",
)

# ---------------------------------------------------------------- IDX files

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    for i, shape in enumerate(SHAPES):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        else:
            array = rng.standard_normal(shape).astype(dtype)
        path = tmp_path / f"a{i}.idx{suffix}"
        write_idx(path, array)
        back = read_idx(path)
        assert back.dtype == np.dtype(dtype)  # native byte order
        assert back.shape == shape
        np.testing.assert_array_equal(back, array)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_exact_bytes_on_disk(tmp_path):
    # Checked against the format by hand, not just against our own reader.
    write_idx(tmp_path / "u8", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert (tmp_path / "u8").read_bytes() == (
        b"\x00\x00\x08\x02" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03" b"\x01\x02\x03\x04\x05\x06"
    )
    write_idx(tmp_path / "i16", np.array([1, -2], dtype=np.int16))
    assert (tmp_path / "i16").read_bytes() == b"\x00\x00\x0b\x01\x00\x00\x00\x02\x00\x01\xff\xfe"


def test_big_endian_input_and_writable_output(tmp_path):
    array = np.arange(6, dtype=">f4").reshape(2, 3)
    write_idx(tmp_path / "f.idx", array)
    back = read_idx(tmp_path / "f.idx")
    assert back.dtype == np.dtype("float32") and back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "a.gz").rename(tmp_path / "no-suffix")
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), array)
    # ... and a raw file with a .gz name is read as raw.
    write_idx(tmp_path / "raw", array)
    (tmp_path / "raw").rename(tmp_path / "raw.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), array)
    # No name or time stamp in the gzip header: the same array gives the same bytes.
    write_idx(tmp_path / "b.gz", array)
    write_idx(tmp_path / "c.gz", array)
    assert (tmp_path / "b.gz").read_bytes() == (tmp_path / "c.gz").read_bytes()


def _header(code: int, dims: tuple[int, ...], magic: bytes = b"\x00\x00") -> bytes:
    return magic + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


GOOD = _header(0x08, (2, 3)) + bytes(range(6))
CORRUPT = {
    "bad magic": (_header(0x08, (2, 3), magic=b"\x00\x01") + bytes(6), "magic"),
    "wrong type code": (_header(0x07, (2, 3)) + bytes(6), "type code 0x07"),
    "zero dims": (_header(0x08, ()), "number of dimensions is 0"),
    "five dims": (_header(0x08, (1, 1, 1, 1, 1)) + bytes(1), "number of dimensions is 5"),
    "zero-size dim": (_header(0x08, (2, 0)), "zero"),
    "truncated header": (_header(0x08, (2, 3))[:9], "truncated header"),
    "truncated payload": (GOOD[:-1], "truncated payload"),
    "trailing bytes": (GOOD + b"\x00\x00", "2 trailing bytes"),
    "empty file": (b"", "too short"),
    "corrupt gzip": (gzip.compress(GOOD * 50)[:12] + b"\xff" * 20, "gzip"),
    "truncated gzip": (gzip.compress(GOOD * 50)[:-10], "gzip"),
    "gzip of a bad payload": (gzip.compress(GOOD[:-2]), "truncated payload"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_rejected(tmp_path, case):
    content, expected_message = CORRUPT[case]
    path = tmp_path / "corrupt.idx"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=expected_message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_reference_file_is_valid_and_missing_file_fails(tmp_path):
    # The corrupt cases above are variations of this file.
    (tmp_path / "good").write_bytes(GOOD)
    np.testing.assert_array_equal(read_idx(tmp_path / "good"), np.arange(6).reshape(2, 3))
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_idx_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="array must be a numpy.ndarray"):
        write_idx(tmp_path / "x", [1, 2, 3])
    with pytest.raises(TypeError, match="int64 has no IDX type code"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError, match="1 to 4 dimensions"):
        write_idx(tmp_path / "x", np.zeros((1, 1, 1, 1, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="1 to 4 dimensions"):
        write_idx(tmp_path / "x", np.array(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="sizes between 1"):
        write_idx(tmp_path / "x", np.zeros((0, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="path must be a str"):
        write_idx(3, np.zeros(3, dtype=np.uint8))


# ---------------------------------------------------------- bundled subset


def test_bundled_subset_loads():
    data = load_fashion_mnist(source="subset")
    assert data.origin == "bundled subset" and data.name == "fashion-mnist"
    for images, labels, per_class in ((data.train_images, data.train_labels, 600),
                                      (data.test_images, data.test_labels, 100)):
        assert images.dtype == np.uint8 and images.shape == (10 * per_class, 28, 28)
        assert labels.dtype == np.int64 and labels.shape == (10 * per_class,)
        assert labels.min() >= 0 and labels.max() <= 9
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)
        assert images.max() > 200  # real pictures, not a blank placeholder
    assert len(CLASS_NAMES) == 10


def test_bundled_files_match_manifest():
    bundled = datasets_module.BUNDLED_DIR
    manifest = json.loads((bundled / "manifest.json").read_text())
    for name, digest in manifest["outputs"].items():
        assert hashlib.sha256((bundled / name).read_bytes()).hexdigest() == digest
    assert "Copyright (c) 2017 Zalando SE" in (bundled / "LICENSE").read_text()


@needs_full_set
def test_subset_script_reproduces_bundled_files(tmp_path):
    script_path = REPO_ROOT / "scripts" / "make_subset.py"
    spec = importlib.util.spec_from_file_location("make_subset", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(FULL_DIR), str(tmp_path)]) == 0
    # Arrays, not bytes: another zlib build may compress the same data differently.
    for stem in datasets_module.FILE_STEMS:
        made = read_idx(tmp_path / f"{stem}.gz")
        np.testing.assert_array_equal(made, read_idx(datasets_module.BUNDLED_DIR / f"{stem}.gz"))


@needs_full_set
def test_normalization_constants_match_full_training_set():
    images = read_idx(FULL_DIR / "train-images-idx3-ubyte.gz")
    # Exact statistics from the histogram of pixel values, without a float copy.
    counts = np.bincount(images.ravel(), minlength=256)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - datasets_module.FASHION_MNIST_MEAN) < 5e-5
    assert abs(std - datasets_module.FASHION_MNIST_STD) < 5e-5


# ----------------------------------------------------------------- lookup


def make_fake_dataset(directory: Path, marker: int, gz: bool = True, n_test: int = 2) -> Path:
    """Four tiny files whose labels are all `marker`, to tell directories apart."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = ((3, 28, 28), (3,), (n_test, 28, 28), (2,))
    for stem, shape in zip(datasets_module.FILE_STEMS, sizes):
        path = directory / (stem + (".gz" if gz else ""))
        write_idx(path, np.full(shape, marker, dtype=np.uint8))
    return directory


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Isolated $SPARSENET_DATA, cache and system directories, all empty."""
    env_dir, cache, system = tmp_path / "env", tmp_path / "cache", tmp_path / "system"
    for d in (env_dir, cache, system):
        d.mkdir()
    monkeypatch.setenv("SPARSENET_DATA", str(env_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets_module, "SYSTEM_DATA_DIR", system)
    return {"env": env_dir, "cache": cache / "sparsenet", "system": system}


def test_lookup_order(places):
    name = "fashion-mnist"
    dirs = [
        make_fake_dataset(places["env"] / name, 1),
        make_fake_dataset(places["env"], 2),
        make_fake_dataset(places["cache"] / name, 3),
        make_fake_dataset(places["system"] / name, 4),
    ]
    for marker, directory in enumerate(dirs, start=1):
        data = load_fashion_mnist()
        assert data.origin == str(directory)
        assert find_data(name) == directory
        assert set(data.train_labels) == {marker} and data.train_images[0, 0, 0] == marker
        for f in directory.glob("*-ubyte.gz"):
            f.unlink()  # remove this place; the next one should be found
    assert load_fashion_mnist().origin == "bundled subset"
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(source="full")
    message = str(info.value)
    for directory in dirs:
        assert str(directory) in message
    assert "bundled" not in message


def test_mnist_has_no_subset(places):
    with pytest.raises(FileNotFoundError, match="none for mnist"):
        load_mnist()
    with pytest.raises(FileNotFoundError, match="no bundled subset of mnist"):
        load_mnist(source="subset")
    make_fake_dataset(places["cache"] / "mnist", 7)
    assert load_mnist().origin == str(places["cache"] / "mnist")


def test_explicit_path_used_alone(places, tmp_path):
    make_fake_dataset(places["env"], 1)
    explicit = make_fake_dataset(tmp_path / "mine", 5, gz=False)  # raw files are fine too
    data = load_dataset("fashion-mnist", source=explicit)
    assert data.origin == str(explicit) and data.test_labels[0] == 5
    assert load_fashion_mnist(source=str(explicit)).origin == str(explicit)
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_fashion_mnist(source=tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    (explicit / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        load_fashion_mnist(source=explicit)


def test_unset_env_and_relative_xdg(places, monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSENET_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the spec: ignored
    home_cache = make_fake_dataset(tmp_path / "home" / ".cache" / "sparsenet" / "fashion-mnist", 9)
    assert load_fashion_mnist(source="full").origin == str(home_cache)
    monkeypatch.setattr(datasets_module, "BUNDLED_DIR", tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="bundled subset is missing"):
        load_fashion_mnist(source="subset")


def test_counts_must_agree(tmp_path):
    directory = make_fake_dataset(tmp_path / "d", 1, n_test=4)  # 4 test images, 2 labels
    with pytest.raises(ValueError, match="4 images but .* 2 labels"):
        load_fashion_mnist(source=directory)


def test_bad_name_and_source():
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("cifar10")
    with pytest.raises(TypeError, match="source must be"):
        load_fashion_mnist(source=3)
    with pytest.raises(ValueError, match="source must be"):
        load_fashion_mnist(source="")


def test_to_float():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[1] = 255
    x = to_float(images)
    assert x.dtype == np.float32 and x.shape == (2, 1, 28, 28)
    mean, std = datasets_module.FASHION_MNIST_MEAN, datasets_module.FASHION_MNIST_STD
    np.testing.assert_allclose(x[0], -mean / std, rtol=1e-6)
    np.testing.assert_allclose(x[1], (1 - mean) / std, rtol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        to_float(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        to_float(images[0])
    with pytest.raises(TypeError, match="numpy.ndarray"):
        to_float(images.tolist())


# ------------------------------------------------------------ BatchLoader


def served_indices(loader):
    return np.concatenate([yb for _, yb in loader])


def test_batchloader_covers_every_index_once():
    n = 103
    x, y = np.arange(n) * 2, np.arange(n)
    loader = BatchLoader(x, y, batch_size=10, seed=3)
    assert len(loader) == 11
    orders = []
    for _ in range(3):
        batches = list(loader)
        assert [len(yb) for _, yb in batches] == [10] * 10 + [3]
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, 2 * yb)  # pairs stay aligned
        order = np.concatenate([yb for _, yb in batches])
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], np.arange(n))


def test_batchloader_is_reproducible():
    y = np.arange(50)
    a, b = BatchLoader(y, y, 8, seed=1), BatchLoader(y, y, 8, seed=1)
    for _ in range(2):
        np.testing.assert_array_equal(served_indices(a), served_indices(b))
    c = BatchLoader(y, y, 8, seed=2)
    assert not np.array_equal(served_indices(c), a.order(0))
    # order(epoch) replays an epoch without iterating.
    np.testing.assert_array_equal(a.order(0), served_indices(BatchLoader(y, y, 8, seed=1)))
    assert a.epoch == 2


def test_batchloader_no_shuffle_and_drop_last():
    y = np.arange(25)
    plain = BatchLoader(y, y, 10, shuffle=False)
    np.testing.assert_array_equal(served_indices(plain), y)
    np.testing.assert_array_equal(served_indices(plain), y)
    dropped = BatchLoader(y, y, 10, drop_last=True, seed=4)
    assert len(dropped) == 2
    for _ in range(2):
        batches = list(dropped)
        assert [len(yb) for _, yb in batches] == [10, 10]
        assert len(np.unique(np.concatenate([yb for _, yb in batches]))) == 20
    assert len(BatchLoader(y, y, 5, drop_last=True)) == 5
    assert len(BatchLoader(y, y, 5)) == 5


def test_batchloader_validates_arguments():
    y = np.arange(10)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            BatchLoader(y, y, bad)
    for bad in (2.5, True, "4"):
        with pytest.raises(TypeError, match="batch_size"):
            BatchLoader(y, y, bad)
    with pytest.raises(ValueError, match="same length"):
        BatchLoader(y, y[:5], 2)
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        BatchLoader(list(y), y, 2)
    with pytest.raises(ValueError, match="no batches"):
        BatchLoader(y, y, 11, drop_last=True)
    with pytest.raises(TypeError, match="shuffle"):
        BatchLoader(y, y, 2, shuffle=1)
    with pytest.raises(ValueError, match="seed"):
        BatchLoader(y, y, 2, seed=-1)
    with pytest.raises(ValueError, match="empty"):
        BatchLoader(y[:0], y[:0], 2)
