"""Every tutorial runs to the end in fast mode (SPARSENET_FAST=1) both as a script and as an
executed notebook (jupytext -> ipynb -> nbclient in an ipykernel), and saves its figures; each
one has the shape of the learning path (tutorials/README.md): what you will learn and how long
it takes at the top, "Try it" exercises, named data variables, figures through the shared
helper (sparsenet/plotting.py), which is tested here too."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
IDS = [p.stem for p in TUTORIALS]
TIMEOUT_S = 900                      # a hang guard (a shared machine is slow): a script, or one notebook cell
SAVED = re.compile(r"^figure saved to (.+\.png)$", re.M)


def fast_env(overrides=None) -> dict:
    """The environment of a fast-mode run: the repository importable, no display, figures in
    the default folder (figures/ under the working directory)."""
    env = dict(os.environ, SPARSENET_FAST="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for name in ("DISPLAY", "MPLBACKEND", "SPARSENET_FIGURES"):
        env.pop(name, None)
    env.update(overrides or {})
    return env


def check_figures(output: str, folder: Path, name: str) -> list:
    """The figures a run says it saved exist under `folder` as PNG files; returns them."""
    saved = SAVED.findall(output)
    assert saved, f"{name} saved no figure (no 'figure saved to ...' line in its output)"
    prefix = name.split("_")[0] + "_"
    for relative in saved:
        path = folder / relative
        assert path.is_file(), f"{name} says it saved {relative}, but {path} does not exist"
        assert path.parent == folder / "figures", f"{name} saved {relative} outside figures/"
        assert path.name.startswith(prefix), f"{name} saved {path.name}, not named {prefix}*"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return saved


def test_tutorials_are_found():
    assert len(TUTORIALS) >= 8, f"expected tutorials/[0-9][0-9]_*.py under {ROOT}"


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_is_a_percent_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:\n"), "missing the jupytext header"
    assert "format_name: percent" in text.split("# ---", 2)[1], "header is not py:percent"
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert "markdown" in kinds and "code" in kinds, f"{path.name}: cells are {kinds}"
    assert kinds[0] == "markdown", f"{path.name} should open with a markdown cell"


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_has_the_learning_shape(path):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(path)
    opening = notebook.cells[0].source
    assert "**You will learn**" in opening, f"{path.name}: the opening says what is learned"
    assert "**Time**" in opening, f"{path.name}: the opening says how long it takes"
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert markdown.count("**Try it**") >= 2, f"{path.name}: needs 'Try it' exercises"
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    indexed = re.findall(r"\b(?:data|DATA|arrays)\[\d\]", code)
    assert not indexed, f"{path.name} indexes the data tuple ({indexed}): name the arrays"
    assert "figures.show(" in code, f"{path.name} shows no figure through sparsenet.plotting"
    for call in ("plt.show(", ".savefig("):
        assert call not in code, f"{path.name} calls {call}: use figures.show(fig, name)"


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_runs_as_a_script(path, tmp_path):
    try:
        result = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=fast_env(),
                                capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"{path.name} ran longer than {TIMEOUT_S} s in fast mode; stderr tail:\n"
                    f"{(stderr or '')[-3000:]}")
    if result.returncode != 0:
        pytest.fail(f"{path.name} exited with {result.returncode}; stderr tail:\n"
                    f"{result.stderr[-3000:]}")
    check_figures(result.stdout, tmp_path, path.stem)


def notebook_outputs(notebook):
    """(text of every stream and text output, number of PNG images displayed) of a notebook."""
    texts, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output.get("text", ""))
            data = output.get("data", {})
            images += "image/png" in data
            texts.append(data.get("text/plain", ""))
    return "\n".join(texts), images          # one output per line: "^figure saved" matches


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_runs_as_a_notebook(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    if importlib.util.find_spec("ipykernel") is None:     # not imported: it would stay here
        pytest.skip("ipykernel is not installed")
    for name, value in fast_env().items():       # the kernel inherits this environment
        monkeypatch.setenv(name, value)
    for name in ("DISPLAY", "MPLBACKEND", "SPARSENET_FIGURES"):
        monkeypatch.delenv(name, raising=False)
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed as a notebook:\n{str(e)[-3000:]}")
    text, images = notebook_outputs(notebook)
    saved = check_figures(text, tmp_path, path.stem)
    assert images == len(saved), (f"{path.name}: {len(saved)} figures saved but {images} shown "
                                  "inline")
    if importlib.util.find_spec("ipywidgets") is not None:
        assert "IProgress not found" not in text, f"{path.name}: tqdm found no widgets"


# ----- the figure helper (sparsenet/plotting.py) ---------------------------------------------
def test_figures_saves_where_it_says(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from sparsenet.plotting import Figures
    figures = Figures("99", folder=tmp_path / "out")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = figures.show(fig, "line")
    assert path == tmp_path / "out" / "99_line.png" and path.is_file()
    assert capsys.readouterr().out == f"figure saved to {path}\n"
    assert figures.saved == [path]
    assert not plt.fignum_exists(fig.number), "a shown figure is closed"
    with pytest.raises(ValueError, match="already used"):
        figures.show(plt.figure(), "line")
    plt.close("all")


def test_figures_default_folder_and_bad_names(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from sparsenet.plotting import Figures
    monkeypatch.delenv("SPARSENET_FIGURES", raising=False)
    assert Figures("01").folder == Path("figures")
    monkeypatch.setenv("SPARSENET_FIGURES", str(tmp_path))
    assert Figures("01").path("loss") == tmp_path / "01_loss.png"
    for bad in ("", "a/b", None):
        with pytest.raises(ValueError, match="prefix"):
            Figures(bad)
    figures = Figures("01")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    for bad in ("", "../x"):
        with pytest.raises(ValueError, match="name"):
            figures.show(fig, bad)
    plt.close(fig)
    assert not list(tmp_path.iterdir()), "a refused figure writes nothing"


def test_figures_draws_to_files_in_a_script(tmp_path):
    """A script without a display gets the file-only backend: it never opens a window."""
    pytest.importorskip("matplotlib")
    code = ("from sparsenet.plotting import Figures\nFigures('01')\nimport matplotlib\n"
            "print(matplotlib.get_backend())\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=fast_env(),
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().lower() == "agg"
