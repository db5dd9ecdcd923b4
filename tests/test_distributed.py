"""Data-parallel training on MPI (issue 16): `mpiexec -n 2 ... --distributed` on loopback.

Two ranks with global batch B give the same losses, accuracies, topology and weights as one
process with batch B (to float tolerance: the gradient is summed in another order). Each run
is tiny (a 784-16-10 MLP, 2 epochs of 4 batches of the bundled subset in fast mode). The
single-process references are trained in this process first, which also fills Numba's cache,
so the ranks load compiled kernels; then every mpiexec job starts at once (as in
test_resume.py), and each test waits for its own. Skipped, saying so, without the mpi extra.
"""
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sparsenet import cli, io
from sparsenet.distributed import data_summary, differences, topology_checksums

MPIEXEC = Path(sys.executable).parent / "mpiexec"     # the mpich wheel puts it beside python
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC.exists() or shutil.which("mpiexec") is not None
except ImportError:
    HAVE_MPI = False
if not HAVE_MPI and os.environ.get("SPARSENET_REQUIRE_MPI"):   # `make test` installs the extra
    raise RuntimeError("SPARSENET_REQUIRE_MPI is set but mpi4py or mpiexec is missing: "
                       "pip install -e '.[mpi]' (mpi4py and the mpich wheel)")
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="the mpi extra is not installed "
                               "(pip install -e '.[mpi]': mpi4py and the mpich wheel)")

BASE = ["train", "--data", "subset", "--no-progress", "--model", "mlp:784-16-10",
        "--epochs", "2", "--batch-size", "250"]
RUNS = {          # dense; SET (shared random stream); RigL with uneven parts (249 = 124 + 125,
    "dense": ["--method", "dense"],                        # the last batch 4 = 2 + 2) and
    "set": ["--method", "set", "--sparsity", "0.8", "--opt", "delta_t=2"],   # 4-row chunks
    "rigl": ["--method", "rigl", "--sparsity", "0.8", "--opt", "delta_t=2", "--opt",
             "chunk_rows=4", "--batch-size", "249"],
}
TIMINGS = {"seconds", "train_seconds", "build_seconds", "peak_rss_bytes", "samples_per_second",
           "resumed_from", "threads", "distributed"}

# Runs under mpiexec: each argument is a JSON list of `sparsenet` argvs, run in turn. Rank 1
# can be sent a signal during step k (SPARSENET_TEST_SIGNAL=SIGINT:k: Ctrl-C; SIGSTOP: it hangs;
# SIGKILL: it dies) or report another version (SPARSENET_TEST_VERSION), as a rank started
# from another install would.
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import sparsenet
    from sparsenet import cli
    from sparsenet.algorithms import base
    rank = int(os.environ.get("PMI_RANK", "0"))
    if rank == 1 and os.environ.get("SPARSENET_TEST_VERSION"):
        sparsenet.__version__ = os.environ["SPARSENET_TEST_VERSION"]
    count, after_backward = [0], base.Method.after_backward
    signal.signal(signal.SIGINT, signal.default_int_handler)
    SIGNALS = {"SIGINT": signal.SIGINT, "SIGSTOP": signal.SIGSTOP, "SIGKILL": signal.SIGKILL}
    send, at = os.environ.get("SPARSENET_TEST_SIGNAL", "SIGINT:0").split(":")

    def pressed(self, step):          # rank 1 gets `send` during step `at`
        count[0] += 1
        if rank == 1 and count[0] == int(at):
            os.kill(os.getpid(), SIGNALS[send])
        return after_backward(self, step)

    base.Method.after_backward = pressed
    if rank == 1 and os.environ.get("SPARSENET_TEST_DRIFT"):      # rank 1's mask drifts once
        from sparsenet import distributed
        check_topology = distributed.Communicator.check_topology

        def drifted(self, model):
            if not count[1:]:                 # move row 0's first connection to a free column
                count.append(1)
                import numpy as np
                from sparsenet.sparse import CSR
                w = model[1].weight                        # the first sparse layer's
                row = w.indices[w.indptr[0]:w.indptr[1]]
                free = np.setdiff1d(np.arange(w.shape[1]), row)[0]
                indices = w.indices.copy()
                indices[:row.size] = np.sort(np.append(row[1:], free))
                model[1].set_topology(CSR(w.indptr, indices, w.values.copy(), w.shape),
                                      np.arange(w.nnz))
            return check_topology(self, model)

        distributed.Communicator.check_topology = drifted
    for argv in sys.argv[1:]:
        code = cli.main(json.loads(argv))
        if code:
            sys.exit(code)
""")


def mpiexec():
    return str(MPIEXEC) if MPIEXEC.exists() else shutil.which("mpiexec")


def rank_command(*argvs, env=()):
    """The mpiexec arguments of one rank group running CHILD on `argvs`."""
    out = []
    for name, value in env:
        out += ["-env", name, value]
    return out + [sys.executable, "-c", CHILD] + [json.dumps(a + ["--distributed"]) for a in argvs]


def command_of(*groups):
    """mpiexec with one or more rank groups (MPMD: 'A : B' gives rank 0 A and rank 1 B)."""
    command = [mpiexec()]
    for i, group in enumerate(groups):
        command += ([":"] if i else []) + ["-n", str(group[0])] + group[1]
    return command


def run(*groups, env=None, timeout=240):
    """Run an mpiexec job to its end: (return code, stdout, stderr)."""
    done = subprocess.run(command_of(*groups), env={**os.environ, "SPARSENET_FAST": "1",
                                                    **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def run_argv(name, folder, *extra):
    return BASE + RUNS[name] + ["--json", str(folder / f"{name}.json"),
                                "--save", str(folder / f"{name}.safetensors")] + list(extra)


def rewrite_label(source: Path, target: Path):
    """A copy of the IDX data in `source` with the first training label changed."""
    shutil.copytree(source, target)
    labels = target / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8] = (raw[8] + 1) % 10                     # after the 8-byte IDX header
    labels.write_bytes(gzip.compress(bytes(raw)))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """References in this process, then every mpiexec job, two at a time (ranks waiting in
    MPI_Init spin, and many at once on two cores starve each other): {name: (folder, Future)}."""
    if not HAVE_MPI:
        pytest.skip("the mpi extra is not installed")
    os.environ["SPARSENET_FAST"] = "1"
    try:
        single = tmp_path_factory.mktemp("single")
        for name in RUNS:
            assert cli.main(run_argv(name, single)) == 0
    finally:
        del os.environ["SPARSENET_FAST"]
    specs = {}
    folder = tmp_path_factory.mktemp("ranks")
    specs["equivalence"] = (folder, [(2, rank_command(*[run_argv(n, folder) for n in RUNS]))], {})
    folder = tmp_path_factory.mktemp("resume")
    argv = BASE + RUNS["rigl"] + ["--checkpoint", str(folder / "ck")]
    specs["ctrl-c"] = (folder, [(2, rank_command(argv))], {"SPARSENET_TEST_SIGNAL": "SIGINT:3"})
    dense = BASE + RUNS["dense"]
    specs["config"] = (None, [(1, rank_command(dense)),
                              (1, rank_command([a if a != "250" else "125" for a in dense]))], {})
    drift = BASE + RUNS["set"]
    specs["drift"] = (None, [(2, rank_command(drift))], {"SPARSENET_TEST_DRIFT": "1"})
    specs["version"] = (None, [(2, rank_command(dense))], {"SPARSENET_TEST_VERSION": "0.0.1"})
    data = tmp_path_factory.mktemp("data")
    bundled = Path(cli.__file__).parent / "data" / "bundled"
    shutil.copytree(bundled, data / "a")
    rewrite_label(bundled, data / "b")
    auto = [a if a != "subset" else "auto" for a in dense]
    specs["data"] = (None, [(1, rank_command(auto, env=[("SPARSENET_DATA", str(data / "a"))])),
                            (1, rank_command(auto, env=[("SPARSENET_DATA", str(data / "b"))]))], {})
    specs["alone"] = (None, [(1, rank_command(dense)),
                             (1, rank_command(dense[:2] + ["/nonexistent"] + dense[3:]))], {})
    specs["unborn"] = (None, [(1, rank_command(dense + ["--mpi-timeout", "5"])),
                              (1, rank_command(dense + ["--no-such-option"]))], {})
    specs["stopped"] = (None, [(2, rank_command(dense + ["--mpi-timeout", "3"]))],
                        {"SPARSENET_TEST_SIGNAL": "SIGSTOP:3"})
    specs["killed"] = (None, [(2, rank_command(dense))], {"SPARSENET_TEST_SIGNAL": "SIGKILL:3"})
    pool = ThreadPoolExecutor(max_workers=2)
    out = {"single": (single, None)}
    out.update({name: (folder, pool.submit(run, *groups, env=env))
                for name, (folder, groups, env) in specs.items()})
    yield out
    pool.shutdown(cancel_futures=True)
    for pid in rank_pids(1):                 # a stopped rank the job left behind
        os.kill(pid, signal.SIGKILL)


def finish(jobs, name):
    folder, future = jobs[name]
    return (folder, *future.result())


def same(a, b, path=""):
    """Records equal, floats to 1e-5 relative (timings and the run's shape left out)."""
    if isinstance(a, dict):
        assert set(a) - TIMINGS == set(b) - TIMINGS, path
        for key in set(a) - TIMINGS:
            if path == ".hyperparameters" and key == "threads":
                continue
            same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), path
    else:
        assert a == b, path


def rank_pids(rank):
    """Process ids of this module's ranks numbered `rank` (read from /proc: PMI_RANK and the
    CHILD script in their environment and command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in environ and b"SPARSENET_TEST_SIGNAL" in command:
                found.append(int(entry.name))
    return found


# ----- without MPI: the pieces ---------------------------------------------------------------
def test_differences_name_every_leaf_that_differs():
    first = {"config": {"lr": 0.05, "seed": 0}, "versions": {"numpy": "2.0"}}
    other = {"config": {"lr": 0.1, "seed": 0}, "versions": {}}
    assert differences(first, other) == ["config.lr is 0.1 there, 0.05 on rank 0",
                                         "versions.numpy is '<absent>' there, '2.0' on rank 0"]
    assert differences(first, first) == []


def test_data_summary_and_checksums_see_one_changed_number():
    x = np.zeros((4, 3), np.float32)
    data = (x, np.arange(4), x[:2], np.arange(2))
    changed = (x, np.array([0, 1, 2, 4]), x[:2], np.arange(2))
    assert data_summary(data)["x_train"] == data_summary(changed)["x_train"]
    assert data_summary(data)["y_train"] != data_summary(changed)["y_train"]
    from sparsenet.nn import SparseLinear, Sequential
    model = Sequential(SparseLinear(6, 4, sparsity=0.5), SparseLinear(4, 2, sparsity=0.5))
    before = topology_checksums(model)
    assert before.shape == (2, 2)
    model[1].values.data[0] += 1                         # a weight: the values' checksum moves
    after = topology_checksums(model)
    assert (after[0] == before[0]).all() and after[1, 0] == before[1, 0] != 0
    assert after[1, 1] != before[1, 1]


def test_mpi_timeout_is_for_distributed_runs(capsys):
    assert cli.main(BASE + ["--mpi-timeout", "5"]) == 2
    assert "--mpi-timeout is for --distributed runs" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_mpi_timeout_is_refused_before_mpi_starts(bad, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(BASE + ["--distributed", "--mpi-timeout", bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--mpi-timeout" in err and "seconds" in err and "Traceback" not in err


def test_at_99_percent_sparsity_the_reduced_buffer_is_under_a_fiftieth_of_dense():
    # what after_backward sums: every parameter's gradient (the stored values of a sparse
    # layer) and 4 counters; the 2-rank runs below check it is what was sent
    from sparsenet.algorithms import get_method
    from sparsenet.nn import build_model
    from sparsenet.nn.models import architecture, weight_shapes

    def buffer_bytes(model):
        return 4 * (sum(p.data.size for p in model.parameters()) + 4)

    dense = build_model("lenet300", input_shape=(1, 28, 28), num_classes=10)
    options = get_method("rigl", sparsity=0.99).build_options(
        weight_shapes(architecture("lenet300", (1, 28, 28), 10)))
    sparse = build_model("lenet300", input_shape=(1, 28, 28), num_classes=10, **options)
    assert buffer_bytes(sparse) <= buffer_bytes(dense) / 50


# ----- two ranks on loopback -----------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_give_the_single_process_run(name, jobs):
    single = jobs["single"][0]
    folder, code, out, err = finish(jobs, "equivalence")
    assert code == 0, err
    one = json.loads((single / f"{name}.json").read_text())
    two = json.loads((folder / f"{name}.json").read_text())
    same(one, two)
    assert two["distributed"]["ranks"] == 2 and two["distributed"]["steps"] == one["steps"]
    a, b = io.load(single / f"{name}.safetensors"), io.load(folder / f"{name}.safetensors")
    for (key, x), (_, y) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        if x.dtype.kind in "iub":                         # the topology: exactly the same
            np.testing.assert_array_equal(x, y, err_msg=key)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=key)
    if name != "dense":
        assert two["method_details"]["updates"] == one["method_details"]["updates"]


@needs_mpi
def test_the_sparse_gradient_buffer_is_the_stored_values_not_the_dense_matrix(jobs):
    folder, code, _, err = finish(jobs, "equivalence")
    assert code == 0, err
    rigl = json.loads((folder / "rigl.json").read_text())
    dense = json.loads((folder / "dense.json").read_text())
    sent = rigl["distributed"]["gradient_bytes_per_step"]
    assert sent == 4 * (rigl["parameters"] + 16 + 10 + 4)      # values + biases + 4 counters
    assert sent < 0.3 * dense["distributed"]["gradient_bytes_per_step"]
    assert rigl["distributed"]["growth_bytes"] > 0                 # growth summed chunk by chunk


@needs_mpi
def test_ctrl_c_on_one_rank_stops_every_rank_at_one_step_and_resume_continues(jobs):
    folder, code, out, err = finish(jobs, "ctrl-c")
    assert code == 130, err
    ck = folder / "ck"
    assert f"interrupted after 4 steps; checkpoint written to {ck}" in err   # rank 1 asked at 3
    assert os.listdir(folder) == ["ck"]                   # rank 1 wrote nothing of its own
    resumed = folder / "resumed.json"
    code, out, err = run((2, rank_command(BASE + RUNS["rigl"] + ["--resume", str(ck), "--json",
                                                                 str(resumed)])))
    assert code == 0, err
    record = json.loads(resumed.read_text())
    assert record["resumed_from"]["steps"] == 4
    same(json.loads((jobs["single"][0] / "rigl.json").read_text()), record)


@needs_mpi
@pytest.mark.parametrize("name, expected", [
    ("config", "rank 1 of 2 was started with other versions, settings or data than rank 0: "
               "config.batch_size is 125 there, 250 on rank 0"),
    ("version", "versions.sparsenet is '0.0.1' there, '0.1.0' on rank 0"),
    ("data", "data.y_train.blake2b is"),
])
def test_ranks_started_differently_are_refused_naming_the_difference(name, expected, jobs):
    _, code, out, err = finish(jobs, name)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparsenet train: error: "), err
    assert expected in lines[0]


@needs_mpi
def test_a_rank_whose_mask_drifts_is_caught_at_the_next_topology_check(jobs):
    # SET updates in the run's third step (delta_t=2, steps counted from 0 by the method, from 1
    # in messages); rank 1 changes one column index just before the check
    _, code, out, err = finish(jobs, "drift")
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["sparsenet train: error: after step 3 layer '1' has another topology "
                     "(mask) on rank 1 than on rank 0: the replicas drifted apart (a different "
                     "MPI reduction order, or a rank started differently)"], err


@needs_mpi
def test_an_error_on_one_rank_ends_every_rank_with_its_message(jobs):
    _, code, out, err = finish(jobs, "alone")
    assert code != 0
    assert "sparsenet train: error on rank 1 of 2: FileNotFoundError" in err
    assert "stopping every rank" in err


@needs_mpi
def test_a_rank_that_fails_before_mpi_starts_ends_the_job_after_the_timeout(jobs):
    _, code, out, err = finish(jobs, "unborn")
    assert code != 0
    assert "unrecognized arguments: --no-such-option" in err
    assert "sparsenet train: error on rank 0: MPI did not start within 5 s" in err


@needs_mpi
def test_a_rank_that_stops_answering_ends_the_job_after_the_timeout(jobs):
    _, code, out, err = finish(jobs, "stopped")
    assert code != 0
    assert ("sparsenet train: error on rank 0 of 2: no answer from the other ranks for 3 s in "
            "the gradient Allreduce of step 4: a rank died or hangs") in err


@needs_mpi
def test_a_killed_rank_ends_the_job_not_a_hang(jobs):
    _, code, out, err = finish(jobs, "killed")
    assert code != 0
