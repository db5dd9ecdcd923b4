"""Careless and hostile use of the command line and the training API (issue 11, parts E and F).

Every reproducer of the issue is here: an error is one line naming the argument and exit 2
(never a traceback), a conflict is refused, and what would have been a silent surprise for a
newcomer is a clear error, a warning with the numbers, or the right behaviour.
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import sparsenet as sn
from sparsenet import cli
from sparsenet.algorithms import get_method
from sparsenet.algorithms.base import available, method_class
from sparsenet.algorithms.options import method_options, option_help_table
from sparsenet.data import BatchLoader
from sparsenet.nn import build_model
from sparsenet.nn.functional import cross_entropy
from sparsenet.optim import SGD
from sparsenet.sparse import CSR, Masked, sparsify
from sparsenet.train import (Arrays, TrainConfig, load_arrays, make_method, num_classes_of, run,
                             train_model)

SMALL = ["--model", "mlp:784-16-10", "--epochs", "1", "--data", "subset"]


def main(argv, capsys):
    """(exit status, stdout, stderr) of the command, as the interpreter would exit."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err, command="train"):
    """The stderr of a refused command: no traceback, exactly one error line."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"sparsenet {command}: error: "), err
    return errors[0]


# ----- E: user and environment errors are one line and exit 2 ------------------------------------
def test_device_cuda_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr("sparsenet.backend.cuda_available", lambda: False)
    code, _, err = main(["train", "--device", "cuda"] + SMALL, capsys)
    assert code == 2 and "--device cuda" in one_error_line(err)


def test_data_download_offline_leaves_no_folder(tmp_path, capsys, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    dest = tmp_path / "cache" / "sparsenet" / "fashion-mnist"
    code, _, err = main(["data", "download", "--dest", str(dest), "--base-url",
                         "http://127.0.0.1:9/", "--timeout", "2"], capsys)  # port 9: refused
    assert code == 2 and "could not fetch" in one_error_line(err, "data download")
    assert not (tmp_path / "cache").exists()            # no empty cache folder left behind


def test_downloads_default_to_https():
    from sparsenet.data.download import DEFAULT_BASE_URLS
    assert all(url.startswith("https://") for url in DEFAULT_BASE_URLS.values())


def test_data_download_mnist_has_no_hashes(tmp_path, capsys):
    code, _, err = main(["data", "download", "--dataset", "mnist", "--dest",
                         str(tmp_path / "m")], capsys)
    line = one_error_line(err, "data download")
    assert code == 2 and "--dataset mnist" in line and "SHA-256" in line
    assert not (tmp_path / "m").exists()


def test_a_data_set_that_is_nowhere_is_one_line(tmp_path, monkeypatch, capsys):
    from sparsenet.data import datasets
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SPARSENET_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "none")
    code, _, err = main(["train", "--dataset", "mnist", "--epochs", "1"], capsys)
    line = one_error_line(err)
    assert code == 2 and "mnist not found" in line and "looked in" in line


def test_an_unknown_benchmark_is_one_line(capsys):
    code, _, err = main(["bench", "nosuch"], capsys)
    assert code == 2 and "no benchmark script 'nosuch'" in one_error_line(err, "bench")


def test_compare_out_is_an_existing_file(tmp_path, capsys):
    out = tmp_path / "table.md"
    out.write_text("keep me")
    code, _, err = main(["compare", "--methods", "static", "--out", str(out)] + SMALL, capsys)
    assert code == 2 and "is a file" in one_error_line(err, "compare")
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("error", ["safetensors", "oserror"])
def test_safetensor_and_os_errors_are_one_line(monkeypatch, capsys, error):
    from safetensors import SafetensorError

    def fail(args):
        if error == "safetensors":
            raise SafetensorError("Error while deserializing header: HeaderTooLarge")
        raise PermissionError(13, "Permission denied", "/root/model.safetensors")
    monkeypatch.setattr(cli, "cmd_train", fail)
    code, _, err = main(["train"], capsys)
    line = one_error_line(err)
    assert code == 2 and ("HeaderTooLarge" in line or "Permission denied" in line)


@pytest.mark.parametrize("argv, words", [
    (["--method", "rigl", "--sparsity", "0.9", "--opt", "alhpa=0.3"], "did you mean 'alpha'"),
    (["--method", "set", "--sparsity", "0.9", "--opt", "alhpa=0.3"], "did you mean 'zeta'"),
    (["--method", "rigl", "--sparsity", "0.9", "--opt", "foo=1"], "its options are sparsity, alpha"),
    (["--method", "dense", "--opt", "foo=1"], "'dense' takes no options"),
    (["--method", "dense", "--sparsity", "0.9"], "'dense' has no sparsity"),
    (["--method", "dense", "--pattern", "nm:2:4"], "'dense' takes no options"),
    (["--method", "rigl", "--sparsity", "0.9", "--opt", "sparsity=0.5"], "with --sparsity"),
    (["--method", "rigl", "--format", "csr", "--opt", "format=masked"], "conflicts with --format"),
    (["--method", "rigl", "--distribution", "er", "--opt", "distribution=erk"], "conflicts"),
    (["--method", "rigl", "--opt", "alpha=0.3", "--opt", "alpha=0.5"], "given twice"),
    (["--method", "rigl", "--pattern", "block:7"], "tiles none of the model's layers"),
    (["--method", "nosuch"], "unknown method"),
    (["--lr", "nan"], "lr must be"),
    (["--weight-decay", "nan"], "weight_decay must be"),
    (["--sparsity", "1.5", "--method", "rigl"], "sparsity must be"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
])
def test_bad_and_conflicting_flags_are_refused(fast_mode, capsys, argv, words):
    code, _, err = main(["train", "--no-progress"] + SMALL + argv, capsys)
    assert code == 2 and words in one_error_line(err), err
    assert "usage:" not in err


def test_methods_lists_every_option_with_its_default(capsys):
    code, out, _ = main(["methods"], capsys)
    assert code == 0
    for name in available():
        assert f"{name}: " in out
    code, out, _ = main(["methods", "set"], capsys)
    assert code == 0 and "zeta = 0.3" in out and "SET paper" in out
    code, _, err = main(["methods", "rigll"], capsys)
    assert code == 2 and "did you mean 'rigl'" in one_error_line(err, "methods")


@pytest.mark.parametrize("name", available())
def test_option_tables_cannot_drift_from_the_signatures(name):
    """Every option of every method says what it is; no text names an option that is gone."""
    cls = method_class(name)
    options = {o.name for o in method_options(cls)}
    missing = [o.name for o in method_options(cls) if not o.help]
    assert not missing, f"{name}: options without a description in option_help: {missing}"
    for klass in cls.__mro__:
        stale = set(klass.__dict__.get("option_help", {})) - options
        if klass is cls:
            assert not stale, f"{name}: option_help describes {stale}, which it does not take"
    assert set(option_help_table(cls)) >= options


def test_compare_honours_the_seed(fast_mode, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, _, err = main(["compare", "--methods", "static", "--sparsity", "0.5", "--seeds", "1",
                         "--seed", "5", "--no-progress", "--out", str(out)] + SMALL, capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == ["dense-0-s5.json", "static-0.5-s5.json"]
    assert all(json.loads((out / n).read_text())["seed"] == 5 for n in names)


def test_help_shows_the_defaults(capsys):
    for command in (["train"], ["compare"], ["data", "download"], ["demo"]):
        code, out, _ = main(command + ["--help"], capsys)
        assert code == 0 and "(default: " in out, command
    _, out, _ = main(["train", "--help"], capsys)
    out = " ".join(out.split())                              # however argparse wrapped it
    for shown in ("learning rate (peak of the schedule) (default: 0.05)",
                  "(default: lenet300)", "random seed (default: 0)"):
        assert shown in out


def test_version_and_python_dash_m(capsys):
    code, out, _ = main(["--version"], capsys)
    assert code == 0 and out.strip() == f"sparsenet {sn.__version__}"
    done = subprocess.run([sys.executable, "-m", "sparsenet", "--version"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == f"sparsenet {sn.__version__}"


# ----- F: no silent surprise -----------------------------------------------------------------------
def test_a_dst_run_too_short_for_its_delta_t_says_so(fast_mode):
    config = TrainConfig(method="set", sparsity=0.9, epochs=2, data="subset", progress=False)
    with pytest.warns(UserWarning, match=r"16 training steps .* delta_t=100 .* no topology update"):
        record = run(config, log=None)
    details = record["method_details"]
    assert details["planned_updates"] == details["n_updates"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # long enough: no warning
        record = run(TrainConfig(method="set", sparsity=0.9, epochs=2, data="subset",
                                 progress=False, model="mlp:784-16-10",
                                 method_options={"delta_t": 4}), log=None)
    assert record["method_details"]["n_updates"] == record["method_details"]["planned_updates"] > 0


@pytest.mark.parametrize("name", [n for n in available() if n not in ("dense", "regularized")])
def test_a_sparse_method_without_sparsity_trains_at_its_default_and_says_so(name):
    with pytest.warns(UserWarning, match=f"{name}: no sparsity given"):
        method, config = make_method(TrainConfig(method=name))
    assert config.sparsity == method.sparsity > 0


def test_snip_without_sparsity_is_sparse_and_records_it(fast_mode):
    with pytest.warns(UserWarning, match="default sparsity 0.9"):
        record = run(TrainConfig(method="snip", model="mlp:784-16-10", epochs=1, data="subset",
                                 progress=False), log=None)
    assert record["target_sparsity"] == 0.9 and record["density"] == pytest.approx(0.1, abs=1e-3)


def test_a_sparse_method_that_ends_dense_says_so(fast_mode):
    with pytest.warns(UserWarning, match="trained a dense model"):
        run(TrainConfig(method="snip", sparsity=0.0, model="mlp:784-16-10", epochs=1,
                        data="subset", progress=False), log=None)


def pytorch_habit(method_or_sparsify):
    """Build the optimizer first, then let a method (or sparsify) replace the layers."""
    model = build_model("mlp:784-16-10")
    opt = SGD(model.parameters(), lr=0.1)
    x, y = load_arrays("subset")[:2]
    loader = BatchLoader(x[:64], y[:64], 32, seed=0)
    method_or_sparsify(model, loader)
    loss = cross_entropy(model(sn.Tensor(x[:32])), y[:32])
    opt.zero_grad()
    loss.backward()
    return model, opt


@pytest.mark.parametrize("how", ["rigl", "snip", "sparsify"])
def test_an_optimizer_built_before_setup_refuses_to_step(how):
    def replace(model, loader):
        if how == "sparsify":
            sparsify(model, sparsity=0.5)
        else:
            get_method(how, sparsity=0.5).setup(model, None, loader, 10)
    _, opt = pytorch_habit(replace)
    with pytest.raises(RuntimeError, match="replaced after the optimizer was built"):
        opt.step()


def test_an_optimizer_built_after_setup_steps():
    model = build_model("mlp:784-16-10")
    x, y = load_arrays("subset")[:2]
    get_method("rigl", sparsity=0.5).setup(model, None, BatchLoader(x, y, 32), 10)
    opt = SGD(model.parameters(), lr=0.1)
    cross_entropy(model(sn.Tensor(x[:32])), y[:32]).backward()
    opt.step()


def test_sparsify_keeps_the_largest_weights_by_default():
    model = build_model("lenet300")
    dense = {n: m.weight.data.copy() for n, m in model.named_modules() if hasattr(m, "weight")}
    sparsify(model, sparsity=0.5)
    for name, weights in dense.items():
        mask = model.get_submodule(name).weight.mask()
        assert np.abs(weights[mask]).min() >= np.abs(weights[~mask]).max()
        np.testing.assert_array_equal(mask, CSR.from_dense(weights, density=0.5).mask())


def test_dst_methods_still_start_from_a_random_pattern():
    model = build_model("lenet300")
    weights = model.get_submodule("1").weight.data.copy()
    method = get_method("static", sparsity=0.5, distribution="uniform")
    method.setup(model, None, None, 10)
    mask = model.get_submodule("1").weight.mask()
    largest = CSR.from_dense(weights, density=0.5).mask()
    assert 0.4 < (mask & largest).sum() / mask.sum() < 0.6          # chance, not the top half


def test_block_format_fits_the_default_model(fast_mode, capsys):
    """--format block and the README's --pattern block:4 train lenet300; the 10x100 output
    layer, which 4x4 blocks cannot tile, stays dense with a warning; block:16 is refused
    with the sizes that fit."""
    code, _, err = main(["train", "--method", "static", "--sparsity", "0.9", "--format", "block",
                         "--epochs", "1", "--data", "subset", "--no-progress"], capsys)
    assert code == 0, err
    assert "using block_size 4" in err and "'5' 10x100: kept dense" in err
    method = get_method("rigl", sparsity=0.9, format="block", block_size=4)
    model = build_model("lenet300")
    with pytest.warns(UserWarning, match="kept dense"):
        method.setup(model, None, None, 10)
    assert [layer.format for _, layer in method.layers] == ["block", "block"]
    assert method.describe()["kept_dense_untiled"] == ["5"]
    with pytest.raises(ValueError, match=r"block_size 16 tiles none.*4 \(99.6%\)"):
        get_method("rigl", sparsity=0.9, format="block", block_size=16).setup(
            build_model("lenet300"), None, None, 10)


def test_quick_benchmarks_do_not_overwrite_the_committed_records(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    try:
        import common
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(common, "RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(common, "QUICK_RESULTS", str(tmp_path / "results" / "quick"))
    monkeypatch.setattr(common, "machine", lambda: {"host": "test"})
    path = common.write_record("train_speed", [{"a": 1}], "| a |", quick=True)
    assert path == str(tmp_path / "results" / "quick" / "train_speed.json")
    assert sorted(os.listdir(tmp_path / "results")) == ["quick"]
    source = open(os.path.join(os.path.dirname(common.__file__), "train_speed.py")).read()
    assert "quick=args.quick" in source


def test_no_progress_bar_in_a_log_file(fast_mode, capsys):
    code, _, err = main(["train"] + SMALL, capsys)        # stderr captured: not a terminal
    assert code == 0 and "epoch 1/1" not in err and "it/s" not in err and len(err) < 500


def test_the_model_carries_its_input_preprocessing(fast_mode, tmp_path):
    """A user feeding raw uint8 pixels or /255 floats through `model.preprocess` gets the
    same logits as the training data had; the loaded model carries it too."""
    from sparsenet.data import load_dataset, to_float
    from sparsenet.data.preprocess import Standardize
    model, _ = train_model(TrainConfig(model="mlp:784-16-10", epochs=1, data="subset",
                                       progress=False), log=None)
    path = tmp_path / "m.safetensors"
    sn.save(model, path)
    loaded = sn.load(path)
    pixels = load_dataset("fashion-mnist", "subset").test_images[:50]
    expected = loaded(sn.Tensor(to_float(pixels))).data
    for images in (pixels, pixels.astype(np.float32) / 255, pixels.reshape(50, 784)):
        np.testing.assert_allclose(loaded(sn.Tensor(loaded.preprocess(images))).data, expected,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already standardized"):
        loaded.preprocess(to_float(pixels))
    assert Standardize.from_json(loaded.preprocess.to_json()) == loaded.preprocess


def test_classes_come_from_the_data_set_not_the_largest_label(fast_mode):
    x_train, y_train, x_test, y_test, origin = load_arrays("subset")
    keep = y_train < 8                                      # classes 8 and 9 never trained on
    data = Arrays((x_train[keep], y_train[keep], x_test, y_test, origin), num_classes=10)
    model, record = train_model(TrainConfig(model="mlp:784-16-10", epochs=1, progress=False),
                                log=None, data=data)
    assert model(sn.Tensor(x_test[:2])).shape == (2, 10)
    assert len(record["per_class_accuracy"]) == 10
    plain = (x_train[keep], y_train[keep], x_test, y_test, origin)
    assert num_classes_of(plain) == 10                      # the test split shows 8 and 9
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        train_model(TrainConfig(model="mlp:784-16-10", epochs=1, progress=False), log=None,
                    data=Arrays((x_train, y_train + 5, x_test, y_test, origin), 10))


def test_nan_pixels_and_nan_settings_are_called_what_they_are(fast_mode):
    x_train, y_train, x_test, y_test, origin = load_arrays("subset")
    x_bad = x_train.copy()
    x_bad[3, 0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="training images hold 1 NaN"):
        train_model(TrainConfig(model="mlp:784-16-10", epochs=1, progress=False), log=None,
                    data=(x_bad, y_train, x_test, y_test, origin))
    with pytest.raises(ValueError, match="weight_decay must be"):
        TrainConfig(weight_decay=float("nan")).validate()
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        SGD(build_model("mlp:784-16-10").parameters(), lr=0.1, weight_decay=float("nan"))
    from sparsenet.guards import non_finite_loss
    model = build_model("mlp:784-16-10")
    message = non_finite_loss(float("nan"), x_bad[:4], model, SGD(model.parameters()), 0, 1, 0.1)
    assert "input batch holds NaN" in message and "learning rate" not in message


@pytest.mark.parametrize("bad, words", [
    (dict(lr="0.1"), r"lr must be a positive number, got '0.1' \(str\)"),
    (dict(epochs=1.5), "epochs must be an integer >= 1, got 1.5"),
    (dict(batch_size=True), "batch_size must be an integer"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(momentum=1.5), "momentum must be a number in"),
    (dict(sparsity="0.9", method="rigl"), "sparsity must be a number"),
    (dict(progress="yes"), "progress must be True or False"),
    (dict(method="rigl", method_options={"sparsity": 0.5}), "not as a method option"),
    (dict(method="rigl", method_options={"alhpa": 0.3}), "did you mean 'alpha'"),
])
def test_train_config_types_are_checked(bad, words):
    with pytest.raises(ValueError, match=words):
        run(TrainConfig(data="/nonexistent", **bad), log=None)


def test_constant_fan_in_must_be_a_boolean():
    w = np.ones((4, 6), np.float32)
    for build in (lambda: CSR.from_dense(w, density=0.5, constant_fan_in="no"),
                  lambda: Masked.from_dense(w, density=0.5, constant_fan_in="no"),
                  lambda: CSR(np.array([0, 1]), np.array([0], np.int32), np.ones(1, np.float32),
                              (1, 6), constant_fan_in=1),
                  lambda: sparsify(build_model("lenet300"), sparsity=0.5, constant_fan_in="no"),
                  lambda: sn.nn.SparseLinear(8, 4, sparsity=0.5, constant_fan_in="no")):
        with pytest.raises(ValueError, match="constant_fan_in must be True or False"):
            build()


def test_lottery_says_when_its_rounds_overshoot_the_target():
    import re

    from sparsenet.algorithms.lottery import LotteryTicket
    with pytest.warns(UserWarning, match=r"8 rounds reach 83\.1% sparsity, past the target "
                                         r"80\.0% \(7 reach 78\.9%\)") as caught:
        LotteryTicket(sparsity=0.8).schedule(build_model("lenet300"))
    suggested = float(re.search(r"give --sparsity (0\.\d{4})", str(caught[0].message)).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # the suggested target: the same rounds
        assert len(LotteryTicket(sparsity=suggested).schedule(build_model("lenet300"))) == 8
