"""The README's Python examples run as written (documentation that runs in CI)."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # the examples write files (sn.save)
    monkeypatch.setenv("SPARSENET_DATA", str(tmp_path / "none"))   # use the bundled subset
    exec(compile(python_blocks()[index], f"README.md example {index}", "exec"), {})
