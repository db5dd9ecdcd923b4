"""Figures of the tutorials: shown inline in Jupyter, saved as PNG files in every case.

    from sparsenet.plotting import Figures
    figures = Figures("01")              # first, before pyplot draws anything
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ...
    figures.show(fig, "loss_curve")      # -> figures/01_loss_curve.png, and inline in Jupyter

The folder is `figures/` under the current directory (in Jupyter: the notebook's own folder),
or the one named by $SPARSENET_FIGURES. A script draws with matplotlib's file-only backend
(Agg) unless $MPLBACKEND names another, so it runs without a display and opens no window;
in Jupyter the figure is displayed under its cell. Both save the file, so a figure is never
lost, in fast mode (SPARSENET_FAST=1) too.

matplotlib is imported here only when `Figures` is used: the engine itself never needs it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def in_notebook() -> bool:
    """True inside a Jupyter kernel, which shows figures under their cells (a terminal IPython,
    or a program that merely imported ipykernel, is not one)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


class Figures:
    """Saves (and in Jupyter shows) a tutorial's figures as `<folder>/<prefix>_<name>.png`."""

    def __init__(self, prefix: str, folder=None, dpi: int = 110):
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\"):
            raise ValueError(f"prefix must be a non-empty file-name part (no slashes), "
                             f"got {prefix!r}")
        import matplotlib
        if not in_notebook() and not os.environ.get("MPLBACKEND"):
            matplotlib.use("Agg")          # a script draws to files only
        if folder is None:
            folder = os.environ.get("SPARSENET_FIGURES") or "figures"
        self.prefix, self.folder, self.dpi = prefix, Path(folder), dpi
        self.saved: list[Path] = []

    def path(self, name: str) -> Path:
        return self.folder / f"{self.prefix}_{name}.png"

    def show(self, fig, name: str) -> Path:
        """Save `fig` as `<prefix>_<name>.png` (printing where), display it in Jupyter, close it."""
        import matplotlib.pyplot as plt
        if not isinstance(name, str) or not name or any(c in name for c in "/\\"):
            raise ValueError(f"name must be a non-empty file-name part (no slashes), got {name!r}")
        path = self.path(name)
        if path in self.saved:
            raise ValueError(f"figure name {name!r} was already used by this tutorial ({path})")
        self.folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=self.dpi, bbox_inches="tight")
        self.saved.append(path)
        print(f"figure saved to {path}")
        if in_notebook():
            from IPython.display import display
            display(fig)
        plt.close(fig)                     # shown once, and no pile of open figures
        return path
