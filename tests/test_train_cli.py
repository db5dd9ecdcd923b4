"""The training loop and the command line, in fast mode on the bundled subset."""
import json

import numpy as np
import pytest

from sparsenet import cli
from sparsenet.train import TrainConfig, fast_mode, run

RECORD_KEYS = {"method", "model", "sparsity", "density", "test_accuracy", "epochs", "seed",
               "train_seconds", "history", "layers", "versions"}


@pytest.fixture(scope="module")
def two_epoch_records():
    """Two identical 2-epoch runs (seed 0) in fast mode: shared by the record tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSENET_FAST", "1")
        config = dict(epochs=2, data="subset", progress=False, seed=0)
        return run(TrainConfig(**config), log=None), run(TrainConfig(**config), log=None)


def test_fast_mode_follows_the_environment(monkeypatch):
    monkeypatch.setenv("SPARSENET_FAST", "0")
    assert not fast_mode()
    monkeypatch.setenv("SPARSENET_FAST", "1")
    assert fast_mode()


def test_record_fields(two_epoch_records):
    record = two_epoch_records[0]
    assert RECORD_KEYS <= set(record)
    assert (record["method"], record["model"], record["epochs"], record["seed"]) == \
        ("dense", "lenet300", 2, 0)
    assert 0.0 <= record["test_accuracy"] <= 1.0
    assert record["density"] == 1.0 and record["sparsity"] == 0.0
    assert record["train_seconds"] > 0
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for h in record["history"]:
        assert np.isfinite(h["loss"]) and 0.0 <= h["test_accuracy"] <= 1.0
    assert [(layer["name"], layer["shape"]) for layer in record["layers"]] == \
        [("1", [300, 784]), ("3", [100, 300]), ("5", [10, 100])]
    for layer in record["layers"]:
        assert layer["density"] == 1.0 and layer["format"] == "dense"
    assert {"sparsenet", "python", "numpy"} <= set(record["versions"])
    assert record["data"]["fast_mode"] is True


def test_record_is_json_serializable(two_epoch_records):
    record = two_epoch_records[0]
    assert json.loads(json.dumps(record)) == record


def test_same_seed_gives_the_same_run(two_epoch_records):
    first, second = two_epoch_records
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    assert first["test_accuracy"] == second["test_accuracy"]


def test_training_reduces_the_loss(two_epoch_records):
    # deterministic (seed 0); the second epoch's mean loss is far below the first's
    losses = [h["loss"] for h in two_epoch_records[0]["history"]]
    assert losses[1] < 0.9 * losses[0]
    assert two_epoch_records[0]["test_accuracy"] > 0.3       # well above chance (0.1)


def test_one_epoch_run_and_another_seed(fast_mode):
    record = run(TrainConfig(epochs=1, data="subset", progress=False, seed=1), log=None)
    assert record["epochs"] == 1 and record["seed"] == 1 and len(record["history"]) == 1


def test_fast_mode_caps_epochs_at_two(fast_mode):
    record = run(TrainConfig(epochs=5, data="subset", progress=False, lr=0.05,
                             optimizer="adam", schedule="constant"), log=None)
    assert record["epochs"] == 2 and record["data"]["train"] == 1000


@pytest.mark.parametrize("bad, words", [
    (dict(epochs=0), "epochs"), (dict(sparsity=1.5), "sparsity"), (dict(lr=-1.0), "lr"),
    (dict(batch_size=0), "batch_size"), (dict(optimizer="rmsprop"), "optimizer"),
    (dict(schedule="linear"), "schedule"),
])
def test_bad_config_raises_before_any_work(bad, words):
    with pytest.raises(ValueError, match=words):
        run(TrainConfig(data="/nonexistent", progress=False, **bad), log=None)


# ----- the command line --------------------------------------------------------------------
def main(argv):
    """cli.main's exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as e:            # as the interpreter would exit: a message means status 1
        return e.code if isinstance(e.code, int) or e.code is None else 1


def test_cli_train_writes_the_record(fast_mode, tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["train", "--epochs", "1", "--data", "subset", "--json", str(path),
                 "--no-progress"]) == 0
    record = json.loads(path.read_text())
    assert RECORD_KEYS <= set(record) and record["epochs"] == 1
    assert "test accuracy" in capsys.readouterr().out


def test_cli_train_saves_a_loadable_model(fast_mode, tmp_path):
    import sparsenet as sn
    path = tmp_path / "m.safetensors"
    assert main(["train", "--epochs", "1", "--data", "subset", "--no-progress",
                 "--model", "mlp:784-32-10", "--save", str(path)]) == 0
    assert sn.load(path).spec == "mlp:784-32-10"


def test_cli_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "sparsenet" in out and "dense" in out


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "-1"], "epochs"),
    (["--sparsity", "1.5"], "sparsity"),
    (["--model", "resnet9"], "unknown model"),
    (["--method", "nosuchmethod"], "unknown method"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--epochs", "two"], "invalid int"),
    pytest.param(["--opt", "novalue"], "key=value"),
])
def test_cli_bad_arguments_exit_2(fast_mode, capsys, argv, words):
    code = main(["train", "--data", "subset", "--no-progress", "--epochs", "1"] + argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err and "error" in err


def test_cli_needs_a_command(capsys):
    assert main([]) == 2
    assert "command" in capsys.readouterr().err


# ----- the validation split (choosing hyperparameters without the test set) -----------------
def test_validation_split_holds_out_training_images_and_drops_the_test_set():
    from sparsenet.train import split_validation
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    y = np.arange(100) % 10
    test_x, test_y = np.full((7, 1), -1.0, np.float32), np.zeros(7, np.int64)
    x_tr, y_tr, x_val, y_val, origin = split_validation((x, y, test_x, test_y, "here"), 30)
    assert len(y_tr) == 70 and len(y_val) == 30
    seen = np.concatenate([x_tr[:, 0], x_val[:, 0]])
    assert sorted(seen) == list(range(100))                 # disjoint, nothing lost
    assert -1.0 not in seen and "30 training images held out" in origin
    again = split_validation((x, y, test_x, test_y, "here"), 30)
    assert np.array_equal(again[2], x_val)                  # the same images every time


@pytest.mark.parametrize("val", [-1, 1.5, True, 1000, 5000])
def test_bad_validation_sizes_are_refused(fast_mode, val):
    with pytest.raises(ValueError, match="val"):
        run(TrainConfig(data="subset", progress=False, epochs=1, val=val), log=None)


def test_a_validation_run_records_val_accuracy_and_no_test_accuracy(fast_mode, capsys):
    record = run(TrainConfig(data="subset", progress=False, epochs=1, val=200), log=None)
    assert "test_accuracy" not in record and 0 <= record["val_accuracy"] <= 1
    assert record["evaluated_on"].startswith("validation: 200")
    assert record["data"]["train"] == 800 and record["hyperparameters"]["val"] == 200
    assert main(["train", "--epochs", "1", "--data", "subset", "--val", "200",
                 "--no-progress"]) == 0
    assert "validation accuracy" in capsys.readouterr().out


# ----- resuming a schedule (lottery-ticket rewinding) ---------------------------------------
def test_train_phase_resumes_the_schedule_at_start_step(fast_mode):
    from sparsenet.algorithms.base import Method
    from sparsenet.nn import build_model
    from sparsenet.train import load_arrays, train_phase
    data = load_arrays("subset")                             # 1000 images: 8 steps per epoch
    config = TrainConfig(model="mlp:784-16-10", data="subset", progress=False, lr=0.1)
    steps, lrs = [], []

    class Count(Method):
        def after_step(self, step):
            steps.append(step)
            lrs.append(self.optimizer.param_groups[0]["lr"])

    model = build_model("mlp:784-16-10")
    train_phase(model, Count(), config, data, epochs=2, log=None, start_step=5)
    assert len(steps) == 16 - 5                              # only the steps left are trained
    # the lr of the first trained step is the cosine schedule's at step 5 of 16, not step 0
    assert lrs[0] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 5 / 16)))
    with pytest.raises(ValueError, match="start_step"):
        train_phase(model, Count(), config, data, epochs=2, log=None, start_step=16)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverging_run_stops_with_a_clear_error(fast_mode, capsys):
    with pytest.raises(FloatingPointError, match=r"diverged.*lower the learning rate"):
        run(TrainConfig(model="mlp:784-16-10", data="subset", progress=False, epochs=2,
                        lr=1e6, momentum=0.9), log=None)
    assert main(["train", "--model", "mlp:784-16-10", "--data", "subset", "--epochs", "2",
                 "--lr", "1e6", "--no-progress"]) == 2
    assert "diverged" in capsys.readouterr().err
