"""The bundled Shakespeare corpus, its vocabulary and the window batches."""
import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest

from sparsenet.data import TextBatches, Vocabulary, evaluation_windows, load_text
from sparsenet.data.datasets import BUNDLED_DIR


@pytest.fixture(scope="module")
def corpus():
    return load_text("shakespeare")


def test_the_bundle_is_small_and_split_by_whole_plays(corpus):
    files = list(BUNDLED_DIR.glob("shakespeare*")) + [BUNDLED_DIR / "LICENSE-shakespeare"]
    assert sum(f.stat().st_size for f in files) <= 2_000_000
    plays = corpus.plays
    assert len(plays["train"]) + len(plays["valid"]) + len(plays["test"]) == 37
    assert not set(plays["train"]) & set(plays["valid"] + plays["test"])
    assert plays["valid"] == ["julius_caesar", "twelfth_night"]
    assert plays["test"] == ["macbeth", "tempest"]
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == \
        (4_412_843, 230_987, 201_681)


def test_no_gutenberg_boilerplate_is_left(corpus):
    for split in (corpus.train, corpus.valid, corpus.test):
        text = corpus.vocabulary.decode(split).lower()
        assert "gutenberg" not in text and "ebook" not in text
    assert corpus.vocabulary.decode(corpus.valid[:13]) == "JULIUS CAESAR"


def test_the_manifest_matches_the_files():
    manifest = json.loads((BUNDLED_DIR / "shakespeare.json").read_text())
    for name, digest in manifest["outputs"].items():
        assert hashlib.sha256((BUNDLED_DIR / name).read_bytes()).hexdigest() == digest
    assert len(manifest["vocabulary"]) == 83


def test_vocabulary_round_trip_and_characters_outside_it(corpus):
    v = corpus.vocabulary
    text = "To be, or not to be: that is the question."
    ids = v.encode(text)
    assert ids.dtype == np.uint8 and v.decode(ids) == text
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 3"):
        v.encode("caf\u00e9")
    with pytest.raises(ValueError, match="'#'"):
        v.encode("a # b")                       # ASCII, but never in the plays
    with pytest.raises(ValueError, match=r"\[0, 83\)"):
        v.decode([0, 83])
    with pytest.raises(TypeError, match="str"):
        v.encode(b"bytes")


def test_vocabulary_rejects_bad_character_sets():
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary("aab")
    with pytest.raises(ValueError, match="non-empty"):
        Vocabulary("")


def test_batches_are_next_character_windows_fixed_by_seed_and_step(corpus):
    batches = TextBatches(corpus.train, batch_size=4, context=16, seed=3)
    x, y = batches.batch(7)
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])          # y is x shifted by one
    again, _ = TextBatches(corpus.train, 4, 16, seed=3).batch(7)
    np.testing.assert_array_equal(x, again)
    other, _ = TextBatches(corpus.train, 4, 16, seed=4).batch(7)
    assert not np.array_equal(x, other)
    assert len(batches) == len(corpus.train) // 64


def test_evaluation_windows_cover_consecutive_characters_once():
    tokens = np.arange(50, dtype=np.uint8)
    x, y = evaluation_windows(tokens, 8)
    assert x.shape == (6, 8)
    np.testing.assert_array_equal(x.ravel(), np.arange(48))
    np.testing.assert_array_equal(y.ravel(), np.arange(1, 49))
    assert evaluation_windows(tokens, 8, max_characters=16)[0].shape == (2, 8)


@pytest.mark.parametrize("call, error, words", [
    (lambda t: TextBatches(t, 0, 8), ValueError, "batch_size"),
    (lambda t: TextBatches(t, 2, 100), ValueError, "fewer than context"),
    (lambda t: TextBatches(t.astype(np.float32), 2, 8), TypeError, "integer"),
    (lambda t: evaluation_windows(t, 0), ValueError, "context"),
])
def test_bad_batch_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call(np.arange(50, dtype=np.uint8))


def test_a_damaged_file_and_unknown_names_are_refused(tmp_path):
    for f in BUNDLED_DIR.glob("shakespeare*"):
        shutil.copy(f, tmp_path / f.name)
    assert len(load_text("shakespeare", tmp_path).valid) == 230_987    # an explicit directory
    (tmp_path / "shakespeare-valid.txt.gz").write_bytes(gzip.compress(b"Something else"))
    with pytest.raises(ValueError, match="damaged"):
        load_text("shakespeare", tmp_path)
    with pytest.raises(ValueError, match="unknown text dataset"):
        load_text("tolstoy")
    with pytest.raises(FileNotFoundError):
        load_text("shakespeare", tmp_path / "missing")
