"""The report as documents: a list of blocks (headings, paragraphs, tables, figures) written once
as markdown with PNG files beside it, and once as a single HTML file with the figures embedded
(base64 data URIs: it opens offline, alone). `report.json` holds every number behind them."""
from __future__ import annotations

import base64
import html
import json
import os
import re

from . import figures
from ..predictions import decode_predictions, has_predictions
from .images import exemplar_images

__all__ = ["write_report"]

GRID_IMAGES = 32


def pct(x, digits=2):
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def signed(x):
    return "n/a" if x is None else f"{100 * x:+.2f}"


def _number(x):
    if x is None:
        return "not recorded"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _accuracy_blocks(report, out_dir):
    ref = next((c for c in report["cells"] if c["name"] == report["reference"]), None)
    rows = []
    for c in report["cells"]:
        a = c["accuracy"]
        vs = signed(a["mean"] - ref["accuracy"]["mean"]) if ref and c is not ref else ""
        rows.append([c["name"], c["family"], f"{a['runs']} (seeds {', '.join(map(str, c['seeds']))})",
                     f"{a['density']:.4f}", pct(a["mean"]), pct(a["std"]), pct(a["min"]),
                     pct(a["max"]), vs])
    figure = figures.accuracy_figure(report, os.path.join(out_dir, "accuracy_vs_sparsity.png"))
    return [("h2", "Accuracy against sparsity"),
            ("p", f"{report['evaluated_on'].capitalize()} accuracy in %, over the runs (seeds) of "
                  "each setting: mean, sample standard deviation, min and max. \"vs dense\" is the "
                  f"mean's difference from the reference ({report['reference'] or 'none'}), in points."),
            ("table", ["setting", "family", "runs", "density", "mean", "std", "min", "max",
                       "vs dense"], rows),
            ("img", figure, "accuracy against sparsity")]


def _cost_blocks(report, out_dir):
    keys = list(report["cells"][0]["costs"])
    rows = [[c["name"]] + [_number(c["costs"][k]) for k in keys] for c in report["cells"]]
    missing = [k for k in keys if all(c["costs"][k] is None for c in report["cells"])]
    note = ("Means over the runs of each setting. FLOPs count the weight products (2 per "
            "multiply-add; a training step is 3 forwards plus the method's own work), as the "
            "RigL paper's Appendix H does; bytes are the weights with their index arrays, and "
            "for training also gradients and optimizer state.")
    if missing:
        note += " Not recorded by any run: " + ", ".join(missing) + "."
    figure = figures.cost_figure(report, os.path.join(out_dir, "costs.png"))
    return [("h2", "What each setting costs"), ("p", note), ("table", ["setting"] + keys, rows),
            ("img", figure, "accuracy against FLOPs")]


def _interval(r):
    if r["delta"] is None:
        return "no images"
    return f"{signed(r['delta'])} [{signed(r['low'])}, {signed(r['high'])}]" + (" **hurt**" if r["hurt"] else "")


def _forgetting_blocks(report, out_dir):
    names = report["class_names"]
    b = report["bootstrap"]
    blocks = [("h2", "What sparse training forgets: per-class change against dense"),
              ("p", f"For each class: the sparse runs' mean accuracy on that class's test images "
                    f"minus the dense runs' ({report['reference']}, "
                    f"{report.get('reference_runs', 0)} runs), in points, with a 95 % bootstrap "
                    f"interval ({b['samples']} resamples of the class's test images, the same "
                    f"draw for both sides, and of each side's runs; seed {b['seed']}). **hurt**: "
                    "the whole interval lies below zero. An interval that straddles zero says "
                    "the runs cannot tell that class's change from chance.")]
    if not report["families"]:
        return blocks + [("p", "No comparison: no sparse and dense runs with predictions.")]
    blocks.append(("h3", "By family, pooling the settings of a family at each sparsity"))
    header = ["family @ sparsity", "runs", "accuracy"] + names
    rows = [[f["name"], str(f["runs"]), pct(f["accuracy"])] + [_interval(r) for r in f["per_class"]]
            for f in report["families"]]
    blocks.append(("table", header, rows))
    lines = []
    for f in report["families"]:
        worst = sorted((r for r in f["per_class"] if r["delta"] is not None),
                       key=lambda r: r["delta"])[:3]
        lines.append(f"- {f['name']}: " + "; ".join(
            f"{names[r['class']]} {signed(r['delta'])} [{signed(r['low'])}, {signed(r['high'])}]"
            + (" (hurt)" if r["hurt"] else "") for r in worst))
    blocks.append(("p", "Classes that lose most (change and interval, in points):\n\n"
                   + "\n".join(lines)))
    budgets = sorted({f["epochs"] for f in report["families"]}, key=str)
    for sparsity in sorted({f["sparsity"] for f in report["families"]}):
        for epochs in budgets:
            at = [f for f in report["families"]
                  if f["sparsity"] == sparsity and f["epochs"] == epochs]
            if not at:
                continue
            tag = f"{100 * sparsity:g}" + (f"_e{epochs}" if len(budgets) > 1 else "")
            title = f"sparsity {100 * sparsity:g} %, {epochs} epochs"
            path = os.path.join(out_dir, f"per_class_{tag}.png")
            blocks.append(("img", figures.per_class_figure(report, at, path, title),
                           f"per-class change, {title}"))
    blocks.append(("h3", "By setting"))
    rows = [[c["name"], str(c["runs"])] + [_interval(r) for r in c["per_class"]]
            for c in report["comparisons"]]
    blocks.append(("table", ["setting", "runs"] + names, rows))
    return blocks


def _exemplar_blocks(report, out_dir, records):
    names = report["class_names"]
    blocks = [("h2", "Pruning-identified exemplars"),
              ("p", "Test images on which the modal prediction of the sparse runs differs from "
                    "the modal prediction of the dense runs (Hooker et al. 2019, \"What Do "
                    "Compressed Deep Neural Networks Forget?\"). With few runs the vote can tie: "
                    "an image counts only when no modal class of one side is a modal class of "
                    "the other. Share: of all test images; per class: exemplars among that "
                    "class's test images.")]
    everything = report["families"] + report["comparisons"]
    if not everything:
        return blocks + [("p", "No exemplars: no sparse and dense runs with predictions.")]
    header = ["population", "runs", "exemplars", "share (%)"] + names
    rows = [[e["name"], str(e["runs"]), str(e["exemplars"]["count"]),
             pct(e["exemplars"]["share"])] +
            [f"{n} ({pct(s, 1)} %)" for n, s in zip(e["exemplars"]["per_class"],
                                                    e["exemplars"]["per_class_share"])]
            for e in everything]
    blocks.append(("table", header, rows))
    with_predictions = next(r for r in records if has_predictions(r))
    _, labels = decode_predictions(with_predictions)
    images, index_map, note = exemplar_images(with_predictions, labels)
    blocks.append(("p", f"Exemplar grids: {note}."))
    if images is None:
        return blocks
    for f in report["families"]:
        found = f["exemplars"]
        shown = [(int(index_map[i]), int(labels[i]), s, d)
                 for i, s, d in zip(found["indices"], found["sparse_modal"], found["dense_modal"])
                 if index_map[i] >= 0][:GRID_IMAGES]
        if not shown:
            continue
        tag = re.sub(r"[^A-Za-z0-9]+", "_", f["name"]).strip("_")
        path = os.path.join(out_dir, f"exemplars_{tag}.png")
        title = (f"{f['name']}: {len(shown)} of {found['count']} exemplars "
                 "(true label, sparse modal, dense modal)")
        blocks.append(("img", figures.exemplar_grid(images, shown, names, path, title), title))
    return blocks


def _markdown(blocks, out_dir):
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            out.append("| " + " | ".join(block[1]) + " |\n|" + "---|" * len(block[1]) + "\n"
                       + "\n".join("| " + " | ".join(row) + " |" for row in block[2]))
        elif kind == "img":
            out.append(f"![{block[2]}]({os.path.relpath(block[1], out_dir)})")
    return "\n\n".join(out) + "\n"


def _inline(text):
    """Escape, then the two markdown marks the report uses: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html(blocks, title):
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            for para in block[1].split("\n\n"):
                if para.startswith("- "):
                    items = "".join(f"<li>{_inline(line[2:])}</li>" for line in para.split("\n"))
                    body.append(f"<ul>{items}</ul>")
                else:
                    body.append(f"<p>{_inline(para)}</p>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            with open(block[1], "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block[2])}" '
                        f'src="data:image/png;base64,{data}"></figure>')
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_report(report, out_dir, records) -> dict:
    """Write report.md, the PNGs, report.html and report.json into out_dir; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    title = f"Sparse training report: {report['model']} on {report['dataset']}"
    excluded = ""
    if report["without_predictions"]:
        excluded += (f" Excluded from the per-class and exemplar analyses (no per-example "
                     f"predictions): {len(report['without_predictions'])} records ("
                     + ", ".join(report["without_predictions"][:6])
                     + (", ..." if len(report["without_predictions"]) > 6 else "") + ").")
    if report["skipped"]:
        excluded += " Not run records, skipped: " + ", ".join(p for p, _ in report["skipped"]) + "."
    blocks = [("h1", title),
              ("p", f"From {len(report['records'])} run records ({len(report['cells'])} settings) "
                    f"evaluated on {report['evaluation_images']} {report['evaluated_on']} images "
                    f"of {report['data_origin']}. Reference: {report['reference'] or 'none (no dense runs)'}."
                    + excluded + " Every number here is recomputed from the records by "
                    "`sparsenet report`; report.json holds them all.")]
    blocks += _accuracy_blocks(report, out_dir)
    blocks += _cost_blocks(report, out_dir)
    blocks += _forgetting_blocks(report, out_dir)
    blocks += _exemplar_blocks(report, out_dir, records) if report["families"] else []
    paths = {"markdown": os.path.join(out_dir, "report.md"),
             "html": os.path.join(out_dir, "report.html"),
             "json": os.path.join(out_dir, "report.json")}
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(_markdown(blocks, out_dir))
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(_html(blocks, title))
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return paths
