"""Deep Compression: weight sharing, centroid fine-tuning, the whole pipeline to a file and
back, the codebook layers, the command line and the energy estimate."""
import json

import numpy as np
import pytest

import sparsenet as sn
from sparsenet import cli, metrics
from sparsenet.algorithms import get_method
from sparsenet.algorithms.deep_compression import (PAPER_DENSITIES, SharedWeights, kmeans_1d,
                                                   share_weights)
from sparsenet.compressed_model import load_compressed, save_compressed
from sparsenet.nn.codebook_layers import CodebookConv2d, CodebookLinear
from sparsenet.train import TrainConfig, train_model

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = dict(rounds=2, retrain_epochs=1, finetune_epochs=1)


# ----- weight sharing ----------------------------------------------------------------------------
def test_kmeans_starts_linear_and_finds_separated_clusters(rng):
    weights = np.concatenate([rng.normal(c, 0.01, 50) for c in (-1.0, 0.2, 3.0)])
    centroids, index = kmeans_1d(weights, 3, max_iter=1)          # one assignment: linear init
    np.testing.assert_allclose(np.sort(centroids)[[0, 2]], [-1.0, 3.0], atol=0.05)
    centroids, index = kmeans_1d(weights, 3)
    np.testing.assert_allclose(centroids, [-1.0, 0.2, 3.0], atol=0.01)
    np.testing.assert_array_equal(index, np.repeat([0, 1, 2], 50))


def test_share_weights_maps_each_weight_to_its_nearest_used_centroid(rng):
    values = rng.standard_normal(500).astype(np.float32)
    codes, codebook = share_weights(values, 3)
    assert codes.dtype == np.uint8 and codebook.dtype == np.float32 and codebook.size <= 8
    assert set(np.unique(codes)) == set(range(codebook.size))    # no empty cluster is kept
    nearest = np.abs(values[:, None] - codebook[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(codes, nearest)
    means = [values[codes == k].mean() for k in range(codebook.size)]
    np.testing.assert_allclose(codebook, means, rtol=1e-5, atol=1e-6)   # Lloyd's fixed point


def test_centroid_gradient_is_the_sum_of_its_members_and_members_stay_shared(rng):
    layer = sn.nn.SparseLinear(6, 4, density=0.75, rng=rng)
    values = layer.values.data
    codes = (np.arange(values.size) % 3).astype(np.uint8)
    codebook = np.array([-0.5, 0.1, 0.7], np.float32)
    values[...] = codebook[codes]
    quantization = {"w": (codes, codebook, 2)}
    shared = SharedWeights({"w": layer}, quantization)
    x = sn.Tensor(rng.standard_normal((5, 6)).astype(np.float32))
    loss = (layer(x) * layer(x)).sum()
    loss.backward()
    grad = layer.values.grad.copy()                              # each weight's own gradient
    shared.after_backward(0)
    want = np.array([grad[codes == k].sum() for k in range(3)], np.float32)[codes]
    np.testing.assert_allclose(layer.values.grad, want, rtol=1e-6)            # eq. 3
    opt = sn.optim.SGD([layer.values], lr=0.01, momentum=0.9, weight_decay=1e-3)
    for step in range(3):
        if step:
            layer.values.grad = grad.copy()
            shared.after_backward(step)
        opt.step()                                # momentum and weight decay, elementwise
        stepped = layer.values.data.copy()
        shared.after_step(step)
        np.testing.assert_array_equal(layer.values.data, stepped)     # members moved alike
    new_codebook = quantization["w"][1]
    np.testing.assert_array_equal(layer.values.data, new_codebook[codes])
    first = -0.01 * np.array([grad[codes == k].sum() for k in range(3)]) - 0.01 * 1e-3 * codebook
    assert np.sign(new_codebook - codebook).tolist() == np.sign(first).tolist()


# ----- the pipeline ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("dc") / "lenet300.sndc"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSENET_FAST", "1")
        config = TrainConfig(method="deep_compression", epochs=1, data="subset", progress=False,
                             method_options=dict(QUICK, out=str(path)))
        model, record = train_model(config, log=None)
    return model, record, path


def test_pipeline_reaches_the_papers_densities_and_bits(compressed_run):
    model, record, path = compressed_run
    report = record["deep_compression"]
    densities = [layer["kept"] / layer["weights"] for layer in report["pruned"]["layers"]]
    np.testing.assert_allclose(densities, PAPER_DENSITIES["lenet300"], atol=1e-3)
    for row in report["quantized"]["layers"]:
        assert row["weight_bits"] == 6 and row["index_bits"] == 5 and row["clusters"] <= 64
    assert [h["phase"] for h in record["history"]] == ["dense", "prune 1", "prune 2", "centroids"]
    assert record["method"] == "deep_compression" and "energy" in record


def test_the_ratio_is_the_files_bytes(compressed_run):
    model, record, path = compressed_run
    report = record["deep_compression"]
    assert report["quantized"]["file_bytes"] == path.stat().st_size
    assert report["dense_file_bytes"] > 1_000_000                 # 266,610 float32 and a header
    assert report["ratios"]["huffman_file"] == report["dense_file_bytes"] / path.stat().st_size
    assert report["ratios"]["huffman_file"] > report["ratios"]["quantized_file"] > \
        report["ratios"]["pruned_file"] > 1


def test_decoding_gives_exactly_the_quantized_model(compressed_run):
    model, record, path = compressed_run
    decoded = load_compressed(path, form="csr")
    for (name, a), (_, b) in zip(model.state_dict().items(), decoded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert record["deep_compression"]["quantized"]["decodes_exactly"]


def test_evaluating_from_the_file_reproduces_the_accuracy(compressed_run, fast_mode):
    model, record, path = compressed_run
    report = record["deep_compression"]["quantized"]
    assert report["accuracy_from_file"] == report["test_accuracy"] == record["test_accuracy"]
    codebook_model = load_compressed(path)
    assert all(isinstance(m, CodebookLinear) for n, m in codebook_model.named_modules()
               if n in ("1", "3", "5"))
    x = np.random.default_rng(1).random((7, 1, 28, 28)).astype(np.float32)
    with sn.no_grad():
        np.testing.assert_allclose(codebook_model(sn.Tensor(x)).data, model(sn.Tensor(x)).data,
                                   rtol=1e-5, atol=1e-5)


def test_a_conv_model_round_trips_through_the_file(tmp_path, rng):
    model = sn.sparsify(sn.nn.build_model("lenet5", rng=rng), sparsity=0.8, from_dense=True)
    method = get_method("deep_compression", sparsity=0.8)
    method.quantize(model, method.layer_bits(model))
    assert [b for _, _, b in method.quantization.values()] == [8, 8, 5, 5]    # Table 3's bits
    path = tmp_path / "lenet5.sndc"
    save_compressed(model, path, method.quantization, {n: 5 for n in method.quantization})
    codebook_model, csr_model = load_compressed(path), load_compressed(path, form="csr")
    assert isinstance(codebook_model.get_submodule("0"), CodebookConv2d)
    x = sn.Tensor(rng.random((3, 1, 28, 28)).astype(np.float32))
    with sn.no_grad():
        want = model(x).data
        np.testing.assert_array_equal(csr_model(x).data, want)
        np.testing.assert_allclose(codebook_model(x).data, want, rtol=1e-5, atol=1e-5)


def test_saving_refuses_values_that_are_not_the_codebooks(rng):
    model = sn.sparsify(sn.nn.build_model("lenet300", rng=rng), sparsity=0.9, from_dense=True)
    codes = np.zeros(model.get_submodule("1").weight.nnz, np.uint8)
    with pytest.raises(ValueError, match="codebook"):
        save_compressed(model, "unused.sndc", {"1": (codes, np.ones(1, np.float32), 1)}, {"1": 5})


@pytest.mark.parametrize("options, match", [
    (dict(bits=9), "bits"), (dict(bits=[6, 6]), "one value per layer"),
    (dict(densities=[0.1, 0.1, 1.5]), "densities"), (dict(format="block"), "csr"),
    (dict(rounds=0), "rounds"), (dict(centroid_lr=-1.0), "centroid_lr"),
])
def test_bad_options_are_refused(options, match):
    model = sn.nn.build_model("lenet300")
    with pytest.raises(ValueError, match=match):
        method = get_method("deep_compression", **options)
        method.layer_bits(model), method.target_densities(model)


def test_a_model_without_paper_densities_needs_a_sparsity():
    with pytest.raises(ValueError, match="sparsity"):
        get_method("deep_compression").target_densities(sn.nn.build_model("conv2"))


# ----- command line ------------------------------------------------------------------------------
def test_compress_then_evaluate_from_the_command_line(tmp_path, fast_mode, capsys):
    out, rec = tmp_path / "m.sndc", tmp_path / "m.json"
    args = ["compress", "--model", "lenet300", "--data", "subset", "--epochs", "1", "--bits", "5",
            "--no-progress", "--out", str(out), "--json", str(rec)]
    args += [f"--opt={k}={v}" for k, v in QUICK.items()]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "ip1 (paper)" in printed and "+ Huffman coding (the file)" in printed
    record = json.loads(rec.read_text())
    assert all(r["weight_bits"] == 5 for r in record["deep_compression"]["quantized"]["layers"])
    assert cli.main(["evaluate", str(out), "--data", "subset", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["test_accuracy"] == record["test_accuracy"]
    assert result["file_bytes"] == out.stat().st_size and result["format"] == "deep-compression"
    assert len(result["per_class_accuracy"]) == 10


def test_evaluate_reads_safetensors_and_refuses_a_broken_file(tmp_path, fast_mode, capsys):
    model = sn.nn.build_model("lenet300")
    sn.save(model, tmp_path / "dense.safetensors")
    assert cli.main(["evaluate", str(tmp_path / "dense.safetensors"), "--data", "subset"]) == 0
    assert "safetensors" in capsys.readouterr().out
    broken = tmp_path / "broken.sndc"
    broken.write_bytes(b"SNDCMP\x00\x01" + b"\xff\xff\x00\x00{}")
    assert cli.main(["evaluate", str(broken), "--data", "subset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0] and "header" in err[0]


def test_compress_checks_the_model_it_starts_from(tmp_path, capsys):
    sn.save(sn.nn.build_model("lenet5"), tmp_path / "l5.safetensors")
    code = cli.main(["compress", "--model", "lenet300", "--from", str(tmp_path / "l5.safetensors"),
                     "--out", str(tmp_path / "x.sndc")])
    assert code == 2 and "lenet5" in capsys.readouterr().err
    assert cli.main(["compress", "--bits", "six", "--out", str(tmp_path / "x.sndc")]) == 2


# ----- energy ------------------------------------------------------------------------------------
def test_energy_by_hand_for_the_dense_lenet300():
    energy = metrics.inference_energy(sn.nn.build_model("lenet300"), (1, 28, 28))
    first, second, last = energy["layers"]
    assert (first["memory"], second["memory"], last["memory"]) == ("dram", "sram", "sram")
    assert first["weight_bytes"] == 300 * 784 * 4 and first["macs"] == 300 * 784
    assert first["fetch_pj"] == pytest.approx(300 * 784 * 640)          # one 32-bit read each
    assert second["fetch_pj"] == pytest.approx(100 * 300 * 5)
    assert last["arithmetic_pj"] == pytest.approx(10 * 100 * (3.7 + 0.9))
    assert energy["total_pj"] == pytest.approx(sum(r["total_pj"] for r in energy["layers"]))


def test_energy_counts_conv_positions_and_a_files_bytes():
    model = sn.nn.build_model("lenet5")
    energy = metrics.inference_energy(model, (1, 28, 28), storage_bytes={"0": 100})
    conv1 = energy["layers"][0]
    assert conv1["macs"] == 20 * 25 * 24 * 24 and conv1["weight_bytes"] == 100
    assert conv1["fetch_pj"] == pytest.approx(100 * 8 / 32 * 5)


def test_the_benchmarks_settings_are_options_the_method_takes():
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import compression
    from common import split_settings
    cells = list(compression.SETTINGS.values()) + [c for g in compression.GRIDS.values() for c in g]
    for cell in cells:
        get_method("deep_compression", **split_settings(cell)[1])   # raises on a typo
    assert compression.name_of({"bits": 4, "densities": [0.07, 0.09]}, 1) == \
        "dc-bits4-densities0.07_0.09-s1"


def test_a_global_sparsity_prunes_in_rounds_to_its_target(rng):
    model = sn.nn.build_model("lenet300", rng=rng)
    method = get_method("deep_compression", sparsity=0.9, rounds=3)
    kept = []
    for r in (1, 2, 3):
        method.prune(model, r, method.target_densities(model))
        kept.append(metrics.sparsity_summary(model)["density"])
    np.testing.assert_allclose(kept, [0.1 ** (1 / 3), 0.1 ** (2 / 3), 0.1], rtol=1e-4)
    assert all(layer.weight.density >= 0.01 for _, layer in
               [(n, model.get_submodule(n)) for n in ("1", "3", "5")])


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "missing.sndc"], "missing.sndc"),
    (["evaluate", "DIR"], "DIR"),
    (["compress", "--out", "DIR"], "--out"),
    (["compress", "--bits", "conv=x", "--out", "x.sndc"], "--bits"),
    (["compress", "--bits", "gpu=8", "--out", "x.sndc"], "--bits"),
    (["compress", "--densities", "0.1,a,0.2", "--out", "x.sndc"], "--densities"),
    (["compress", "--from", "missing.safetensors", "--out", "x.sndc"], "missing.safetensors"),
    (["compress", "--bits", "9", "--out", "x.sndc", "--data", "subset", "--epochs", "1"], "bits"),
])
def test_bad_command_lines_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sparsenet {argv[0]}: error:"), captured.err
    assert needle in err[0]
    assert not (tmp_path / "x.sndc").exists()


def test_evaluate_refuses_a_cut_compressed_file_in_one_line(compressed_run, tmp_path, capsys):
    model, record, path = compressed_run
    cut = tmp_path / "cut.sndc"
    cut.write_bytes(path.read_bytes()[:-100])
    assert cli.main(["evaluate", str(cut), "--data", "subset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cut) in err[0]
