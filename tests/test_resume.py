"""A killed run is not lost: checkpoints, exact resume, Ctrl-C, and the state_dicts behind them.

Issue 11 part C. Every run here is tiny (a 784-16-10 MLP, 2 epochs of 4 batches on the bundled
subset in fast mode), so each takes well under a second. A run stopped at step k (in-process by
an exception, or for real by SIGKILL / SIGINT in a subprocess) and resumed must end with the
record of the uninterrupted run, timings aside.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sparsenet import checkpoint, cli, files, optim, state
from sparsenet.algorithms import get_method
from sparsenet.nn import Parameter

BASE = ["train", "--data", "subset", "--no-progress", "--model", "mlp:784-16-10",
        "--epochs", "2", "--batch-size", "250"]
METHODS = {                    # method: (options, where the in-process test stops it)
    "dense": ([], 3),
    "gmp": (["--sparsity", "0.8", "--opt", "delta_t=2"], 3),
    "lottery": (["--sparsity", "0.5", "--opt", "rate=0.5", "--opt", "round_epochs=1",
                 "--opt", "rewind_step=1"], 9),
    "set": (["--sparsity", "0.8", "--opt", "delta_t=2"], 3),
    "rigl": (["--sparsity", "0.8", "--opt", "delta_t=2"], 3),
    "srigl": (["--sparsity", "0.8", "--opt", "delta_t=2"], 3),
    "mest": (["--sparsity", "0.8", "--opt", "delta_t=2"], 3),
    "snip": (["--sparsity", "0.8"], 3),
    "grasp": (["--sparsity", "0.8"], 3),
    "synflow": (["--sparsity", "0.8"], 3),
    "random": (["--sparsity", "0.8"], 3),
    "static": (["--sparsity", "0.8"], 3),
    "magnitude": (["--sparsity", "0.8", "--opt", "finetune_epochs=1"], 10),
    "structured": (["--sparsity", "0.5", "--opt", "finetune_epochs=1"], 10),
    "regularized": (["--sparsity", "0.5", "--opt", "l1=0.0001"], 7),
    "autosparse": (["--sparsity", "0.8"], 3),
}
TIMINGS = {"seconds", "train_seconds", "peak_rss_bytes", "scoring_seconds", "resumed_from", "samples_per_second", "build_seconds"}


def argv_of(method):
    return BASE + ["--method", method] + METHODS[method][0]


def without_timings(record):
    if isinstance(record, dict):
        return {k: without_timings(v) for k, v in record.items() if k not in TIMINGS}
    if isinstance(record, list):
        return [without_timings(v) for v in record]
    return record


def train(argv, tmp_path, name="run.json"):
    path = tmp_path / name
    assert cli.main(argv + ["--json", str(path)]) == 0
    return json.loads(path.read_text())


_references = {}


@pytest.fixture
def reference(fast_mode, tmp_path):
    """The uninterrupted run's record of a method (computed once per session)."""
    def get(method):
        if method not in _references:
            _references[method] = train(argv_of(method), tmp_path, f"{method}-reference.json")
        return _references[method]
    return get


class Killed(BaseException):
    """Stands for the process dying: nothing catches it."""


def stop_at(monkeypatch, step):
    original = checkpoint.Phase.step_done

    def step_done(self, loop):
        original(self, loop)
        if self.run.steps == step:
            raise Killed
    monkeypatch.setattr(checkpoint.Phase, "step_done", step_done)


# ----- for real: SIGKILL and SIGINT in a subprocess -------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys
    from sparsenet import checkpoint, cli, files
    from sparsenet.algorithms import base
    at, how = int(sys.argv[1]), sys.argv[2]
    # Ctrl-C as in a terminal: a job started in the background inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    step_done, after_backward, count = checkpoint.Phase.step_done, base.Method.after_backward, [0]

    def dying_step_done(self, loop):
        if how == "kill-in-write" and self.run.steps + 1 == at:    # die inside the next write
            write = files._write_all
            def half(fd, data):
                write(fd, memoryview(data)[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            files._write_all = half
        step_done(self, loop)
        if how == "kill" and self.run.steps == at:
            os.kill(os.getpid(), signal.SIGKILL)

    def interrupted_backward(self, step):              # Ctrl-C in the middle of a step
        count[0] += 1
        if how == "sigint" and count[0] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return after_backward(self, step)

    checkpoint.Phase.step_done = dying_step_done
    base.Method.after_backward = interrupted_backward
    sys.exit(cli.main(sys.argv[3:]))
""")
# method, the step it dies at (or in whose checkpoint write), how, the steps the checkpoint keeps
KILLED = [("dense", 5, "kill-in-write", 4), ("gmp", 3, "kill", 2), ("lottery", 7, "kill", 6),
          ("set", 5, "kill", 4), ("rigl", 4, "kill-in-write", 2)]
CHILDREN = {f"{m}-{how}": (m, at, how, ["--checkpoint", "{folder}", "--checkpoint-every", "2"])
            for m, at, how, _ in KILLED}
CHILDREN["ctrl-c"] = ("rigl", 3, "sigint", ["--checkpoint", "{folder}"])
CHILDREN["ctrl-c-unsaved"] = ("dense", 2, "sigint", [])


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Every subprocess of this module, started at once (they overlap their start-up); each
    test waits for its own: {name: (folder, Popen)}."""
    env = dict(os.environ, SPARSENET_FAST="1")
    started = {}
    for name, (method, at, how, extra) in CHILDREN.items():
        folder = tmp_path_factory.mktemp(name) / "ck"
        argv = argv_of(method) + [e.format(folder=folder) for e in extra]
        started[name] = (folder, subprocess.Popen(
            [sys.executable, "-c", CHILD, str(at), how] + argv, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    yield started
    for _, proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finished(children, name):
    folder, proc = children[name]
    out, err = proc.communicate(timeout=300)
    return folder, proc.returncode, err


@pytest.mark.parametrize("method, at, how, kept", KILLED)
def test_sigkill_then_resume_gives_the_uninterrupted_record(method, at, how, kept, children,
                                                            reference, tmp_path):
    folder, code, err = finished(children, f"{method}-{how}")
    assert code == -signal.SIGKILL, err
    if files.unnamed_files_supported(folder):
        assert files.temporary_files(folder) == []       # a write killed midway leaves nothing
    resumed = train(argv_of(method) + ["--resume", str(folder)], tmp_path)
    assert resumed["resumed_from"]["steps"] == kept
    assert without_timings(resumed) == without_timings(reference(method))
    assert files.temporary_files(folder) == []


def test_ctrl_c_writes_a_checkpoint_prints_one_line_and_exits_130(children, reference, tmp_path):
    folder, code, err = finished(children, "ctrl-c")
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0] == (f"sparsenet train: interrupted after 3 steps; checkpoint written to "
                        f"{folder}: continue with --resume {folder}")
    resumed = train(argv_of("rigl") + ["--resume", str(folder)], tmp_path)
    assert resumed["resumed_from"]["steps"] == 3                 # the step in progress finished
    assert without_timings(resumed) == without_timings(reference("rigl"))


def test_ctrl_c_without_a_checkpoint_says_so_and_exits_130(children):
    _, code, err = finished(children, "ctrl-c-unsaved")
    assert code == 130
    assert err.strip().splitlines() == [
        "sparsenet train: interrupted; nothing was saved (--checkpoint DIR keeps a run)"]


# ----- every other method family: stopped in-process, resumed, the same record ----------------
@pytest.mark.parametrize("method", [m for m in METHODS if m not in [k[0] for k in KILLED]])
def test_a_stopped_run_resumes_to_the_uninterrupted_record(method, reference, tmp_path,
                                                           monkeypatch):
    """Stopped mid-epoch (a single-phase method) or in the last phase (a multi-phase one)."""
    stop = METHODS[method][1]
    folder = tmp_path / "ck"
    with monkeypatch.context() as patch:
        stop_at(patch, stop)
        with pytest.raises(Killed):
            cli.main(argv_of(method) + ["--checkpoint", str(folder), "--checkpoint-every", "2"])
    resumed = train(argv_of(method) + ["--resume", str(folder)], tmp_path)
    assert resumed["resumed_from"]["steps"] == stop - stop % 2
    assert without_timings(resumed) == without_timings(reference(method))


@pytest.mark.parametrize("method", ["autosparse", "regularized"])
def test_a_finished_run_resumed_gives_its_record_again(method, reference, tmp_path):
    """Both turn dense layers sparse at the end of training: the finished phase's state
    rebuilds them."""
    folder = tmp_path / "ck"
    first = train(argv_of(method) + ["--checkpoint", str(folder)], tmp_path, "first.json")
    again = train(argv_of(method) + ["--resume", str(folder)], tmp_path, "again.json")
    assert without_timings(first) == without_timings(again) == \
        without_timings(reference(method))
    assert again["resumed_from"] == {"phases_done": 1, "steps": 8}
    assert sorted(os.listdir(folder)) == ["checkpoint.safetensors", "phase-0000.safetensors"]


# ----- the checkpoint directory is checked before training -----------------------------------
def test_a_checkpoint_of_another_run_is_refused_naming_the_difference(fast_mode, tmp_path,
                                                                      monkeypatch, capsys):
    folder = tmp_path / "ck"
    with monkeypatch.context() as patch:
        stop_at(patch, 3)
        with pytest.raises(Killed):
            cli.main(argv_of("rigl") + ["--checkpoint", str(folder), "--checkpoint-every", "1"])
    capsys.readouterr()
    assert cli.main(argv_of("rigl") + ["--lr", "0.1", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint of another run" in err and "config.lr: 0.05 in the checkpoint, 0.1 now" in err


@pytest.mark.parametrize("extra, words", [
    (["--resume", "{tmp}/nothing"], "no checkpoint there"),
    (["--checkpoint-every", "3"], "--checkpoint-every needs --checkpoint"),
    (["--checkpoint", "{tmp}/file.txt"], "is a file, not a folder"),
    (["--checkpoint", "{tmp}/missing/ck"], "does not exist"),
])
def test_bad_checkpoint_flags_exit_2_before_training(fast_mode, tmp_path, capsys, extra, words):
    (tmp_path / "file.txt").write_text("x")
    argv = argv_of("dense") + [e.format(tmp=tmp_path) for e in extra]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert words in err and "epoch" not in out


def test_checkpoint_every_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv_of("dense") + ["--checkpoint", "x", "--checkpoint-every", "0"])
    assert stop.value.code == 2 and "positive" in capsys.readouterr().err


def test_a_folder_holding_a_checkpoint_is_not_overwritten(fast_mode, tmp_path, capsys):
    folder = tmp_path / "ck"
    train(argv_of("dense") + ["--checkpoint", str(folder)], tmp_path)
    before = (folder / "checkpoint.safetensors").read_bytes()
    assert cli.main(argv_of("dense") + ["--checkpoint", str(folder)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (folder / "checkpoint.safetensors").read_bytes() == before


def test_a_checkpoint_that_cannot_be_written_stops_the_run_clearly(fast_mode, tmp_path, capsys,
                                                                   monkeypatch):
    import errno
    folder = tmp_path / "ck"
    write, calls = files._write_all, []

    def full_disk_at_the_third(fd, data):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(fd, data)
    monkeypatch.setattr(files, "_write_all", full_disk_at_the_third)
    assert cli.main(argv_of("dense") + ["--checkpoint", str(folder),
                                        "--checkpoint-every", "1"]) == 2
    err = capsys.readouterr().err
    assert f"could not write {folder}/checkpoint.safetensors (No space left on device); the " \
           f"last one (2 steps) is intact" in err
    monkeypatch.setattr(files, "_write_all", write)
    assert cli.main(argv_of("dense") + ["--resume", str(folder)]) == 0


# ----- hostile checkpoints ---------------------------------------------------------------------
def test_a_corrupt_checkpoint_is_refused_clearly(fast_mode, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ck"
    with monkeypatch.context() as patch:
        stop_at(patch, 3)
        with pytest.raises(Killed):
            cli.main(argv_of("set") + ["--checkpoint", str(folder), "--checkpoint-every", "1"])
    latest = folder / "checkpoint.safetensors"
    latest.write_bytes(latest.read_bytes()[:-64])                          # truncated
    capsys.readouterr()
    assert cli.main(argv_of("set") + ["--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(latest) in err and "truncated" in err and "Traceback" not in err


def test_method_state_cannot_replace_the_model_or_the_optimizer():
    method = get_method("rigl", sparsity=0.9)
    method.model = object()                   # what setup would hold: not plain data
    with pytest.raises(ValueError, match="'model'"):
        state._check_method_state(method, {"model": 3})
    with pytest.raises(ValueError, match="attribute name"):
        state._check_method_state(method, {"__class__": 3})


# ----- the pieces: pack/unpack, optimizer, scheduler and method state -------------------------
def test_pack_and_unpack_return_what_they_were_given():
    generator = np.random.default_rng(5)
    generator.random(3)
    value = {"a": (1, 2.5, None), "b": [np.float32(0.1), np.int64(7), True],
             "c": {3: "three", 4: np.arange(5)}, "rng": generator, "__array__": "tricky"}
    arrays = {}
    packed = state.pack(value, "x", arrays)
    text = json.dumps(packed)                            # JSON-able
    back = state.unpack(json.loads(text), arrays)
    assert back["a"] == (1, 2.5, None) and isinstance(back["a"], tuple)
    assert back["b"][0] == np.float32(0.1) and back["b"][0].dtype == np.float32
    assert back["c"][3] == "three" and np.array_equal(back["c"][4], np.arange(5))
    assert back["__array__"] == "tricky"
    assert back["rng"].random() == generator.random()


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda ps: optim.Adam(ps, lr=0.01), lambda ps: optim.AdamW(ps, lr=0.01),
], ids=["sgd", "adam", "adamw"])
def test_optimizer_state_dict_continues_exactly(make):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(4) for _ in range(6)]

    def run(steps, opt=None, p=None):
        p = p or Parameter(np.array([0.5, -1.0, 2.0, 0.0]))
        opt = opt or make([p])
        for g in steps:
            p.grad = g.copy()
            opt.step()
        return p, opt
    straight, _ = run(grads)
    p, first = run(grads[:3])
    saved = json.loads(json.dumps(state.pack(first.state_dict(), "o", arrays := {})))
    q = Parameter(p.data.copy())
    second = make([q])
    second.load_state_dict(state.unpack(saved, arrays))
    run(grads[3:], second, q)
    np.testing.assert_array_equal(q.data, straight.data)
    layout = first.state_dict()
    assert set(layout) == {"state", "param_groups"} and layout["param_groups"][0]["params"] == [0]
    assert layout["state"][0]["step"] == (3 if "m" in layout["state"][0] else 0)


def test_optimizer_load_state_dict_refuses_what_does_not_fit():
    p = Parameter(np.zeros(4))
    sgd = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(4)
    sgd.step()
    saved = sgd.state_dict()
    with pytest.raises(ValueError, match="settings"):
        optim.Adam([Parameter(np.zeros(4))]).load_state_dict(saved)
    with pytest.raises(ValueError, match="shape"):
        optim.SGD([Parameter(np.zeros(5))], lr=0.1, momentum=0.9).load_state_dict(saved)
    with pytest.raises(ValueError, match="2 in the optimizer"):
        optim.SGD([Parameter(np.zeros(4)), Parameter(np.zeros(4))], lr=0.1,
                  momentum=0.9).load_state_dict(saved)
    fresh = optim.SGD([Parameter(np.zeros(4))], lr=0.3, momentum=0.9)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.1                # settings come along, as in PyTorch


def test_scheduler_state_dict_restores_the_step_and_the_rate():
    def cosine():
        return optim.CosineLR(optim.SGD([Parameter(np.zeros(2))], lr=1.0), total=10, warmup=2)
    first = cosine()
    for _ in range(4):
        first.step()
    second = cosine()
    second.load_state_dict(first.state_dict())
    assert second.t == 4 and second.get_lr() == first.get_lr()
    with pytest.raises(ValueError, match="StepLR"):
        optim.StepLR(optim.SGD([Parameter(np.zeros(2))], lr=1.0), 3).load_state_dict(
            first.state_dict())


def test_method_state_dict_holds_plain_data_only():
    assert get_method("dense").state_dict() == {}
    lottery = get_method("lottery", sparsity=0.5)
    lottery.theta_k = {"1": (np.ones(3), None)}
    lottery.model = object()
    saved = lottery.state_dict()
    assert "model" not in saved and saved["theta_k"]["1"][1] is None
    lottery.theta_k["1"][0][:] = 5                               # a copy, not a view
    assert saved["theta_k"]["1"][0].tolist() == [1, 1, 1]
    fresh = get_method("lottery", sparsity=0.5)
    fresh.load_state_dict(saved)
    assert fresh.theta_k["1"][0].tolist() == [1, 1, 1]
