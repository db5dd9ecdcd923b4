"""The engine on a GPU: model.to("cuda"), training steps, topology updates, optimizer state,
evaluation, saving and loading, `sparsenet train --device cuda`.

Most of these need a real NVIDIA GPU with CuPy (`needs_gpu`: skipped elsewhere, run by
benchmarks/gpu_check.sh). What runs everywhere: `import sparsenet` needs neither CuPy nor
numba.cuda, `--device cuda` without a GPU is a one-line error, and the sparse layers' products
through the gpu kernels (in the CUDA simulator without a GPU) equal the cpu kernels' - a test
of the engine's calls into the gpu backend, not of a device.
"""
import subprocess
import sys

import numpy as np
import pytest

import sparsenet as sn
from gpu_target import TARGET, cupy, kernels, needs_gpu, needs_target
from sparsenet import backend
from sparsenet.nn import Linear, ReLU, Sequential, SparseLinear


def test_import_sparsenet_needs_neither_cupy_nor_numba_cuda():
    code = ("import sys, sparsenet, sparsenet.train, sparsenet.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'numba_cuda') "
            "or m.startswith('numba.cuda')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.skipif(cupy is not None, reason="a GPU is present")
def test_device_cuda_without_a_gpu_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "sparsenet.cli", "train", "--device", "cuda",
                             "--epochs", "1", "--data", "subset", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "device cuda needs CuPy and an NVIDIA GPU" in result.stderr


def mixed_model(rng):
    """Every sparse format and a dense layer, in one small network."""
    return Sequential(SparseLinear(12, 8, density=0.4, format="csr", rng=rng), ReLU(),
                      SparseLinear(8, 8, density=0.5, format="block", block_size=2, rng=rng), ReLU(),
                      SparseLinear(8, 8, format="nm", n=2, m=4, rng=rng), ReLU(),
                      SparseLinear(8, 6, density=0.5, format="masked", rng=rng), ReLU(),
                      Linear(6, 3, rng=rng))


def forward_backward(model, x, y):
    model.zero_grad()
    loss = sn.nn.functional.cross_entropy(model(sn.Tensor(x)), y)
    loss.backward()
    return loss.item(), [backend.to_numpy(p.grad) for p in model.parameters()]


@needs_target
def test_sparse_layer_products_through_the_gpu_kernels(monkeypatch, rng):
    """The layers call the gpu backend exactly as they call the cpu one (the gpu kernels run
    here on NumPy arrays: in the simulator without a GPU)."""
    model = mixed_model(rng)
    x, y = rng.standard_normal((5, 12)).astype(np.float32), rng.integers(0, 3, 5)
    want_loss, want_grads = forward_backward(model, x, y)
    want_growth = model[0].dense_grad_topk(*_layer_io(model, x, y), k=4)
    gpu = kernels()
    from sparsenet.sparse import base, block, csr, nm, topology    # noqa: F401 - patched below
    for module in (base, csr, block, nm):
        monkeypatch.setattr(module, "kernels_for", lambda *arrays: gpu)
    got_loss, got_grads = forward_backward(model, x, y)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    rows, cols, scores = model[0].dense_grad_topk(*_layer_io(model, x, y), k=4)
    np.testing.assert_array_equal(rows, want_growth[0])
    np.testing.assert_array_equal(cols, want_growth[1])
    np.testing.assert_allclose(scores, want_growth[2], rtol=1e-5)   # the backward's sum order


def _layer_io(model, x, y):
    """(gradient of the loss at the first layer's output, its input): dense_grad_topk's input."""
    with sn.no_grad():
        first = model[0](sn.Tensor(x)).data
    holder = out = sn.Tensor(first, requires_grad=True)
    for layer in list(model)[1:]:
        out = layer(out)
    sn.nn.functional.cross_entropy(out, y).backward()
    return holder.grad, x


# ----- on a real GPU --------------------------------------------------------------------------

@needs_gpu
def test_model_to_cuda_moves_every_array_and_matches_the_cpu(rng):
    cpu_model = mixed_model(rng)
    gpu_model = mixed_model(np.random.default_rng(0))
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to("cuda")
    for p in gpu_model.parameters():
        assert p.device == "cuda"
    for layer in list(gpu_model)[0:7:2]:
        assert all(isinstance(a, cupy.ndarray) for a in layer.weight.kernel_index("cuda"))
    csc = gpu_model[0].weight._device_copies()["transposed"]             # the CSC permutation
    assert all(isinstance(a, cupy.ndarray) for a in csc)
    x, y = rng.standard_normal((9, 12)).astype(np.float32), rng.integers(0, 3, 9)
    want_loss, want_grads = forward_backward(cpu_model, x, y)
    got_loss, got_grads = forward_backward(gpu_model, cupy.asarray(x), cupy.asarray(y))
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    gpu_model.to("cpu")
    assert all(p.device == "cpu" for p in gpu_model.parameters())
    assert np.isclose(forward_backward(gpu_model, x, y)[0], want_loss, rtol=1e-5)


@needs_gpu
@pytest.mark.parametrize("make_optimizer", [
    lambda ps: sn.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4),
    lambda ps: sn.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: sn.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    lambda ps: sn.optim.AdamW(ps, lr=1e-2)], ids=["sgd", "nesterov", "adam", "adamw"])
def test_optimizer_steps_and_state_on_the_gpu_match_the_cpu(make_optimizer, rng):
    cpu_model = mixed_model(rng)
    gpu_model = mixed_model(np.random.default_rng(0))
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to("cuda")
    opts = make_optimizer(cpu_model.parameters()), make_optimizer(gpu_model.parameters())
    x, y = rng.standard_normal((9, 12)).astype(np.float32), rng.integers(0, 3, 9)
    for _ in range(3):
        for model, opt, xs, ys in ((cpu_model, opts[0], x, y),
                                   (gpu_model, opts[1], cupy.asarray(x), cupy.asarray(y))):
            forward_backward(model, xs, ys)
            opt.step()
    for a, b in zip(gpu_model.parameters(), cpu_model.parameters()):
        np.testing.assert_allclose(backend.to_numpy(a.data), b.data, rtol=1e-4, atol=1e-6)
    for state in opts[1].state.values():
        assert all(isinstance(v, cupy.ndarray) for k, v in state.items() if k != "step")


@needs_gpu
@pytest.mark.parametrize("format", ["csr", "block", "nm", "masked"])
def test_topology_update_on_the_gpu(format, rng):
    options = {"block": dict(block_size=2, density=0.5), "nm": dict(n=2, m=4),
               "csr": dict(density=0.4), "masked": dict(density=0.4)}[format]
    layers = [SparseLinear(8, 8, format=format, rng=np.random.default_rng(1), **options)
              for _ in range(2)]
    layers[1].to("cuda")
    opts = [sn.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9) for layer in layers]
    x = rng.standard_normal((4, 8)).astype(np.float32)
    for layer, opt, xs in zip(layers, opts, (x, cupy.asarray(x))):
        layer(sn.Tensor(xs)).sum().backward()
        opt.step()
        w = layer.weight
        drop = np.zeros(w.n_units, bool)
        drop[:2] = True
        if format == "nm":                           # grow back in the groups that lost a unit
            rows, cols = w.unit_coords()
            grow_rows, grow_cols = _free_in_same_group(w, rows[drop], cols[drop])
        else:
            free = np.flatnonzero(~_unit_mask(w).ravel())[:2]
            grow_rows, grow_cols = np.divmod(free, w.unit_grid[1])
        new, new_from_old = w.update(drop, grow_rows, grow_cols)
        assert new.device == layer.values.device
        layer.set_topology(new, new_from_old, opt)
        layer(sn.Tensor(xs)).sum().backward()
        opt.step()
    assert isinstance(opts[1].state[id(layers[1].values)]["momentum"], cupy.ndarray)
    np.testing.assert_allclose(backend.to_numpy(layers[1].values.data), layers[0].values.data,
                               rtol=1e-5, atol=1e-6)


def _unit_mask(w):
    mask = np.zeros(w.unit_grid, bool)
    mask[w.unit_coords()] = True
    return mask


def _free_in_same_group(w, rows, cols):
    mask, out_rows, out_cols = w.mask(), [], []
    for r, c in zip(rows, cols):
        g0 = (c // w.m) * w.m
        free = [g0 + o for o in range(w.m) if not mask[r, g0 + o]]
        out_rows.append(r)
        out_cols.append(free[0])
        mask[r, free[0]] = True
    return np.array(out_rows), np.array(out_cols)


@needs_gpu
@pytest.mark.parametrize("method, options", [("dense", {}), ("rigl", {"delta_t": 4})])
def test_training_on_the_gpu_gives_the_cpu_losses(method, options, fast_mode):
    from sparsenet.train import TrainConfig, train_model
    records = {}
    for device in ("cpu", "cuda"):
        config = TrainConfig(model="lenet300", method=method, sparsity=0.9 if method != "dense" else 0,
                             epochs=2, batch_size=100, data="subset", device=device, progress=False,
                             method_options=dict(options))
        model, records[device] = train_model(config, log=None)
    losses = [[h["loss"] for h in records[d]["history"]] for d in ("cpu", "cuda")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=5e-4)    # float32, other sum orders
    accs = [[h["test_accuracy"] for h in records[d]["history"]] for d in ("cpu", "cuda")]
    np.testing.assert_allclose(accs[1], accs[0], atol=0.01)
    assert records["cuda"]["versions"]["gpu"]
    if method == "rigl":
        assert records["cuda"]["method_details"]["n_updates"] > 0


@needs_gpu
def test_save_and_load_a_gpu_model(tmp_path, rng):
    model = sn.sparsify(sn.nn.build_model("lenet300"), sparsity=0.9, format="csr", rng=rng)
    model.to("cuda")
    path = tmp_path / "m.safetensors"
    sn.save(model, path)
    loaded = sn.load(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    loaded.to("cuda")
    back_on_gpu = sn.nn.build_model("lenet300")
    sn.sparsify(back_on_gpu, sparsity=0.9, format="csr", rng=np.random.default_rng(5))
    back_on_gpu.to("cuda").load_state_dict(model.state_dict())
    assert all(p.device == "cuda" for p in back_on_gpu.parameters())
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    want = backend.to_numpy(model(sn.Tensor(cupy.asarray(x))).data)
    np.testing.assert_allclose(backend.to_numpy(back_on_gpu(sn.Tensor(cupy.asarray(x))).data),
                               want, rtol=1e-5, atol=1e-6)


@needs_gpu
def test_cli_train_on_the_gpu(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparsenet.cli", "train", "--device", "cuda",
                             "--method", "rigl", "--sparsity", "0.9", "--epochs", "1",
                             "--data", "subset", "--no-progress", "--save", str(tmp_path / "m")],
                            capture_output=True, text=True, timeout=600,
                            env={**__import__("os").environ, "SPARSENET_FAST": "1"})
    assert result.returncode == 0, result.stderr
    assert "rigl" in result.stdout
    assert TARGET == "gpu"
