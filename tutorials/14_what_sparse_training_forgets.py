# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 14 · What sparse training forgets
#
# A sparse network that loses 0.5 points of accuracy does not lose them evenly. Hooker et al.
# (2019, *What Do Compressed Deep Neural Networks Forget?*) found that pruning costs some
# classes, and some images, far more than the average says. This notebook asks the same of
# sparsenet's methods on Fashion-MNIST.
#
# **You will learn**
#
# 1. to train small populations (a few seeds) of dense, pruned and sparse-from-scratch networks;
# 2. measure each class's accuracy change against dense, with a bootstrap interval, and see
#    which classes suffer first as sparsity grows;
# 3. learn to read those intervals: what makes them wide, when a change is real;
# 4. find the *pruning-identified exemplars*: the images on which the sparse networks' vote
#    differs from the dense networks' vote, and look at them;
# 5. write the whole analysis as a report (`sparsenet report`), and read the one made from the
#    full-data records committed with sparsenet.
#
# **Time**: about 10 minutes to read; the training takes about a minute in fast mode
# (`SPARSENET_FAST=1 python tutorials/14_what_sparse_training_forgets.py`, the bundled subset,
# 2 epochs) and some minutes without it. Figures go to `figures/` beside where you run it.

# %%
import json
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND") \
        and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")          # a script without a display draws to files only
import matplotlib.pyplot as plt  # noqa: E402

from sparsenet.data.datasets import CLASS_NAMES  # noqa: E402
from sparsenet.plotting import Figures  # noqa: E402
from sparsenet.predictions import decode_predictions  # noqa: E402
from sparsenet.report import analyse, build_report  # noqa: E402
from sparsenet.report.stats import per_class_change  # noqa: E402
from sparsenet.train import TrainConfig, fast_mode, load_arrays, train_model  # noqa: E402

FAST = fast_mode()                 # SPARSENET_FAST=1: the bundled subset's first images, 2 epochs
EPOCHS = 2 if FAST else 10
SEEDS = 2 if FAST else 3
SPARSITIES = (0.9, 0.98)
METHODS = ("gmp", "static", "rigl")      # pruning during training; fixed and evolving topologies
DATA = load_arrays("subset" if FAST else "auto")
RUNS = Path("runs_14")
RUNS.mkdir(exist_ok=True)
figures = Figures("14")            # inline in Jupyter; always saved to figures/14_*.png
_, y_train, _, y_test, origin = DATA
print(f"fast mode: {FAST}; {len(y_train)} training and {len(y_test)} test images from {origin}")

# %% [markdown]
# ## 1. Populations of networks
#
# One run is one draw: its seed picks the initialization, the batches, the random topology.
# To say that *sparsity* hurts a class, we need several draws of each setting. Every
# `train_model` record now carries the prediction for every test image (one byte each, see
# `sparsenet/predictions.py`), so everything below is computed from the records alone.

# %%
cells = [("dense", 0.0)] + [(m, s) for s in SPARSITIES for m in METHODS]
for method, sparsity in cells:
    for seed in range(SEEDS):
        path = RUNS / f"{method}-{sparsity:g}-s{seed}.json"
        if path.exists():                       # rerunning the notebook reuses the records
            continue
        config = TrainConfig(method=method, sparsity=sparsity or None, epochs=EPOCHS, seed=seed,
                             progress=False)
        _, record = train_model(config, log=None, data=DATA)
        path.write_text(json.dumps(record))
report, records = analyse([str(RUNS)], samples=1000)
for cell in report["cells"]:
    accuracy = cell["accuracy"]
    print(f"{cell['name']:18s} {accuracy['runs']} runs  accuracy {100 * accuracy['mean']:.2f} % "
          f"(min {100 * accuracy['min']:.2f}, max {100 * accuracy['max']:.2f})")
if FAST:
    print("(fast mode: 2 epochs on 1000 images; these accuracies say nothing about the methods)")

# %% [markdown]
# **Try it**:
# - Add `"set"` to `METHODS` and rerun: the records already on disk are reused, only the new
#   runs train.
# - Set `SEEDS = 1`: every cell then has min = max, and section 3 shows what that does to the
#   intervals.

# %% [markdown]
# ## 2. Which classes lose most
#
# For class c, the change is the sparse runs' mean accuracy on the test images of class c minus
# the dense runs' mean. `analyse` pools the settings of one family (pruning, static sparse,
# dynamic sparse training) at each sparsity and compares each pool with dense.

# %%
names = report["class_names"]
for family in report["families"]:
    rows = sorted((r for r in family["per_class"] if r["delta"] is not None),
                  key=lambda r: r["delta"])
    worst = ", ".join(f"{names[r['class']]} {100 * r['delta']:+.1f}" for r in rows[:3])
    hurt = [names[r["class"]] for r in rows if r["hurt"]]
    print(f"{family['name']:34s} overall {100 * family['accuracy']:.2f} %; loses most: {worst}; "
          f"hurt beyond the interval: {', '.join(hurt) or 'none'}")

fig, axes = plt.subplots(1, len(SPARSITIES), figsize=(11, 3.8), sharey=True)
for ax, sparsity in zip(np.atleast_1d(axes), SPARSITIES):
    for family in (f for f in report["families"] if f["sparsity"] == sparsity):
        delta = [100 * r["delta"] for r in family["per_class"]]
        ax.plot(range(len(names)), delta, "o-", label=family["name"].split(" @")[0])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
    ax.set_title(f"sparsity {100 * sparsity:g} %")
np.atleast_1d(axes)[0].set_ylabel("accuracy change vs dense (points)")
np.atleast_1d(axes)[0].legend(fontsize=7)
fig.tight_layout()
figures.show(fig, "per_class_change")

# %% [markdown]
# Section 5 prints the same from the full-data records committed with sparsenet: there the
# classes that lose first are the ones that already confuse a dense network (Shirt first, then
# Pullover, Coat and T-shirt/top: they look alike at 28×28, and a network with fewer
# connections has less room to keep their fine differences), while Bag or Sandal loses least in
# most settings. In fast mode the ranking above is noise.
#
# **Try it**:
# - Compare the two panels: does the ordering of the worst classes stay the same from 90 to
#   98 %? On the full data it mostly does, and the losses grow.
# - Print `report["comparisons"]` for one setting: the family pool hides differences between
#   methods of one family.

# %% [markdown]
# ## 3. Reading the intervals
#
# A change of −2 points measured on 100 images of one class and 2 runs is not the same as −2
# points on 1000 images and 5 runs. The report's 95 % interval resamples both sources of
# chance: the class's test images (with replacement, the same draw for sparse and dense, since
# both saw the same images) and each side's runs. **hurt** means the whole interval lies below
# zero. Here is the width of one class's interval as the number of images and runs grows:

# %%
predicted, labels = decode_predictions(records[0])
by_cell = {}
for record in records:
    by_cell.setdefault((record["method"], record["target_sparsity"]), []).append(record)
dense_correct = np.stack([decode_predictions(r)[0] == labels for r in by_cell[("dense", 0.0)]])
sparse_key = ("rigl", SPARSITIES[-1])
sparse_correct = np.stack([decode_predictions(r)[0] == labels for r in by_cell[sparse_key]])
shirt = CLASS_NAMES.index("Shirt")
for runs in range(1, SEEDS + 1):
    for share in (0.25, 1.0):
        keep = np.arange(int(share * len(labels)))          # the first images only
        rows = per_class_change(sparse_correct[:runs][:, keep], dense_correct[:runs][:, keep],
                                labels[keep], len(names))
        row = rows[shirt]
        print(f"{runs} run(s) per side, {row['images']:4d} Shirt images: change "
              f"{100 * row['delta']:+6.2f}, interval [{100 * row['low']:+6.2f}, "
              f"{100 * row['high']:+6.2f}], width {100 * (row['high'] - row['low']):5.2f} points")
if FAST:
    print("(fast mode: 50 test images per class; the intervals are wide, as they should be)")

# %% [markdown]
# Two things to see: four times the images narrow the interval about twice (the square root
# of n), and one run per side leaves out the spread between seeds, so its interval is too
# narrow for a claim about the *method*: with one run you measure that one network.
#
# **Try it**:
# - Change `shirt` to `CLASS_NAMES.index("Trouser")`: an easy class has a narrow interval
#   even with few images, because almost every prediction is right.
# - Pass `samples=200` to `per_class_change`: the interval's ends move a little (fewer
#   resamples), its width does not change much.

# %% [markdown]
# ## 4. Pruning-identified exemplars
#
# Hooker et al. call an image a *pruning-identified exemplar* when the most frequent prediction
# of the sparse networks differs from the most frequent prediction of the dense networks. With
# few runs a vote can tie; `sparsenet` counts an image only when no winner of one side is a
# winner of the other.

# %%
from sparsenet.report.images import exemplar_images  # noqa: E402

pool = next(f for f in report["families"] if f["sparsity"] == SPARSITIES[-1]
            and f["family"] == "dynamic sparse training")
found = pool["exemplars"]
print(f"{pool['name']}: {found['count']} exemplars, {100 * found['share']:.1f} % of the test "
      "images; per class:")
for c, (count, share) in enumerate(zip(found["per_class"], found["per_class_share"])):
    print(f"  {names[c]:12s} {count:4d}  ({100 * share:.1f} % of its images)")
images, index_map, note = exemplar_images(records[0], labels)
print(note)
if images is not None:
    shown = [i for i in found["indices"] if index_map[i] >= 0][:16]
    fig, axes = plt.subplots(2, 8, figsize=(11, 3.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, sparse_vote, dense_vote in zip(axes.flat, shown, found["sparse_modal"],
                                              found["dense_modal"]):
        ax.imshow(images[index_map[i]], cmap="gray_r")
        ax.set_title(f"{names[labels[i]][:7]}\ns:{names[sparse_vote][:7]} "
                     f"d:{names[dense_vote][:7]}", fontsize=6)
    fig.suptitle("exemplars: true label, sparse vote (s), dense vote (d)", fontsize=8)
    fig.tight_layout()
    figures.show(fig, "exemplars")

# %% [markdown]
# Hooker et al. found exemplars to be atypical or ambiguous images, often ones humans
# mislabel too; on Fashion-MNIST they are mostly shirts drawn like T-shirts, coats like
# pullovers. Some are images the *dense* networks got wrong and the sparse ones got right.
#
# **Try it**:
# - Count how many exemplars the dense vote got right:
#   `sum(labels[i] == d for i, d in zip(found["indices"], found["dense_modal"]))`.
# - Use the pool at 90 % instead: fewer exemplars, the same classes.

# %% [markdown]
# ## 5. The report, and the full-data answer
#
# `sparsenet report RUNS --out DIR` writes all of this, with accuracy against sparsity, FLOPs
# and bytes, as `report.md` with PNG figures, one `report.html` that opens offline (figures
# embedded), and `report.json` with every number.

# %%
paths = build_report([str(RUNS)], "report_14")
print("wrote", paths["html"], "and", paths["markdown"])

here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
committed = here.parent / "benchmarks" / "results" / "accuracy" / "claims-lenet300"
if committed.is_dir():
    full, _ = analyse([str(committed)], samples=1000)
    print(f"\nthe committed full-data records ({len(full['records'])} runs, 20 epochs unless "
          "the setting says otherwise):")
    for family in full["families"]:
        rows = sorted((r for r in family["per_class"] if r["delta"] is not None),
                      key=lambda r: r["delta"])[:3]
        print(f"  {family['name']:46s} " + "; ".join(
            f"{full['class_names'][r['class']]} {100 * r['delta']:+.2f} "
            f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]{' hurt' if r['hurt'] else ''}"
            for r in rows))
else:
    # older committed records hold per-class accuracies but no per-example predictions:
    # their per-class changes are point estimates, without intervals or exemplars
    older = {"gmp 90 %": "pruning-lenet300/gmp-0.9", "snip 98 %": "pruning-lenet300/snip-0.98",
             "rigl 90 %": "dst-dense-init-lenet300/rigl-0.9",
             "rigl 98 %": "dst-dense-init-lenet300/rigl-0.98",
             "static 98 %": "dst-dense-init-lenet300/static-0.98"}
    accuracy_dir = committed.parent

    def per_class(stem):
        found = [json.loads(p.read_text()) for p in accuracy_dir.glob(stem + "-s*.json")]
        return np.mean([r["per_class_accuracy"] for r in found], axis=0) if found else None
    dense_classes = per_class("pruning-lenet300/dense-0")
    if dense_classes is None:
        print("(no full-data records here: run `python benchmarks/accuracy.py --suite claims` "
              "in a source checkout)")
    else:
        print("\nfull-data records without predictions (point estimates, no intervals):")
        for name, stem in older.items():
            change = 100 * (per_class(stem) - dense_classes)
            order = np.argsort(change)
            print(f"  {name:12s} loses most: " + ", ".join(
                f"{CLASS_NAMES[c]} {change[c]:+.1f}" for c in order[:3])
                + f"; least: {CLASS_NAMES[order[-1]]} {change[order[-1]]:+.1f}")

# %% [markdown]
# **Try it**:
# - Run `sparsenet report benchmarks/results/accuracy/claims-lenet300 --out report` in a
#   source checkout and open `report/report.html`: the same numbers, every setting.
# - Mix in a record of another model (`--model lenet5`): the report refuses, naming what
#   differs, rather than averaging across models.
#
# ## What's next
#
# `benchmarks/claims.py` holds each paper's headline claim against the same records: which of
# them hold on Fashion-MNIST, at the papers' own budgets.
