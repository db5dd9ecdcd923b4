"""Per-example predictions in records, and `sparsenet report` (issue 14): the report's numbers
are recomputed here from the records by plain loops and must be equal; bad input is one line."""
import base64
import json
from pathlib import Path

import numpy as np
import pytest

from sparsenet import cli
from sparsenet.predictions import decode_predictions, encode_predictions, has_predictions
from sparsenet.report import ReportError, analyse, build_report
from sparsenet.report.stats import exemplars, modal_classes, per_class_change

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results" / "accuracy" / "claims-lenet300"
CLASSES, IMAGES = 10, 300


# ---- predictions in records -------------------------------------------------------------

def test_predictions_round_trip_one_byte_per_image():
    rng = np.random.default_rng(0)
    predicted, labels = rng.integers(0, 10, 1234), rng.integers(0, 10, 1234)
    field = encode_predictions(predicted, labels, 10)
    assert len(base64.b64decode(field["predicted"])) == 1234 == field["count"]
    record = {"predictions": json.loads(json.dumps(field))}      # through JSON, as on disk
    got_predicted, got_labels = decode_predictions(record)
    assert got_predicted.dtype == np.uint8
    np.testing.assert_array_equal(got_predicted, predicted)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("change, words", [
    (lambda f: f.update(predicted="not base64!"), "predictions.predicted is not valid base64"),
    (lambda f: f.update(count=5), "holds 6 bytes, expected count=5"),
    (lambda f: f.update(classes=2), "expected < classes=2"),
    (lambda f: f.update(encoding="pickle"), "predictions.encoding must be"),
    (lambda f: f.update(count=True), "predictions.count must be"),
    (lambda f: f.update(labels=7), "predictions.labels must be a base64 string"),
])
def test_malformed_predictions_are_refused_by_name(change, words):
    field = encode_predictions([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], 6)
    change(field)
    with pytest.raises(ValueError, match=words):
        decode_predictions({"predictions": field})


def test_encode_refuses_bad_classes_and_lengths_and_skips_wide_outputs():
    with pytest.raises(ValueError, match="class indices in \\[0, 3\\)"):
        encode_predictions([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="one length"):
        encode_predictions([0, 1], [0], 3)
    assert encode_predictions([0, 1], [1, 0], 300)["encoding"] == "none"
    with pytest.raises(ValueError, match="no predictions field"):
        decode_predictions({"method": "dense"})


def test_a_train_run_records_its_predictions(fast_mode, tmp_path, capsys):
    path = tmp_path / "r.json"
    assert cli.main(["train", "--data", "subset", "--no-progress", "--model", "mlp:784-16-10",
                     "--epochs", "1", "--batch-size", "250", "--method", "static",
                     "--sparsity", "0.9", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    predicted, labels = decode_predictions(record)
    assert len(predicted) == record["data"]["test"]
    assert (predicted == labels).mean() == pytest.approx(record["test_accuracy"])
    for c, accuracy in enumerate(record["per_class_accuracy"]):
        assert (predicted[labels == c] == c).mean() == pytest.approx(accuracy)


# ---- statistics -------------------------------------------------------------------------

def test_modal_ties_never_make_an_exemplar_alone():
    labels = np.array([0, 0, 0])
    dense = np.array([[0, 1, 2], [1, 1, 2]])        # image 0: dense votes tie between 0 and 1
    sparse = np.array([[1, 2, 2], [1, 2, 2]])
    modal = modal_classes(dense, 3)
    assert modal[0].tolist() == [True, True, False]
    found = exemplars(sparse, dense, labels, 3)
    assert found["indices"] == [1]                  # 0: sparse's 1 is among dense's winners
    assert found["share"] == pytest.approx(1 / 3)


def test_per_class_intervals_cover_the_change_and_are_reproducible():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 200)
    dense = rng.random((2, 600)) < 0.9
    sparse = dense.copy()
    sparse[:, :200] &= rng.random((2, 200)) < 0.7        # class 0 loses about 27 points
    rows = per_class_change(sparse, dense, labels, 3, samples=300)
    assert rows == per_class_change(sparse, dense, labels, 3, samples=300)
    for r in rows:
        assert r["low"] <= r["delta"] <= r["high"]
    assert rows[0]["hurt"] and rows[0]["high"] < -0.15
    # unchanged classes: no change, an interval around zero (the runs are resampled on each
    # side independently, so it has a width even here), nothing flagged
    assert rows[1]["delta"] == 0 and rows[1]["low"] < 0 < rows[1]["high"]
    assert not rows[1]["hurt"] and not rows[2]["hurt"]
    one_run = per_class_change(sparse[:1], sparse[:1], labels, 3, samples=300)
    assert one_run[0]["low"] == 0 == one_run[0]["high"]      # same run, same images: exactly 0


# ---- the report from records ------------------------------------------------------------

def fake_record(method, sparsity, seed, predicted, labels, model="lenet300", **extra):
    accuracy = float((predicted == labels).mean())
    per_class = [float((predicted[labels == c] == c).mean()) for c in range(CLASSES)]
    record = {"method": method, "model": model, "sparsity": sparsity, "density": 1 - sparsity,
              "target_sparsity": sparsity, "test_accuracy": accuracy, "evaluated_on": "test",
              "per_class_accuracy": per_class, "seed": seed,
              "flops": {"training_relative": 1 - sparsity, "inference_relative": 1 - sparsity,
                        "inference_per_sample": 1000 * (1 - sparsity)},
              "bytes": {"weights": 400 * (1 - sparsity) + seed, "total": 1200 * (1 - sparsity)},
              "data": {"origin": "nowhere", "train": 10, "test": len(labels)},
              "hyperparameters": {"dataset": "fashion-mnist", "epochs": 20, "method_options": {}},
              "predictions": encode_predictions(predicted, labels, CLASSES)}
    record.update(extra)
    return record


def write_runs(folder, cells, seeds=2, seed=0, **extra):
    """Records of `cells` [(method, sparsity, accuracy)] over `seeds`, in `folder`."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), IMAGES // CLASSES)
    folder.mkdir(parents=True, exist_ok=True)
    for method, sparsity, accuracy in cells:
        for s in range(seeds):
            right = rng.random(IMAGES) < accuracy
            wrong = (labels + rng.integers(1, CLASSES, IMAGES)) % CLASSES
            predicted = np.where(right, labels, wrong)
            record = fake_record(method, sparsity, s, predicted, labels, **extra)
            (folder / f"{method}-{sparsity}-s{s}.json").write_text(json.dumps(record))
    return labels


def recompute(folder):
    """The report's numbers by plain loops over the records on disk."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    out = {}
    for r in records:
        out.setdefault((r["method"], r["target_sparsity"]), []).append(r)
    return out


def check_against_records(report, folder):
    cells = recompute(folder)
    dense = cells[("dense", 0.0)]
    dense_pred = [decode_predictions(r)[0].astype(int) for r in dense]
    labels = decode_predictions(dense[0])[1].astype(int)
    for cell in report["cells"]:
        runs = cells[(cell["method"], cell["sparsity"])]
        accuracies = [r["test_accuracy"] for r in runs]
        mean = sum(accuracies) / len(accuracies)
        assert cell["accuracy"]["mean"] == pytest.approx(mean, abs=1e-12)
        assert cell["accuracy"]["min"] == min(accuracies)
        if len(accuracies) > 1:
            std = (sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)) ** 0.5
            assert cell["accuracy"]["std"] == pytest.approx(std, abs=1e-12)
        weights = [r["bytes"]["weights"] for r in runs]
        assert cell["costs"]["weight bytes"] == pytest.approx(sum(weights) / len(weights))
    for comp in report["comparisons"]:
        method, sparsity = next((c["method"], c["sparsity"]) for c in report["cells"]
                                if c["name"] == comp["name"])
        sparse_pred = [decode_predictions(r)[0].astype(int) for r in cells[(method, sparsity)]]
        for row in comp["per_class"]:
            idx = [i for i in range(len(labels)) if labels[i] == row["class"]]

            def mean_acc(preds):
                return sum(sum(p[i] == labels[i] for i in idx) / len(idx)
                           for p in preds) / len(preds)
            assert row["delta"] == pytest.approx(mean_acc(sparse_pred) - mean_acc(dense_pred),
                                                 abs=1e-12)
            assert row["low"] <= row["delta"] <= row["high"]
            assert row["hurt"] == (row["high"] < 0)
        found = []
        for i in range(len(labels)):
            def winners(preds):
                votes = [sum(p[i] == c for p in preds) for c in range(CLASSES)]
                return {c for c in range(CLASSES) if votes[c] == max(votes)}
            if not winners(sparse_pred) & winners(dense_pred):
                found.append(i)
        assert comp["exemplars"]["indices"] == found
        assert comp["exemplars"]["share"] == pytest.approx(len(found) / len(labels))


def test_report_numbers_equal_the_records(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs, [("dense", 0.0, 0.9), ("rigl", 0.9, 0.85), ("gmp", 0.9, 0.88),
                      ("snip", 0.98, 0.6)])
    paths = build_report([str(runs)], str(tmp_path / "out"), samples=200)
    report = json.loads(Path(paths["json"]).read_text())
    check_against_records(report, runs)
    assert {f["name"] for f in report["families"]} == {
        "pruning @ 90 %", "dynamic sparse training @ 90 %", "pruning at initialization @ 98 %"}
    markdown = Path(paths["markdown"]).read_text()
    snip = next(c for c in report["cells"] if c["method"] == "snip")
    assert f"{100 * snip['accuracy']['mean']:.2f}" in markdown
    assert "**hurt**" in markdown                        # snip at 60 % loses everywhere
    for png in Path(paths["markdown"]).parent.glob("*.png"):
        assert png.name in markdown
    page = Path(paths["html"]).read_text()
    assert "src=\"data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("<img") == markdown.count("![")


def test_the_report_of_the_committed_records_equals_them(tmp_path):
    if not COMMITTED.is_dir():
        pytest.skip(f"{COMMITTED} is not committed yet")
    paths = build_report([str(COMMITTED)], str(tmp_path / "out"), samples=100)
    report = json.loads(Path(paths["json"]).read_text())
    assert not report["without_predictions"]
    records = [json.loads(p.read_text()) for p in COMMITTED.glob("*.json")]
    assert len(report["records"]) == len(records)
    by_name = {c["name"]: c for c in report["cells"]}
    for cell in report["cells"]:
        runs = [r for r in records if r["method"] == cell["method"]
                and r["target_sparsity"] == cell["sparsity"]
                and r["hyperparameters"]["epochs"] == (20 if "epochs" not in cell["label"]
                                                       else int(cell["label"].split("=")[1][:-1]))]
        assert cell["accuracy"]["mean"] == pytest.approx(
            sum(r["test_accuracy"] for r in runs) / len(runs), abs=1e-12)
    for comp in report["comparisons"]:
        cell = by_name[comp["name"]]
        epochs = 20 if "epochs" not in cell["label"] else int(cell["label"].split("=")[1][:-1])
        runs = [r for r in records if r["method"] == cell["method"]
                and r["target_sparsity"] == cell["sparsity"]
                and r["hyperparameters"]["epochs"] == epochs]
        for row in comp["per_class"]:             # the record's own per-class accuracies
            dense = [r for r in records if r["method"] == "dense"]
            expected = (np.mean([r["per_class_accuracy"][row["class"]] for r in runs])
                        - np.mean([r["per_class_accuracy"][row["class"]] for r in dense]))
            assert row["delta"] == pytest.approx(expected, abs=1e-12)
    assert "src=\"data:image/png;base64," in Path(paths["html"]).read_text()


# ---- bad input --------------------------------------------------------------------------

def report_cli(capsys, *argv):
    code = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsenet report: error: "), err
    assert words in lines[0], lines[0]


def test_an_empty_folder_and_a_missing_path_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line_error(*report_cli(capsys, tmp_path / "empty", "--out", tmp_path / "o")[::2],
                   "holds no run records")
    one_line_error(*report_cli(capsys, tmp_path / "nope", "--out", tmp_path / "o")[::2],
                   "does not exist")
    (tmp_path / "junk.json").write_text("{not json")
    one_line_error(*report_cli(capsys, tmp_path / "junk.json", "--out", tmp_path / "o")[::2],
                   "is not a readable JSON file")


@pytest.mark.parametrize("extra, words", [
    ({"model": "lenet5"}, "2 different models"),
    ({"hyperparameters": {"dataset": "mnist", "method_options": {}}}, "different data sets"),
    ({"per_class_accuracy": [0.5] * 3}, "different class counts"),
    ({"evaluated_on": "validation: 500 held-out training images"}, "different evaluation sets"),
])
def test_mixed_records_are_refused(tmp_path, capsys, extra, words):
    write_runs(tmp_path / "a", [("dense", 0.0, 0.9)])
    write_runs(tmp_path / "b", [("rigl", 0.9, 0.8)], **extra)
    one_line_error(*report_cli(capsys, tmp_path / "a", tmp_path / "b", "--out",
                               tmp_path / "o")[::2], words)


def test_other_evaluation_images_are_refused(tmp_path, capsys):
    write_runs(tmp_path / "a", [("dense", 0.0, 0.9)])
    write_runs(tmp_path / "b", [("rigl", 0.9, 0.8)])
    record = json.loads((tmp_path / "b" / "rigl-0.9-s0.json").read_text())
    labels = np.roll(decode_predictions(record)[1], 1)
    record["predictions"] = encode_predictions(decode_predictions(record)[0], labels, CLASSES)
    (tmp_path / "b" / "rigl-0.9-s0.json").write_text(json.dumps(record))
    one_line_error(*report_cli(capsys, tmp_path / "a", tmp_path / "b", "--out",
                               tmp_path / "o")[::2], "different sets of evaluation images")


def test_records_without_predictions_are_excluded_and_said_so(tmp_path, capsys):
    write_runs(tmp_path / "runs", [("dense", 0.0, 0.9), ("rigl", 0.9, 0.8)])
    old = json.loads((tmp_path / "runs" / "rigl-0.9-s1.json").read_text())
    del old["predictions"]
    (tmp_path / "runs" / "rigl-0.9-s1.json").write_text(json.dumps(old))
    (tmp_path / "runs" / "table.json").write_text(json.dumps({"benchmark": "kernels"}))
    code, out, err = report_cli(capsys, tmp_path / "runs", "--out", tmp_path / "o")
    assert code == 0, err
    markdown = (tmp_path / "o" / "report.md").read_text()
    assert "no per-example predictions): 1 records" in markdown and "rigl-0.9-s1.json" in markdown
    assert "Not run records, skipped:" in markdown and "table.json" in markdown
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    rigl = next(c for c in report["cells"] if c["method"] == "rigl")
    assert rigl["accuracy"]["runs"] == 2 and rigl["runs_with_predictions"] == 1
    assert report["comparisons"][0]["runs"] == 1
    assert "report.html" in out


def test_two_dense_settings_need_a_reference(tmp_path, capsys):
    write_runs(tmp_path / "runs", [("dense", 0.0, 0.9), ("rigl", 0.9, 0.8)])
    record = json.loads((tmp_path / "runs" / "dense-0.0-s0.json").read_text())
    record["hyperparameters"]["weight_decay"] = 5e-4
    (tmp_path / "runs" / "dense-0.0-s0.json").write_text(json.dumps(record))
    one_line_error(*report_cli(capsys, tmp_path / "runs", "--out", tmp_path / "o")[::2],
                   "choose the reference with --reference")
    code, _, err = report_cli(capsys, tmp_path / "runs", "--out", tmp_path / "o",
                              "--reference", "dense[weight_decay=0.0005]")
    assert code == 0, err
    one_line_error(*report_cli(capsys, tmp_path / "runs", "--out", tmp_path / "o",
                               "--reference", "nothing")[::2], "names no cell")


def test_report_without_dense_runs_still_tabulates(tmp_path):
    write_runs(tmp_path / "runs", [("rigl", 0.9, 0.8)], seeds=1)
    report, _ = analyse([str(tmp_path / "runs")], samples=100)
    assert report["reference"] is None and report["comparisons"] == []
    assert report["cells"][0]["accuracy"]["std"] == 0.0
    with pytest.raises(ReportError, match="none of the 1 JSON files"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "a.json").write_text("[]")
        analyse([str(tmp_path / "x")])


def test_has_predictions_is_false_for_other_shapes():
    assert not has_predictions({"predictions": "abc"}) and not has_predictions([])
    assert not has_predictions({"predictions": {"encoding": "none", "reason": "wide"}})


def test_the_bundled_subset_maps_back_to_the_full_test_set():
    from sparsenet.data import load_dataset
    from sparsenet.report.images import _subset_test_indices, exemplar_images
    try:
        full = load_dataset("fashion-mnist", "full")
    except (ValueError, OSError):
        pytest.skip("the full Fashion-MNIST is not installed")
    subset = load_dataset("fashion-mnist", "subset")
    indices = _subset_test_indices(full.test_labels, 10)
    np.testing.assert_array_equal(full.test_images[indices], subset.test_images)
    record = {"data": {"origin": "/nowhere/fashion-mnist"}, "evaluated_on": "test"}
    images, index_map, note = exemplar_images(record, full.test_labels)
    assert "bundled subset" in note and (index_map >= 0).sum() == 1000
    i = indices[7]
    np.testing.assert_array_equal(images[index_map[i]], full.test_images[i].reshape(28, 28))


def test_a_failed_report_makes_no_folder_and_a_file_is_no_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    report_cli(capsys, tmp_path / "empty", "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    write_runs(tmp_path / "runs", [("dense", 0.0, 0.9)])
    (tmp_path / "file").write_text("x")
    one_line_error(*report_cli(capsys, tmp_path / "runs", "--out", tmp_path / "file")[::2],
                   "is a file, not a folder")
    one_line_error(*report_cli(capsys, tmp_path / "runs", "--out", tmp_path / "o2",
                               "--samples", "5")[::2], "--samples must be at least 100")
