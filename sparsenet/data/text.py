"""Character-level text: the bundled Shakespeare corpus, its vocabulary, and batches of windows.

Quick start::

    from sparsenet.data import load_text, TextBatches
    corpus = load_text("shakespeare")               # train / valid / test token ids (uint8)
    ids = corpus.vocabulary.encode("To be, or not to be")
    batches = TextBatches(corpus.train, batch_size=32, context=64, seed=0)
    x, y = batches.batch(0)                         # (32, 64) inputs, (32, 64) next characters

The corpus is Shakespeare's 37 plays, split by whole plays (33 train, 2 validation, 2 test);
`sparsenet/data/bundled/README.md` and `LICENSE-shakespeare` say where it came from, and
`scripts/make_shakespeare.py` rebuilds it. A token is one character; the vocabulary is every
character of the three splits, sorted, so validation and test hold no unknown character.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import BUNDLED_DIR
from .loader import _check_int

__all__ = ["TEXT_DATASETS", "TextBatches", "TextCorpus", "Vocabulary", "evaluation_windows",
           "load_text"]

TEXT_DATASETS = ("shakespeare",)
SPLITS = ("train", "valid", "test")


class Vocabulary:
    """Characters <-> token ids (the index of the character in `characters`)."""

    def __init__(self, characters: str):
        if not isinstance(characters, str) or not characters:
            raise ValueError("a vocabulary needs a non-empty string of characters")
        if len(set(characters)) != len(characters):
            raise ValueError("the vocabulary's characters must be distinct")
        if len(characters) > 256:
            raise ValueError(f"at most 256 characters (ids are uint8), got {len(characters)}")
        self.characters = characters
        codes = np.array([ord(c) for c in characters], dtype=np.int64)
        self._table = np.full(int(codes.max()) + 1, -1, dtype=np.int64)   # code point -> id
        self._table[codes] = np.arange(len(characters))

    def __len__(self):
        return len(self.characters)

    def __repr__(self):
        return f"Vocabulary({len(self)} characters)"

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint8) of `text`; a character outside the vocabulary is an error."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if text.isascii():                   # one byte per character: the fast, common case
            codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        else:
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._table
        if table.size < 128:                 # every ASCII code point gets an entry (maybe -1)
            table = np.concatenate([table, np.full(128 - table.size, -1, dtype=np.int64)])
        known = codes < table.size
        ids = np.full(codes.shape, -1, dtype=np.int64)
        ids[known] = table[codes[known]]
        if (ids < 0).any():
            where = int(np.flatnonzero(ids < 0)[0])
            char = text[where]
            raise ValueError(f"character {char!r} (U+{ord(char):04X}) at position {where} is not "
                             f"in the vocabulary of {len(self)} characters")
        return ids.astype(np.uint8)

    def decode(self, ids) -> str:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            raise ValueError(f"ids must lie in [0, {len(self)}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        return "".join(self.characters[i] for i in ids.ravel())


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A corpus as token ids (uint8 arrays) of its three splits, its vocabulary and origin."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocabulary: Vocabulary
    origin: str
    plays: dict


def load_text(name: str = "shakespeare", source="auto") -> TextCorpus:
    """Load a text corpus. `source`: "auto", "subset" or "full" (all three are the bundled
    corpus: it is small enough to be bundled whole), or a directory holding the same files
    (`shakespeare.json` and the three gzipped splits). Each split's SHA-256 is checked."""
    if name not in TEXT_DATASETS:
        raise ValueError(f"unknown text dataset {name!r}: expected one of {TEXT_DATASETS}")
    if source in ("auto", "subset", "full", None):
        directory, origin = BUNDLED_DIR, "bundled corpus"
    else:
        directory = Path(source)
        origin = str(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"text data directory {directory} does not exist")
    manifest_path = directory / f"{name}.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: a text corpus directory holds "
                                f"{name}.json and its splits")
    manifest = json.loads(manifest_path.read_text())
    vocabulary = Vocabulary(manifest["vocabulary"])
    splits = {}
    for split in SPLITS:
        facts = manifest["splits"][split]
        raw = gzip.decompress((directory / facts["file"]).read_bytes())
        if hashlib.sha256(raw).hexdigest() != facts["text_sha256"]:
            raise ValueError(f"{directory / facts['file']} does not match the SHA-256 in "
                             f"{manifest_path}: the file is damaged")
        splits[split] = vocabulary.encode(raw.decode("ascii"))
    plays = {split: manifest["splits"][split]["plays"] for split in SPLITS}
    return TextCorpus(name, splits["train"], splits["valid"], splits["test"], vocabulary,
                      origin, plays)


def _check_tokens(tokens, context):
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise TypeError("tokens must be a 1-D integer numpy array")
    if len(tokens) < context + 1:
        raise ValueError(f"tokens hold {len(tokens)} characters, fewer than context + 1 = "
                         f"{context + 1}")


class TextBatches:
    """Random windows of a token stream: batch(step) gives x (batch, context) and y, the next
    character of each position. The windows of a step depend only on (seed, step), so a run
    can resume anywhere. len() is the steps that see as many characters as the stream holds
    (one "epoch"); iteration serves that many batches."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int, seed: int = 0):
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.context = _check_int(context, "context", 1)
        self.seed = _check_int(seed, "seed", 0)
        _check_tokens(tokens, self.context)
        self.tokens = tokens

    def __len__(self):
        return max(1, len(self.tokens) // (self.batch_size * self.context))

    def batch(self, step: int):
        rng = np.random.default_rng([self.seed, _check_int(step, "step", 0)])
        starts = rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)
        windows = self.tokens[starts[:, None] + np.arange(self.context + 1)]   # (batch, T + 1)
        return windows[:, :-1].astype(np.int64), windows[:, 1:].astype(np.int64)

    def __iter__(self):
        return (self.batch(step) for step in range(len(self)))


def evaluation_windows(tokens: np.ndarray, context: int, max_characters: int | None = None):
    """(x, y) of consecutive, non-overlapping windows from the start of `tokens`: every
    character predicted once (up to `max_characters` of them), the same ones for every run."""
    context = _check_int(context, "context", 1)
    _check_tokens(tokens, context)
    n = (len(tokens) - 1) // context
    if max_characters is not None:
        n = min(n, max(1, _check_int(max_characters, "max_characters", 1) // context))
    starts = np.arange(n) * context
    windows = tokens[starts[:, None] + np.arange(context + 1)]
    return windows[:, :-1].astype(np.int64), windows[:, 1:].astype(np.int64)
