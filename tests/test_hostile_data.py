"""Hostile files and servers stay bounded (issue 11, part G).

read_idx checks the declared size before it allocates and while it streams, so a gzip bomb
fails one byte past what its header declares; a download has an overall deadline, a size cap
and cleans up after itself (and after a killed earlier run); `--data auto` falls back past a
corrupt file in the user cache, saying which place it skipped and why. All offline: servers
run on 127.0.0.1.
"""
import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest

from sparsenet.data import DownloadError, IDXError, download_dataset, load_dataset, read_idx
from sparsenet.data import datasets as datasets_module
from sparsenet.data import download as download_module

FILE_NAMES = download_module.FILE_NAMES


def idx_header(shape, code=0x08) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def write_bomb(path, declared_shape, stream_bytes):
    """A gzip whose header declares `declared_shape` uint8 but which inflates to
    `stream_bytes` of zeros (written in pieces: the test never holds them)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(idx_header(declared_shape))
        piece = bytes(1 << 20)
        for _ in range(stream_bytes >> 20):
            f.write(piece)


# ----- read_idx --------------------------------------------------------------------------------
def test_a_gzip_bomb_fails_without_inflating(tmp_path):
    path = tmp_path / "bomb.gz"
    write_bomb(path, (1000, 28, 28), 64 << 20)           # declares 784 KB, inflates to 64 MB
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match="trailing bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"read_idx used {peak} bytes on a bomb declaring 784 KB"


def test_a_header_declaring_more_than_the_file_can_hold_is_refused_before_reading(tmp_path):
    tiny = tmp_path / "liar.gz"
    tiny.write_bytes(gzip.compress(idx_header((60000, 60000, 60000)) + b"\x00" * 100))
    raw = tmp_path / "liar"
    raw.write_bytes(idx_header((1000, 28, 28)) + b"\x00" * 100)
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match="max_bytes"):
            read_idx(tiny)
        with pytest.raises(IDXError, match="cannot hold"):
            read_idx(tiny, max_bytes=1 << 60)
        with pytest.raises(IDXError, match="truncated payload"):
            read_idx(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(IDXError, match="max_bytes"):
        small = tmp_path / "small"
        small.write_bytes(idx_header((10,)) + bytes(10))
        read_idx(small, max_bytes=5)


def test_streamed_read_matches_the_file(tmp_path):
    from sparsenet.data import write_idx
    a = np.arange(6 * 5 * 4, dtype=">i4").reshape(6, 5, 4).astype(np.int32) - 50
    for name in ("x.idx", "x.idx.gz"):
        write_idx(tmp_path / name, a)
        b = read_idx(tmp_path / name)
        assert b.dtype == np.int32 and b.dtype.isnative and b.flags.writeable
        np.testing.assert_array_equal(a, b)


# ----- downloads -------------------------------------------------------------------------------
class Misbehaving(http.server.BaseHTTPRequestHandler):
    """mode: 'trickle' (a byte every 50 ms), 'huge-header' (declares 10 GB), 'endless' (no
    length, 1 MB pieces forever)."""

    mode = "trickle"

    def do_GET(self):
        self.send_response(200)
        if self.mode == "huge-header":
            self.send_header("Content-Length", str(10 << 30))
            self.end_headers()
            return
        if self.mode == "trickle":
            self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(100000):
                if self.mode == "trickle":
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(0.05)
                else:
                    self.wfile.write(bytes(1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def misbehaving(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    servers = []

    def start(mode):
        handler = type("Handler", (Misbehaving,), {"mode": mode})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        servers.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield start
    for httpd, thread in servers:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


HASHES = {name: "0" * 64 for name in FILE_NAMES}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else None


def test_a_trickling_server_meets_the_deadline(misbehaving, tmp_path):
    url = misbehaving("trickle")
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline"):
        download_dataset(dest=tmp_path / "d", base_url=url, progress=False, timeout=5,
                         max_seconds=0.6, expected_sha256=HASHES)
    assert time.monotonic() - start < 5            # the per-read timeout alone never fires
    assert leftovers(tmp_path / "d") is None       # no .part file, no folder made for nothing


@pytest.mark.parametrize("mode", ["huge-header", "endless"])
def test_a_download_larger_than_the_cap_is_refused(misbehaving, tmp_path, mode):
    url = misbehaving(mode)
    (tmp_path / "d").mkdir()                        # an existing folder stays, empty
    with pytest.raises(DownloadError, match="max_bytes"):
        download_dataset(dest=tmp_path / "d", base_url=url, progress=False, timeout=5,
                         max_seconds=60, max_bytes=4 << 20, expected_sha256=HASHES)
    assert leftovers(tmp_path / "d") == []


def serve_directory(directory, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    return httpd, thread, f"http://127.0.0.1:{httpd.server_address[1]}/"


def test_a_killed_download_leaves_no_part_file_for_ever(tmp_path, monkeypatch):
    """.part files of an earlier, killed run are removed once stale; a live one is not."""
    from sparsenet.data import write_idx
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    shapes = [(6, 28, 28), (6,), (4, 28, 28), (4,)]
    for name, shape in zip(FILE_NAMES, shapes):
        write_idx(served / name, rng.integers(0, 10, shape).astype(np.uint8))
    hashes = {n: hashlib.sha256((served / n).read_bytes()).hexdigest() for n in FILE_NAMES}
    dest = tmp_path / "cache"
    dest.mkdir()
    stale, live = dest / f".{FILE_NAMES[0]}.killed.part", dest / f".{FILE_NAMES[1]}.live.part"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    httpd, thread, url = serve_directory(served, monkeypatch)
    try:
        download_dataset(dest=dest, base_url=url, progress=False, timeout=5,
                         expected_sha256=hashes)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert leftovers(dest) == sorted(FILE_NAMES + (live.name,))


# ----- --data auto falls back past a corrupt cache --------------------------------------------
@pytest.fixture
def corrupt_cache(tmp_path, monkeypatch):
    """A user cache holding the four files, one of them cut short; no system data set."""
    cache = tmp_path / "xdg"
    folder = cache / "sparsenet" / "fashion-mnist"
    folder.mkdir(parents=True)
    bundled = datasets_module.BUNDLED_DIR
    for name in FILE_NAMES:
        folder.joinpath(name).write_bytes(bundled.joinpath(name).read_bytes())
    images = folder / FILE_NAMES[0]
    images.write_bytes(images.read_bytes()[:5000])           # a download cut off
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("SPARSENET_DATA", raising=False)
    monkeypatch.setattr(datasets_module, "SYSTEM_DATA_DIR", tmp_path / "no-system-datasets")
    return folder


def test_auto_skips_a_corrupt_cache_and_says_why(corrupt_cache):
    with pytest.warns(UserWarning, match=r"skipped the user cache \(.*fashion-mnist\): .*"
                                         r"train-images-idx3-ubyte.gz.*gzip"):
        data = load_dataset("fashion-mnist", "auto")
    assert data.origin == "bundled subset"


def test_full_with_only_a_corrupt_cache_names_the_failure(corrupt_cache):
    with pytest.warns(UserWarning, match="skipped the user cache"):
        with pytest.raises(ValueError, match="every place holding its files failed.*user cache"):
            load_dataset("fashion-mnist", "full")


def test_an_explicit_directory_does_not_fall_back(corrupt_cache):
    with pytest.raises(IDXError, match="gzip"):
        load_dataset("fashion-mnist", str(corrupt_cache))


def test_the_command_line_reports_the_skipped_place(corrupt_cache, fast_mode, capsys):
    from sparsenet import cli
    assert cli.main(["train", "--model", "mlp:784-16-10", "--epochs", "1", "--data", "auto",
                     "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("sparsenet train: warning: fashion-mnist: skipped the user cache") == 1
