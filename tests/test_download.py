"""Tests for sparsenet.data.download_dataset against a local HTTP server.

Nothing here touches the network: a ThreadingHTTPServer on 127.0.0.1 serves
small crafted IDX files from a temporary directory.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from sparsenet.data import (
    DownloadError,
    download_dataset,
    load_fashion_mnist,
    read_idx,
    write_idx,
)
from sparsenet.data import download as download_module

FILE_NAMES = download_module.FILE_NAMES


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and records which paths were asked for."""

    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base_url, served directory, list of requested paths)."""
    # A proxy from the environment would intercept requests to 127.0.0.1.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (RecordingHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    # A short poll interval makes shutdown() quick.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def craft_files(directory: Path) -> dict[str, str]:
    """Write four small valid dataset files; return their SHA-256 table."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(6, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(4, dtype=np.uint8),
    }
    for fname, array in arrays.items():
        write_idx(directory / fname, array)
    return {fname: sha256_of(directory / fname) for fname in arrays}


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_download_success_and_skip(server, tmp_path):
    url, served, requests = server
    hashes = craft_files(served)
    dest = tmp_path / "dest"
    assert download_dataset(dest=dest, base_url=url, progress=False,
                            expected_sha256=hashes) == dest
    assert leftovers(dest) == sorted(FILE_NAMES)  # and no temporary files
    for fname in FILE_NAMES:
        assert sha256_of(dest / fname) == hashes[fname]
        read_idx(dest / fname)
    data = load_fashion_mnist(source=dest)
    assert data.train_images.shape == (6, 28, 28) and len(data.test_labels) == 4
    assert len(requests) == 4

    # Second call: every file is present with the right hash, nothing fetched.
    download_dataset(dest=dest, base_url=url, progress=False, expected_sha256=hashes)
    assert len(requests) == 4

    # A damaged local file is fetched again, and only that one.
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    download_dataset(dest=dest, base_url=url.rstrip("/"), progress=False,
                     expected_sha256=hashes)
    assert requests[4:] == ["/t10k-labels-idx1-ubyte.gz"]
    assert sha256_of(dest / "t10k-labels-idx1-ubyte.gz") == hashes["t10k-labels-idx1-ubyte.gz"]


def test_hash_mismatch_leaves_nothing(server, tmp_path):
    url, served, _ = server
    hashes = craft_files(served)
    # The server's copy is corrupted after its hash was recorded.
    corrupt = served / "train-images-idx3-ubyte.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:-100])
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="SHA-256 mismatch") as info:
        download_dataset(dest=dest, base_url=url, progress=False, expected_sha256=hashes)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert leftovers(dest) == []  # it is the first file: no partial, no final


def test_unparsable_file_leaves_nothing(server, tmp_path):
    url, served, _ = server
    hashes = craft_files(served)
    bad = served / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # 3 of 5 payload bytes
    hashes[bad.name] = sha256_of(bad)  # the hash matches, the format does not
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="not valid IDX.*truncated payload"):
        download_dataset(dest=dest, base_url=url, progress=False, expected_sha256=hashes)
    # The two files before it passed both checks and stay; nothing else does.
    assert leftovers(dest) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_http_404_leaves_nothing(server, tmp_path):
    url, served, _ = server
    hashes = craft_files(served)
    (served / "train-images-idx3-ubyte.gz").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_dataset(dest=dest, base_url=url, progress=False, expected_sha256=hashes)
    assert url + "train-images-idx3-ubyte.gz" in str(info.value)
    assert leftovers(dest) == []


def test_unreachable_server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    # Bind and close a server to get a port nobody listens on.
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()
    hashes = {fname: "0" * 64 for fname in FILE_NAMES}
    with pytest.raises(DownloadError, match="could not fetch"):
        download_dataset(dest=tmp_path / "d", base_url=f"http://127.0.0.1:{port}/",
                         progress=False, timeout=5, expected_sha256=hashes)
    assert leftovers(tmp_path / "d") == []


def test_default_destination_is_user_cache(server, tmp_path, monkeypatch):
    url, served, _ = server
    hashes = craft_files(served)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dest = download_dataset(base_url=url, progress=False, expected_sha256=hashes)
    assert dest == tmp_path / "cache" / "sparsenet" / "fashion-mnist"
    assert leftovers(dest) == sorted(FILE_NAMES)


def test_progress_bar_runs(server, tmp_path):
    url, served, _ = server
    hashes = craft_files(served)
    download_dataset(dest=tmp_path / "d", base_url=url, progress=True, expected_sha256=hashes)
    assert leftovers(tmp_path / "d") == sorted(FILE_NAMES)


def test_mnist_needs_hashes(server, tmp_path):
    with pytest.raises(NotImplementedError, match="not recorded"):
        download_dataset("mnist", dest=tmp_path / "d")
    assert not (tmp_path / "d").exists()
    url, served, _ = server
    hashes = craft_files(served)
    download_dataset("mnist", dest=tmp_path / "d", base_url=url, progress=False,
                     expected_sha256=hashes)
    assert leftovers(tmp_path / "d") == sorted(FILE_NAMES)


def test_argument_validation(tmp_path):
    good = {fname: "a" * 64 for fname in FILE_NAMES}
    with pytest.raises(ValueError, match="name must be one of"):
        download_dataset("cifar", dest=tmp_path)
    with pytest.raises(ValueError, match="base_url"):
        download_dataset(dest=tmp_path, base_url="ftp://example.org/", expected_sha256=good)
    with pytest.raises(ValueError, match="lacks entries for t10k-labels"):
        download_dataset(dest=tmp_path, expected_sha256={k: good[k] for k in FILE_NAMES[:3]})
    with pytest.raises(ValueError, match="64-character hex"):
        download_dataset(dest=tmp_path, expected_sha256={**good, FILE_NAMES[0]: "xyz"})
    with pytest.raises(TypeError, match="expected_sha256 must be a dict"):
        download_dataset(dest=tmp_path, expected_sha256=list(good))
    with pytest.raises(ValueError, match="timeout"):
        download_dataset(dest=tmp_path, timeout=0, expected_sha256=good)
    with pytest.raises(TypeError, match="dest"):
        download_dataset(dest=5, expected_sha256=good)
    assert list(tmp_path.iterdir()) == []


def test_known_hash_table_is_well_formed():
    table = download_module.KNOWN_SHA256["fashion-mnist"]
    assert sorted(table) == sorted(FILE_NAMES)
    for digest in table.values():
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert download_module.DEFAULT_BASE_URLS["fashion-mnist"].startswith("http")
