"""benchmarks/claims.py: rows come from records or say "not run" with a command, never a
number it did not read; the README's generated table is the script's current output; the
PyTorch peers' helpers (peers.py) keep their densities."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import claims  # noqa: E402
import common  # noqa: E402
import peers  # noqa: E402


def write(folder, method, sparsity, settings, accuracies, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    for seed, accuracy in enumerate(accuracies):
        name = common.run_name(method, sparsity, settings, seed) + ".json"
        (folder / name).write_text(json.dumps({"test_accuracy": accuracy, **extra}))


def test_missing_records_say_not_run_with_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "ACCURACY", str(tmp_path))
    monkeypatch.setattr(claims, "RESULTS", str(tmp_path))
    text = claims.table()
    rows = text.splitlines()[2:]
    assert len(rows) == len(claims.CLAIMS)
    assert all(line.rstrip().endswith("| not run |") for line in rows)
    assert "python benchmarks/accuracy.py --suite claims --jobs 2" in text
    assert all(line.split(" | ")[2].startswith("not run: ") for line in rows)   # "ours"


def test_rows_read_the_records_and_judge_them(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "ACCURACY", str(tmp_path))
    monkeypatch.setattr(claims, "RESULTS", str(tmp_path))
    suite = tmp_path / "claims-lenet300"
    write(suite, "dense", 0.0, {}, [0.90, 0.90])
    write(suite, "rigl", 0.9, {"epochs": 100}, [0.899, 0.898])       # -0.15: within 0.3
    write(suite, "rigl", 0.9, {}, [0.89, 0.89])                      # -1.0: not
    ours, _, holds = claims.rigl_budget(0.9, 100)()
    assert holds == "yes" and "89.85 (2 seeds, claims)" in ours and "-0.15" in ours
    assert claims.rigl_budget(0.9, 20)()[2] == "**no**"
    write(suite, "set", 0.9, {}, [0.895, 0.895])
    write(suite, "static", 0.9, {}, [0.885, 0.885])
    assert claims.ordering(0.9, 20)()[2] == "**no** (RigL < SET)"
    (tmp_path / "peers-lenet300.json").write_text(json.dumps({"rows": [
        {"method": "rigl", "sparsity": 0.9, "peer": "torch", "accuracy_mean": 0.8921,
         "seeds": 2, "epochs": 20}]}))
    assert claims.rigl_budget(0.9, 20)()[1] == "89.21 (2 seeds, 20 ep, torch)"


def test_the_readme_table_is_the_scripts_output():
    with open(claims.README, encoding="utf-8") as f:
        readme = f.read()
    section = readme.split(claims.BEGIN, 1)[1].split(claims.END, 1)[0].strip()
    assert section == claims.table().strip(), \
        "README's claims table is stale: run python benchmarks/claims.py --readme"


@pytest.mark.parametrize("density", [0.02, 0.1, 0.5])
def test_peer_erk_densities_keep_the_weight_budget(density):
    shapes = [(300, 784), (100, 300), (10, 100)]
    got = peers.erk_densities(shapes, density)
    total = sum(o * i for o, i in shapes)
    assert sum(d * o * i for d, (o, i) in zip(got, shapes)) == pytest.approx(density * total)
    assert all(0 < d <= 1 for d in got)
    assert got[0] < got[1] <= got[2]           # ERK: the widest layer is the sparsest
