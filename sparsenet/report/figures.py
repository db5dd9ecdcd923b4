"""The report's PNG figures (matplotlib, drawn off-screen). Each function writes one file and
returns its path."""
from __future__ import annotations

import os

import numpy as np

__all__ = ["accuracy_figure", "cost_figure", "per_class_figure", "exemplar_grid"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def accuracy_figure(report, path):
    """Accuracy against sparsity per method setting: mean over seeds, bars from min to max."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    labels = sorted({c["label"] for c in report["cells"] if c["method"] != "dense"})
    for label in labels:
        cells = sorted((c for c in report["cells"] if c["label"] == label),
                       key=lambda c: c["sparsity"])
        x = [100 * c["sparsity"] for c in cells]
        mean = np.array([100 * c["accuracy"]["mean"] for c in cells])
        low = mean - [100 * c["accuracy"]["min"] for c in cells]
        high = np.array([100 * c["accuracy"]["max"] for c in cells]) - mean
        ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=label)
    for c in report["cells"]:
        if c["method"] == "dense":
            a = c["accuracy"]
            ax.axhspan(100 * a["min"], 100 * a["max"], color="grey", alpha=0.2)
            ax.axhline(100 * a["mean"], color="grey", ls="--", label=c["label"] + " (band: min-max)")
    ax.set_xlabel("sparsity (% of weights removed)")
    ax.set_ylabel(f"{report['evaluated_on']} accuracy (%)")
    ax.set_title(f"{report['model']} on {report['dataset']}: mean over seeds, bars min to max")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_figure(report, path):
    """Accuracy against training and inference FLOPs (relative to dense), one point per cell."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("training FLOPs (x dense)", "inference FLOPs (x dense)")):
        for c in report["cells"]:
            value = c["costs"][key]
            if value is None:
                continue
            ax.scatter(value, 100 * c["accuracy"]["mean"], s=18)
            ax.annotate(c["name"], (value, 100 * c["accuracy"]["mean"]), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%, mean over seeds)")
    fig.suptitle("What each setting costs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_class_figure(report, comparisons, path, title):
    """Per-class accuracy change against dense with 95 % intervals, one series per comparison;
    hurt classes (interval below zero) drawn filled."""
    plt = _pyplot()
    names = report["class_names"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / max(1, len(comparisons))
    for i, comp in enumerate(comparisons):
        rows = [r for r in comp["per_class"] if r["delta"] is not None]
        x = np.array([r["class"] for r in rows]) + (i - (len(comparisons) - 1) / 2) * width
        delta = np.array([100 * r["delta"] for r in rows])
        err = [delta - [100 * r["low"] for r in rows], [100 * r["high"] for r in rows] - delta]
        line = ax.errorbar(x, delta, yerr=err, fmt="o", mfc="white", capsize=2,
                           label=comp["name"] + f" ({comp['runs']} runs)")
        hurt = np.array([r["hurt"] for r in rows])
        ax.plot(x[hurt], delta[hurt], "o", color=line[0].get_color())
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy change vs dense (points)")
    ax.set_title(title + ": 95 % bootstrap intervals; filled = hurt (interval below 0)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def exemplar_grid(images, shown, class_names, path, title, columns=8):
    """A grid of exemplar images; `shown`: [(row in images, true, sparse modal, dense modal)]."""
    plt = _pyplot()
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.35 * columns, 1.6 * rows + 0.4),
                             squeeze=False)
    short = [n.split("/")[0][:8] for n in class_names]
    for ax in axes.flat:
        ax.axis("off")
    for ax, (row, true, sparse, dense) in zip(axes.flat, shown):
        ax.imshow(images[row], cmap="gray_r")
        ax.set_title(f"true {short[true]}\nsparse {short[sparse]}\ndense {short[dense]}",
                     fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.abspath(path)
