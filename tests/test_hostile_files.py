"""Model files load exactly what was saved, or refuse with one clear error; saving is atomic.

Every reproducer of issue 11 part B is here: conv geometry taken from the header unchecked, a
header declaring a 3 GiB tensor, a spec or a layout too large to allocate, malformed files
giving raw SafetensorError / AttributeError / JSONDecodeError / KeyError, and saves that a
second writer, a symbolic link or a SIGKILL could break.
"""
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save as serialize

import sparsenet as sn
from sparsenet import files, tensorfile
from sparsenet.io import ModelFileError
from sparsenet.nn import build_model
from sparsenet.tensor import Tensor


# ----- valid files to start from -----------------------------------------------------------------
def sparse_mlp():
    return sn.sparsify(build_model("mlp:784-32-10"), sparsity=0.8, rng=np.random.default_rng(0))


def sparse_lenet5():
    return sn.sparsify(build_model("lenet5"), sparsity=0.8, rng=np.random.default_rng(0))


def parts(model):
    """(arrays, metadata) exactly as sn.save writes them."""
    return dict(model.state_dict()), {
        "format": "sparsenet", "version": sn.__version__, "model": model.spec,
        "sparse_layers": json.dumps({n: m.sparse_config() for n, m in model.named_modules()
                                     if hasattr(m, "sparse_config")})}


def with_layout(metadata, edit):
    layout = json.loads(metadata["sparse_layers"])
    edit(layout)
    return dict(metadata, sparse_layers=json.dumps(layout))


def raw(header, data=b"", length=None) -> bytes:
    """A file from a header (bytes, or an object serialized as JSON) and data bytes."""
    header = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def split(blob: bytes):
    """(header dict, data bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def edit_header(blob, edit):
    header, data = split(blob)
    edit(header)
    return raw(header, data)


# ----- the generator of malformed files ----------------------------------------------------------
def malformed_files():
    """(case, file bytes, words the error must contain): truncated files, bad JSON headers,
    wrong dtypes and shapes, missing and extra tensors, bad metadata and layouts."""
    arrays, meta = parts(sparse_mlp())
    good = serialize(arrays, metadata=meta)
    first = "1.values"

    def entry(key, value):
        return lambda h: h[first].__setitem__(key, value)

    def shape_bytes(h):                  # the last tensor of the data declares 3 GiB
        name = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
        begin = h[name]["data_offsets"][0]
        h[name].update(dtype="U8", shape=[3 * 2 ** 30], data_offsets=[begin, begin + 3 * 2 ** 30])

    def overlap(h):
        h[first]["data_offsets"] = [0, h[first]["data_offsets"][1] - h[first]["data_offsets"][0]]

    l5_arrays, l5_meta = parts(sparse_lenet5())
    return [
        ("empty file", b"", "header length"),
        ("shorter than the length field", b"\x10\x00", "header length"),
        ("header length beyond the file", good[:8 + 20], "header length"),
        ("header length 2**63", struct.pack("<Q", 2 ** 63) + good[8:], "header length"),
        ("header not UTF-8", raw(b"\xff\xfe{}"), "not valid JSON"),
        ("header not JSON", raw(b"{not json"), "not valid JSON"),
        ("header a JSON list", raw(b"[1, 2]"), "JSON object"),
        ("a key twice", raw(b'{"a": {}, "a": {}}'), "appears twice"),
        ("entry without dtype", edit_header(good, lambda h: h[first].pop("dtype")), "keys"),
        ("unknown dtype", edit_header(good, entry("dtype", "X7")), "dtype"),
        ("bfloat16", edit_header(good, entry("dtype", "BF16")), "dtype"),
        ("negative shape", edit_header(good, entry("shape", [-4])), "shape"),
        ("shape not a list", edit_header(good, entry("shape", 5)), "shape"),
        ("offsets not a pair", edit_header(good, entry("data_offsets", [0])), "data_offsets"),
        ("shape and offsets disagree", edit_header(good, entry("shape", [3])), "data_offsets"),
        ("overlapping tensors", edit_header(good, overlap), "data_offsets"),
        ("a 3 GiB tensor declared", edit_header(good, shape_bytes), "3,221,"),
        ("truncated data", good[:-100], "truncated"),
        ("trailing bytes", good + b"\x00" * 16, "data"),
        ("metadata values not strings",
         edit_header(good, lambda h: h["__metadata__"].__setitem__("format", 1)), "__metadata__"),
        ("no format", serialize(arrays, metadata={k: v for k, v in meta.items()
                                                  if k != "format"}), "format"),
        ("another format", serialize(arrays, metadata=dict(meta, format="pytorch")), "format"),
        ("a checkpoint", serialize(arrays, metadata=dict(meta, format="sparsenet-checkpoint")),
         "--resume"),
        ("unknown metadata", serialize(arrays, metadata=dict(meta, extra="1")), "unknown"),
        ("unknown model", serialize(arrays, metadata=dict(meta, model="resnet9")), "model"),
        ("layout not JSON", serialize(arrays, metadata=dict(meta, sparse_layers="{")), "JSON"),
        ("layout kind", serialize(arrays, metadata=with_layout(
            meta, lambda lay: lay["1"].__setitem__("kind", "lstm"))), "kind"),
        ("layout extra field", serialize(arrays, metadata=with_layout(
            meta, lambda lay: lay["1"].__setitem__("colour", "red"))), "unexpected"),
        ("layout for no layer", serialize(arrays, metadata=with_layout(
            meta, lambda lay: lay.__setitem__("7", lay["1"]))), "no layer"),
        ("layout format", serialize(arrays, metadata=with_layout(
            meta, lambda lay: lay["1"].__setitem__("format", "coo"))), "format"),
        ("layout dtype", serialize(arrays, metadata=with_layout(
            meta, lambda lay: lay["1"].__setitem__("dtype", "int8"))), "dtype"),
        ("missing tensor", serialize({k: v for k, v in arrays.items() if k != "3.bias"},
                                     metadata=meta), "missing"),
        ("extra tensor", serialize(dict(arrays, stowaway=np.zeros(3, np.float32)),
                                   metadata=meta), "unexpected"),
        ("weights in float64", serialize(dict(arrays, **{"1.values": arrays["1.values"].astype(
            np.float64)}), metadata=meta), "dtype"),
        ("indices as floats", serialize(dict(arrays, **{"1.indices": arrays["1.indices"].astype(
            np.float32)}), metadata=meta), "dtype"),
        ("bias of the wrong length", serialize(dict(arrays, **{"1.bias": np.zeros(31, np.float32)}),
                                               metadata=meta), "shape"),
        ("index out of range", serialize(dict(arrays, **{"1.indices": np.full_like(
            arrays["1.indices"], 2 ** 30)}), metadata=meta), "layer '1'"),
        ("values and indices of different lengths", serialize(dict(arrays, **{
            "1.values": arrays["1.values"][:-1]}), metadata=meta), "layer '1'"),
        ("conv stride -1", serialize(l5_arrays, metadata=with_layout(
            l5_meta, lambda lay: lay["0"].__setitem__("stride", [-1, -1]))), "stride"),
        ("conv padding not the model's", serialize(l5_arrays, metadata=with_layout(
            l5_meta, lambda lay: lay["0"].__setitem__("padding", [1, 1]))), "padding"),
        ("conv kernel 0", serialize(l5_arrays, metadata=with_layout(
            l5_meta, lambda lay: lay["2"].__setitem__("kernel_size", [0, 0]))), "kernel_size"),
    ]


CASES = malformed_files()


@pytest.mark.parametrize("case, blob, words", CASES, ids=[c[0] for c in CASES])
def test_every_malformed_file_gets_one_clear_error(tmp_path, case, blob, words):
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    with pytest.raises(tensorfile.TensorFileError) as err:      # ModelFileError is one too
        sn.load(path)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and err.value.path == str(path)
    assert message.startswith(f"{path}: ") and words in message, message
    assert "\n" not in message


def test_at_least_the_eighteen_cases_of_the_issue():
    assert len(CASES) >= 18 and len({c[0] for c in CASES}) == len(CASES)


def test_a_valid_file_still_loads_and_computes_the_same(tmp_path):
    model = sparse_lenet5()
    path = tmp_path / "l5.safetensors"
    sn.save(model, path)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(sn.load(path)(x).data, model(x).data)


def test_a_failed_load_leaves_the_given_model_unchanged(tmp_path):
    arrays, meta = parts(sparse_mlp())
    arrays["3.indices"] = np.full_like(arrays["3.indices"], 10 ** 6)     # the second layer is bad
    path = tmp_path / "bad.safetensors"
    path.write_bytes(serialize(arrays, metadata=meta))
    model = build_model("mlp:784-32-10")
    before = {k: v.copy() for k, v in model.state_dict().items()}
    layers = [type(m) for m in model.modules()]
    with pytest.raises(ModelFileError, match="layer '3'"):
        sn.load(path, model)
    assert [type(m) for m in model.modules()] == layers
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# ----- sizes are checked before anything is read or allocated ------------------------------------
def test_a_huge_spec_is_refused_with_an_estimate_before_allocating(tmp_path):
    with pytest.raises(ValueError, match=r"need about .*GiB"):
        build_model("mlp:784-100000000-10")                    # 313 GB of weights
    arrays, meta = parts(sparse_mlp())
    path = tmp_path / "huge.safetensors"
    path.write_bytes(serialize(arrays, metadata=dict(meta, model="mlp:784-100000000-10")))
    with pytest.raises(ModelFileError, match=r"model.*need about"):
        sn.load(path)


def test_a_million_by_million_csr_layout_is_refused_before_allocating(tmp_path):
    arrays, meta = parts(sparse_mlp())

    def huge(layout):
        layout["1"].update(in_features=10 ** 6, out_features=10 ** 6)
    path = tmp_path / "wide.safetensors"
    path.write_bytes(serialize(arrays, metadata=with_layout(meta, huge)))
    with pytest.raises(ModelFileError, match=r"in_features.*1000000.*784"):
        sn.load(path)


def test_a_real_3_gib_tensor_under_an_unexpected_name_is_never_read(tmp_path, monkeypatch):
    arrays, meta = parts(sparse_mlp())
    blob = serialize(arrays, metadata=meta)
    header, data = split(blob)
    size = 3 * 2 ** 30
    header["stowaway"] = {"dtype": "U8", "shape": [size], "data_offsets": [len(data),
                                                                          len(data) + size]}
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(raw(header, data))
        f.truncate(f.tell() + size)           # a sparse file: 3 GiB long, no disk used
    monkeypatch.setattr(tensorfile, "read_tensors",
                        lambda *a, **k: pytest.fail("tensor data was read"))
    with pytest.raises(ModelFileError, match="unexpected.*stowaway"):
        sn.load(path)


def test_loading_never_calls_safetensors_so_its_panic_cannot_escape(tmp_path, monkeypatch):
    import safetensors.numpy

    class PanicException(BaseException):          # what pyo3 raises: not an Exception
        pass

    def panic(*args, **kwargs):
        raise PanicException("memory allocation failed")
    model = sparse_mlp()
    path = tmp_path / "m.safetensors"
    sn.save(model, path)
    for name in ("load_file", "load", "safe_open"):
        monkeypatch.setattr(safetensors.numpy, name, panic, raising=False)
    monkeypatch.setattr(safetensors, "safe_open", panic)
    assert sn.load(path).spec == "mlp:784-32-10"
    monkeypatch.setattr(safetensors.numpy, "save", panic)        # saving: caught, a ValueError
    with pytest.raises(ValueError, match="PanicException"):
        sn.save(model, tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists() and files.temporary_files(tmp_path) == []


# ----- conv geometry ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("options, words", [(dict(stride=-1), "stride"), (dict(stride=0), "stride"),
                                            (dict(padding=-1), "padding"),
                                            (dict(kernel_size=0), "kernel_size"),
                                            (dict(stride=(1, -2)), "stride"),
                                            (dict(stride=True), "stride")])
def test_conv_layers_refuse_impossible_geometry(kind, options, words):
    args = dict(in_channels=1, out_channels=2, kernel_size=3)
    args.update(options)
    with pytest.raises((ValueError, TypeError), match=words):
        if kind == "dense":
            sn.nn.Conv2d(**args)
        else:
            sn.nn.SparseConv2d(**args, sparsity=0.5)


def test_the_functional_conv_refuses_them_too():
    x = Tensor(np.ones((1, 1, 5, 5), np.float32))
    w = Tensor(np.ones((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="stride"):
        sn.nn.functional.conv2d(x, w, stride=-1)
    with pytest.raises(ValueError, match="padding"):
        sn.nn.functional.conv2d(x, w, padding=(0, -1))


def test_the_issue_conv_reproducers_refuse():
    with pytest.raises(ValueError, match="stride"):
        sn.nn.Conv2d(1, 1, 3, stride=-1)
    with pytest.raises(ValueError, match="kernel_size"):
        sn.nn.Conv2d(1, 2, 0)


# ----- atomic saves -------------------------------------------------------------------------------
def test_save_replaces_through_a_symlink_and_keeps_it(tmp_path):
    target = tmp_path / "real" / "m.safetensors"
    target.parent.mkdir()
    link = tmp_path / "link.safetensors"
    sn.save(sparse_mlp(), target)
    link.symlink_to(target)
    second = build_model("mlp:784-32-10")
    sn.save(second, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(sn.load(target).state_dict()["1.weight"],
                                  second.state_dict()["1.weight"])
    assert files.temporary_files(tmp_path) == [] and files.temporary_files(target.parent) == []


def test_save_onto_a_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        sn.save(sparse_mlp(), tmp_path / "d")


CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import sparsenet as sn
    from sparsenet import files
    path, mode = sys.argv[1], sys.argv[2]
    model = sn.nn.build_model("mlp:784-64-10")
    if mode == "kill":                          # SIGKILL halfway through writing the bytes
        original = files._write_all
        def half_then_die(fd, data):
            original(fd, memoryview(data)[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        files._write_all = half_then_die
        sn.save(model, path)
    else:                                       # save over and over (a concurrent writer)
        for _ in range(int(mode)):
            sn.save(model, path)
""")


def child(path, mode):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(mode)],
                            stderr=subprocess.PIPE)


def test_sigkill_mid_save_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "m.safetensors"
    old = sparse_mlp()
    sn.save(old, path)
    before = path.read_bytes()
    proc = child(path, "kill")
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before                            # the old file, whole
    if files.unnamed_files_supported(tmp_path):                   # O_TMPFILE: nothing at all
        assert files.temporary_files(tmp_path) == []
    sn.save(old, path)                                            # elsewhere the next save cleans
    assert files.temporary_files(tmp_path) == [] and sn.load(path).spec == old.spec


def test_two_concurrent_savers_leave_one_whole_file(tmp_path):
    path = tmp_path / "m.safetensors"
    procs = [child(path, 15) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    assert sn.load(path).spec == "mlp:784-64-10"
    assert files.temporary_files(tmp_path) == []
