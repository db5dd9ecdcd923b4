"""Outputs are never lost (issue 11 part D): destinations checked before training, records
written atomically, the model saved even if the record cannot be, and the reverse."""
import errno
import json
import os

import pytest

import sparsenet as sn
from sparsenet import cli, files

TRAIN = ["train", "--data", "subset", "--no-progress", "--model", "mlp:784-16-10", "--epochs", "1",
         "--batch-size", "250"]


def run(argv, capsys):
    code = cli.main(TRAIN + argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flags, words", [
    (["--json", "{tmp}/missing/r.json", "--save", "{tmp}/ok.safetensors"],
     "--json {tmp}/missing/r.json: the folder '{tmp}/missing' does not exist"),
    (["--save", "{tmp}/missing/m.safetensors"], "--save {tmp}/missing/m.safetensors: the folder"),
    (["--json", "{tmp}/a-folder"], "is a directory; give a file name"),
    (["--save", "{tmp}/a-file/m.safetensors"], "is not a folder"),
    (["--checkpoint", "{tmp}/a-file"], "is a file, not a folder"),
    (["--json", ""], "--json needs a file name"),
])
def test_a_bad_destination_is_one_line_and_exit_2_before_training(fast_mode, tmp_path, capsys,
                                                                  flags, words):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    code, out, err = run([f.format(tmp=tmp_path) for f in flags], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsenet train: error: ")
    assert words.format(tmp=tmp_path) in lines[0]
    assert "epoch" not in out and not (tmp_path / "ok.safetensors").exists()   # nothing trained


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_an_unwritable_folder_is_refused_before_training(fast_mode, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, out, err = run(["--json", str(locked / "r.json")], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "not writable" in err and "epoch" not in out


def disk_full_after(monkeypatch, fraction=0.5):
    """Every atomic write fails halfway with ENOSPC, as a full disk would."""
    write = files._write_all

    def half_then_full(fd, data):
        write(fd, memoryview(data)[: int(len(data) * fraction)])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files, "_write_all", half_then_full)


def test_a_full_disk_keeps_the_previous_record_and_the_model_is_still_saved(
        fast_mode, tmp_path, capsys, monkeypatch):
    record, model = tmp_path / "r.json", tmp_path / "m.safetensors"
    record.write_text('{"previous": true}')
    write = files._write_all

    def full_for_json(fd, data):                # the disk fills up while the record is written
        if bytes(memoryview(data)[:1]) == b"{":
            write(fd, memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        write(fd, data)
    monkeypatch.setattr(files, "_write_all", full_for_json)
    code, out, err = run(["--json", str(record), "--save", str(model)], capsys)
    assert code == 2
    assert json.loads(record.read_text()) == {"previous": True}     # not a half-written file
    assert sn.load(model).spec == "mlp:784-16-10" and "model written to" in out
    assert f"the record could not be written to {record} (No space left on device)" in err
    assert files.temporary_files(tmp_path) == []


def test_the_model_is_saved_even_if_the_record_cannot_be(fast_mode, tmp_path, capsys,
                                                         monkeypatch):
    def refuse(path, obj, indent=1):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(files, "atomic_write_json", refuse)
    record, model = tmp_path / "r.json", tmp_path / "m.safetensors"
    code, out, err = run(["--json", str(record), "--save", str(model)], capsys)
    assert code == 2 and not record.exists()
    assert sn.load(model).spec == "mlp:784-16-10" and f"model written to {model}" in out
    assert err.strip().splitlines() == [f"sparsenet train: error: the record could not be "
                                        f"written to {record} (Input/output error)"]


def test_the_record_is_written_even_if_the_model_cannot_be(fast_mode, tmp_path, capsys,
                                                           monkeypatch):
    def refuse(model, path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sn.io, "save", refuse)
    record, model = tmp_path / "r.json", tmp_path / "m.safetensors"
    code, out, err = run(["--json", str(record), "--save", str(model)], capsys)
    assert code == 2 and json.loads(record.read_text())["model"] == "mlp:784-16-10"
    assert f"the model could not be written to {model} (No space left on device)" in err


def test_records_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    files.atomic_write_json(path, {"run": 1})
    disk_full_after(monkeypatch, 0.3)
    with pytest.raises(OSError):
        files.atomic_write_json(path, {"run": 2, "history": list(range(1000))})
    assert json.loads(path.read_text()) == {"run": 1}
    assert files.temporary_files(tmp_path) == []
