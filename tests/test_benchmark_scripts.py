"""The pure parts of the benchmark scripts: record names, the validation table's choice."""
import json
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import common  # noqa: E402
import tune  # noqa: E402


def test_run_names_spell_every_setting_in_a_fixed_order():
    assert common.run_name("rigl", 0.98, {"lr": 0.1, "alpha": 0.5}, 2) == "rigl-0.98-alpha0.5-lr0.1-s2"
    assert common.run_name("dense", 0.0, {}, 0) == "dense-0-s0"


def test_settings_split_into_config_fields_and_method_options():
    assert common.split_settings({"lr": 0.1, "alpha": 0.5, "epochs": 3}) == \
        ({"lr": 0.1, "epochs": 3}, {"alpha": 0.5})


def test_product_gives_every_combination():
    grid = tune.product(lr=[0.05, 0.1], sparse_init=[False, True])
    assert len(grid) == 4 and {"lr": 0.1, "sparse_init": True} in grid


def test_the_table_marks_the_best_mean_validation_accuracy(tmp_path):
    grid = {("rigl", 0.9): tune.product(lr=[0.05, 0.1])}
    accuracies = {0.05: [0.90, 0.88], 0.1: [0.895, 0.895]}        # means 89.0 and 89.5
    for lr, accs in accuracies.items():
        for seed, acc in enumerate(accs):
            path = tmp_path / (common.run_name("rigl", 0.9, {"lr": lr}, seed) + ".json")
            path.write_text(json.dumps({"val_accuracy": acc}))
    text, best = tune.table(grid, str(tmp_path), seeds=2)
    assert best == {("rigl", 0.9): {"lr": 0.1}}
    assert "| rigl | 0.9 | lr=0.1 | 89.50 | 2 | **best** |" in text
    assert "| rigl | 0.9 | lr=0.05 | 89.00 | 2 |  |" in text


def test_a_validation_setting_only_holds_known_keys():
    # every setting of every grid is a TrainConfig field or a method option the method accepts
    from sparsenet.algorithms import get_method
    for grid in tune.GRIDS.values():
        for (method, sparsity), settings in grid.items():
            for setting in settings:
                _, options = common.split_settings(setting)
                if method != "dense":
                    get_method(method, sparsity=sparsity, **options)   # raises on a typo


@pytest.mark.parametrize("suite", ["pruning", "dst", "tuned", "conv", "nm"])
def test_accuracy_suites_name_known_methods_and_options(suite):
    import accuracy
    from sparsenet.algorithms import get_method
    for method, sparsity, settings in accuracy.SUITES[suite]:
        _, options = common.split_settings(settings)
        if method != "dense":
            get_method(method, sparsity=sparsity, **options)


def test_the_full_epoch_table_shows_both_networks_measured():
    import scale

    def record(width, acc, seconds):
        return {"history": [{"seconds": seconds, "steps": 469, "partial": False}],
                "parameters": 3 * width, "build_seconds": 0.5, "peak_rss_bytes": 2**31,
                "method_details": {"n_updates": 3}, "test_accuracy": acc}
    out = {"width": 333334, "record": record(333334, 0.81, 2400.0),
           "reference_width": 1000, "reference_record": record(1000, 0.78, 3.2)}
    lines = scale.epoch_table(out).splitlines()
    assert lines[2] == "| 3,000 | 3,000 | 0.5 | 3 | 2.00 GiB | 3 | 78.00 % |"
    assert lines[3] == "| 1,000,002 | 1,000,002 | 0.5 | 2400 | 2.00 GiB | 3 | 81.00 % |"
    out["record"] = {"error": "out of memory"}
    assert "failed: out of memory" in scale.epoch_table(out)
