"""Language-model training (`--model gpt:... --dataset shakespeare`) in fast mode: the record,
determinism, MoE statistics, sparse methods on a transformer, and the command line."""
import json
import math

import numpy as np
import pytest

from sparsenet import cli
from sparsenet.train import TrainConfig, run
from sparsenet.train_lm import evaluate_bpc, flops_per_token

TINY = dict(model="gpt:L1-D16-H2-T16", dataset="shakespeare", optimizer="adamw", lr=3e-3,
            batch_size=4, progress=False)


@pytest.fixture(scope="module")
def records():
    """Two identical tiny dense runs and one MoE run, fast mode (8 steps)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSENET_FAST", "1")
        dense = [run(TrainConfig(**TINY, steps=30), log=None) for _ in range(2)]
        moe = run(TrainConfig(**dict(TINY, model="gpt:L1-D16-H2-T16-E4-K2"), steps=30),
                  log=None)
    return dense, moe


def test_the_record(records):
    r = records[0][0]
    assert {"val_bpc", "test_bpc", "history", "train_loss", "steps", "seconds_per_step",
            "layers", "flops", "bytes", "hyperparameters", "versions"} <= set(r)
    assert r["steps"] == 8 and len(r["train_loss"]) == 8           # fast mode caps the steps
    assert 0 < r["val_bpc"] < math.log2(83) + 2 and np.isfinite(r["test_bpc"])
    assert r["history"][-1]["step"] == 8 and r["data"]["vocabulary"] == 83
    assert r["density"] == 1.0 and r["flops"]["training_relative"] == 1.0
    assert json.loads(json.dumps(r)) == r
    assert r["train_loss"][-1] < r["train_loss"][0]


def test_same_seed_same_run(records):
    first, second = records[0]
    assert first["train_loss"] == second["train_loss"] and first["val_bpc"] == second["val_bpc"]


def test_moe_runs_record_load_drops_and_losses_per_step(records):
    moe = records[1]["moe"]
    assert moe["layers"] == ["blocks.0.ffn"]
    per_step = moe["per_step"]
    assert {"load_max_mean", "dropped", "importance_loss", "load_loss"} <= set(per_step)
    assert all(len(v) == 8 for v in per_step.values())
    assert all(v >= 1 for v in per_step["load_max_mean"])
    assert moe["summary"]["dropped"]["mean"] == 0.0                  # dropless by default
    assert sum(moe["last_step_load"]["blocks.0.ffn"]) == 4 * 16 * 2   # tokens x k
    evaluation = moe["validation_load"]["blocks.0.ffn"]
    assert sum(evaluation["load"]) == 2 * (2048 // 16) * 16        # k x validation tokens
    assert evaluation["load_max_mean"] >= 1 and evaluation["batch_load_max_mean"] >= 1
    moe_layer = [layer for layer in records[1]["layers"] if layer["type"] == "MoE"]
    assert moe_layer and moe_layer[0]["nnz"] == 4 * 2 * 16 * 32 + 2 * 4 * 16


def test_rigl_and_sr_ste_train_a_transformer(fast_mode):
    rigl = run(TrainConfig(**TINY, method="rigl", sparsity=0.5,
                           method_options={"dense_layers": ["last"], "delta_t": 2}), log=None)
    assert rigl["method_details"]["n_updates"] > 0
    head = [layer for layer in rigl["layers"] if layer["name"] == "head"][0]
    assert head["density"] == 1.0 and rigl["density"] == pytest.approx(0.5, abs=0.01)
    sr_ste = run(TrainConfig(**TINY, method="sr_ste", method_options={"layers": "*ffn*"}),
                 log=None)
    ffn = [layer for layer in sr_ste["layers"] if "ffn" in layer["name"]]
    assert [layer["format"] for layer in ffn] == ["nm", "nm"]
    assert all(layer["density"] == 0.5 for layer in ffn)
    assert sr_ste["flops"]["inference_relative"] < 1


def test_evaluation_and_flops_helpers():
    from sparsenet.nn import build_model
    model = build_model("gpt:L1-D8-H2-T4", num_classes=5)
    tokens = np.arange(41, dtype=np.uint8) % 5
    assert evaluate_bpc(model, tokens, 4) > 0
    sparse, dense = flops_per_token(model)
    assert sparse == dense == 2 * (8 * 24 + 8 * 8 + 8 * 32 + 32 * 8 + 8 * 5)


@pytest.mark.parametrize("config, words", [
    (dict(model="gpt:L1-D16-H2-T16"), "train it with --dataset shakespeare"),
    (dict(dataset="shakespeare"), "needs a 'gpt:...' model"),
    (dict(TINY, steps=-1), "steps must be an integer >= 0"),
    (dict(TINY, method="lottery", sparsity=0.5), "several phases"),
    (dict(TINY, device="cuda"), "train on the CPU"),
])
def test_bad_configurations_are_clear_errors(fast_mode, config, words):
    with pytest.raises(ValueError, match=words):
        run(TrainConfig(**{"progress": False, **config}), log=None)


def test_cli_trains_a_language_model_and_writes_its_record(fast_mode, tmp_path, capsys):
    path = tmp_path / "lm.json"
    argv = ["train", "--model", "gpt:L1-D16-H2-T16-E4-K1-switch", "--dataset", "shakespeare",
            "--optimizer", "adamw", "--lr", "0.003", "--steps", "5", "--batch-size", "4",
            "--no-progress", "--json", str(path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "bits/char" in out and path.exists()
    record = json.loads(path.read_text())
    assert "switch_loss" in record["moe"]["per_step"]


@pytest.mark.parametrize("argv, words", [
    (["--model", "gpt:L1-D16-H2-T16-E2-K3"], "larger than the number of experts"),
    (["--model", "gpt:L1-D16-H2-T16-E2-K1-C-1"], "cannot read 'C'"),
    (["--model", "gpt:L1-D16-H2-T16-E2-K1-C0"], "capacity_factor must be a number > 0"),
    (["--model", "gpt:L1-D16-H3-T16"], "multiple of the heads"),
])
def test_cli_bad_language_models_exit_2(fast_mode, capsys, argv, words):
    assert cli.main(["train", "--dataset", "shakespeare", "--no-progress"] + argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_compare_refuses_language_models_with_one_line(capsys):
    assert cli.main(["compare", "--methods", "rigl", "--dataset", "shakespeare",
                     "--model", "gpt:L1-D16-H2-T16"]) == 2
    assert "image classifiers" in capsys.readouterr().err


def test_max_steps_stops_early_on_the_whole_runs_schedule_with_the_thread_policy(fast_mode):
    r = run(TrainConfig(**TINY, steps=8, max_steps=3, threads=1), log=None)
    assert r["steps"] == 3 and r["planned_steps"] == 8 and r["stopped_early"]
    assert len(r["train_loss"]) == 3 and r["history"][-1]["step"] == 3
    assert r["threads"]["threads"] == 1 and r["threads"]["owner"] in ("numba", "blas")
    whole = run(TrainConfig(**TINY, steps=8, threads=1), log=None)
    assert not whole["stopped_early"] and whole["train_loss"][:3] == r["train_loss"]


def test_a_language_model_run_refuses_checkpoints_with_one_line(fast_mode, capsys, tmp_path):
    assert cli.main(["train", "--dataset", "shakespeare", "--model", "gpt:L1-D16-H2-T16",
                     "--no-progress", "--checkpoint", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    assert "cannot be checkpointed" in err and "Traceback" not in err
