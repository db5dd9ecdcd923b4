"""Every tutorial runs as a script in fast mode and is a valid jupytext py:percent notebook."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 240


def test_tutorials_are_found():
    assert TUTORIALS, f"no tutorials/[0-9][0-9]_*.py under {ROOT}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_a_percent_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:\n"), "missing the jupytext header"
    assert "format_name: percent" in text.split("# ---", 2)[1], "header is not py:percent"
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert "markdown" in kinds and "code" in kinds, f"{path.name}: cells are {kinds}"
    assert kinds[0] == "markdown", f"{path.name} should open with a markdown cell"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_fast_mode(path, tmp_path):
    env = dict(os.environ, SPARSENET_FAST="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("DISPLAY", None)
    try:
        result = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"{path.name} ran longer than {TIMEOUT_S} s in fast mode; stderr tail:\n"
                    f"{(stderr or '')[-3000:]}")
    if result.returncode != 0:
        pytest.fail(f"{path.name} exited with {result.returncode}; stderr tail:\n"
                    f"{result.stderr[-3000:]}")
