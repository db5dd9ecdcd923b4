"""Data-parallel training on MPI: every process a replica, the global batch split among them.

    mpiexec -n N sparsenet train ... --distributed

Each of the N processes (ranks) builds the same model from the same seed, so all hold the same
topology and values. At every step rank r takes the r-th contiguous part of the global batch
(the batch one process would take: the same data order), runs forward and backward on it, and
the ranks sum their gradients; then every rank holds the whole batch's gradient and takes the
step one process with the whole batch would take. What travels (mpi4py's buffer collectives on
NumPy arrays, which run near C speed; nothing is pickled):

- every step, one flat buffer in one `Allreduce`: the gradient of every parameter (a sparse
  layer's stored values, nnz long, never a dense matrix; dense layers' weights and biases),
  each scaled by the rank's share of the batch, then the loss, the correct and sample counts
  and a Ctrl-C flag, so every rank stops at the same step;
- on a RigL (or SRigL) update step, the dense gradient that growth scores, a chunk of rows at
  a time: G @ X.T is a sum over the batch, so the sum of the ranks' chunks is the batch's chunk
  (exact, one chunk in memory), summed before its top-k (sparse/topology.py `sum_chunks_with`);
- after every topology update, a checksum per layer of its indices and values, compared: a
  rank that drifted is an error, never a silently different model;
- at the start, each rank's versions, settings and a hash of its data, compared: a rank started
  differently is refused, naming the difference.
SET's random growth needs nothing: every rank draws it from the same seeded stream.

A rank that dies or hangs must not leave the others waiting: every collective is started
non-blocking and waited on with a deadline (`timeout`, `--mpi-timeout`); past it the rank says
which collective timed out and aborts the job (MPI_Abort). `command` (the CLI's entry) aborts
the job too when one rank raises an error the others do not share.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import select
import signal
import sys
import time
import zlib

import numpy as np

from . import threads

DEFAULT_TIMEOUT = 300.0        # seconds a rank waits in one collective before giving up
_current = None                # the Communicator of the run in progress


def current():
    """The active `Communicator` (inside `Communicator.running`), or None in one process."""
    return _current


def load_mpi(timeout=None):
    """mpi4py's MPI module (MPI started), or a clear error saying how to install it.

    MPI_Init waits for every rank of the job: one that failed before it joined (a bad
    argument) would leave it waiting for ever, holding the interpreter (no thread can run).
    So a forked watchdog process ends this one if MPI has not started within `timeout` s."""
    watchdog = _start_watchdog(timeout) if timeout and hasattr(os, "fork") else None
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as err:
        raise ValueError(f"--distributed needs mpi4py and an MPI library ({err}): install them "
                         "with pip install 'sparsenet[mpi]' (mpi4py and the mpich wheel)") from None
    finally:
        if watchdog is not None:
            pid, write_end = watchdog
            os.close(write_end)                      # the watchdog sees EOF and leaves
            os.waitpid(pid, 0)
    return MPI


def _start_watchdog(timeout):
    """(pid, pipe) of a child that kills this process unless the pipe closes within `timeout`."""
    parent, (read_end, write_end) = os.getpid(), os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    try:                                             # the child: wait, and maybe strike
        os.close(write_end)
        if not select.select([read_end], [], [], timeout)[0]:
            rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "?"))
            os.write(2, f"sparsenet train: error on rank {rank}: MPI did not start within "
                        f"{timeout:g} s: a rank of this job failed before it joined (its own "
                        "message says why) or cannot reach the others; stopping\n".encode())
            os.kill(parent, signal.SIGKILL)
    finally:
        os._exit(0)


class DistributedError(ValueError):
    """An error every rank raises at once (from the same collective result): none is left
    waiting, so the run ends cleanly with one message from rank 0."""


def differences(first, other, prefix="") -> list:
    """'key: A on rank 0, B there' for every leaf where two nested dicts differ."""
    if isinstance(first, dict) and isinstance(other, dict):
        out = []
        for key in sorted(set(first) | set(other)):
            out += differences(first.get(key, "<absent>"), other.get(key, "<absent>"),
                               f"{prefix}{key}.")
        return out
    return [] if first == other else [f"{prefix[:-1]} is {other!r} there, {first!r} on rank 0"]


def data_summary(data) -> dict:
    """Shapes, dtypes and a BLAKE2 hash of each array of `load_arrays` output."""
    out = {}
    for name, array in zip(("x_train", "y_train", "x_test", "y_test"), data[:4]):
        array = np.ascontiguousarray(array)
        out[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                     "blake2b": hashlib.blake2b(memoryview(array).cast("B"),
                                                digest_size=16).hexdigest()}
    return out


def topology_checksums(model) -> np.ndarray:
    """Per sparse layer: CRC-32 of the arrays that are its topology (CSR / Block: indptr and
    indices; Masked: the mask; caches left out), and of its values (int64 pairs)."""
    from .nn.sparse_layers import _SparseLayer
    sums = []
    for _, module in model.named_modules():
        if isinstance(module, _SparseLayer):
            weight = module.weight
            indices = 0
            for array in weight._kernel_arrays():
                indices = zlib.crc32(np.ascontiguousarray(array).tobytes(), indices)
            sums.append((indices, zlib.crc32(np.ascontiguousarray(weight.values).tobytes())))
    return np.array(sums, dtype=np.int64).reshape(-1, 2)


def check_model(model):
    """Dropout would draw each rank's masks from the shared stream with its own batch shape:
    the ranks' streams (SET's growth draws from them too) would part. Refused."""
    from .nn.layers import Dropout
    if any(isinstance(m, Dropout) and m.p > 0 for m in model.modules()):
        raise DistributedError("--distributed does not support Dropout layers yet: every rank "
                               "would draw its masks from the shared random stream")


class Communicator:
    """One rank's side of a data-parallel run (see the module docstring)."""

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"--mpi-timeout must be a positive number of seconds, got {timeout!r}")
        self.MPI = load_mpi(timeout)
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size, self.timeout = self.comm.Get_rank(), self.comm.Get_size(), timeout
        self.stats = {"steps": 0, "gradient_bytes": 0, "growth_bytes": 0, "gradient_seconds": 0.0,
                      "growth_seconds": 0.0, "check_seconds": 0.0, "wait_seconds": 0.0}
        hosts = self.allgather_json(self.MPI.Get_processor_name(), "the start-up roll call")
        self.local_size = hosts.count(hosts[self.rank])            # the ranks on this machine
        self.share = 1.0              # this rank's fraction of the current global batch
        self.step = 0
        self._buffer = None
        self.asked = False            # Ctrl-C pressed here, not yet sent to the others

    # ----- collectives, each under the deadline --------------------------------------------
    def _wait(self, request, what):
        start = time.perf_counter()
        while not request.Test():
            waited = time.perf_counter() - start
            if waited > self.timeout:
                self.abort(f"no answer from the other ranks for {self.timeout:g} s in {what}: "
                           "a rank died or hangs (its own output may say why)")
            if waited > 1e-3:                  # past a short spin, wait without taking a core
                time.sleep(2e-4)
        self.stats["wait_seconds"] += time.perf_counter() - start

    def abort(self, message, code=3):
        """Print `message` for this rank and end every rank of the job (MPI_Abort)."""
        print(f"sparsenet train: error on rank {self.rank} of {self.size}: {message}; "
              "stopping every rank", file=sys.stderr, flush=True)
        self.comm.Abort(code)

    def sum_in_place(self, buffer, what):
        """Sum `buffer` (a contiguous NumPy array) over the ranks, in place."""
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM), what)
        return buffer

    def allgather_json(self, obj, what) -> list:
        """Every rank's JSON-able `obj`, as a list by rank (sent as UTF-8 bytes, not pickled)."""
        data = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes), what)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        self._wait(self.comm.Iallgatherv(data, [out, sizes, offsets, self.MPI.BYTE]), what)
        return [json.loads(out[o:o + n].tobytes()) for o, n in zip(offsets, sizes)]

    def broadcast_bytes(self, payload, what) -> bytes:
        """Rank 0's `payload` (bytes) on every rank; the others pass None."""
        size = np.array([len(payload) if self.rank == 0 else 0], dtype=np.int64)
        self._wait(self.comm.Ibcast(size, root=0), what)
        buffer = np.frombuffer(bytearray(payload), np.uint8) if self.rank == 0 else \
            np.empty(int(size[0]), dtype=np.uint8)
        self._wait(self.comm.Ibcast(buffer, root=0), what)
        return buffer.tobytes()

    # ----- the start ---------------------------------------------------------------------------
    def threads_per_rank(self) -> int:
        """This machine's cores shared among the ranks on it (the thread policy's `threads`)."""
        return max(1, threads.check_threads(None) // self.local_size)

    def check_same_run(self, config, data):
        """Refuse ranks started with other versions, settings or data (DistributedError on
        every rank, naming the differences), and a batch too small to split."""
        from .train import fast_mode, versions
        import mpi4py
        settings = {k: v for k, v in dataclasses.asdict(config).items()
                    if k not in ("progress", "threads")}          # how a rank runs, not what
        mine = {"versions": dict(versions(), mpi4py=mpi4py.__version__,
                                 mpi=self.MPI.Get_library_version().splitlines()[0].strip()),
                "config": settings, "fast_mode": fast_mode(), "data": data_summary(data)}
        everyone = self.allgather_json(mine, "the start-up check of versions, settings and data")
        for rank, theirs in enumerate(everyone[1:], 1):
            found = differences(everyone[0], theirs)
            if found:
                raise DistributedError(f"rank {rank} of {self.size} was started with other "
                                       f"versions, settings or data than rank 0: "
                                       + "; ".join(found[:4]) + (" ..." if len(found) > 4 else ""))
        samples = len(data[1])
        smallest = samples % config.batch_size or min(samples, config.batch_size)
        if smallest < self.size:
            raise DistributedError(f"--batch-size {config.batch_size} leaves a batch of "
                                   f"{smallest} samples (of {samples}) to split among "
                                   f"{self.size} ranks: every rank needs at least one; choose "
                                   "another batch size or fewer ranks")
        if config.device != "cpu":
            raise DistributedError(f"--distributed trains on the CPU; --device {config.device} "
                                   "would need a CUDA-aware MPI, which is not supported yet")

    # ----- the step ----------------------------------------------------------------------------
    def local_batch(self, xb, yb, step):
        """This rank's contiguous part of a global batch (ranks in order = the batch's order);
        `step`: the run's number of the step it starts (1-based, counted on over a resume)."""
        self.step = step
        n = len(yb)
        lo, hi = n * self.rank // self.size, n * (self.rank + 1) // self.size
        self.share = (hi - lo) / n
        return xb[lo:hi], yb[lo:hi]

    def after_backward(self, model, loss, samples, correct):
        """Sum the gradients of every parameter over the ranks, in place of each rank's own, with
        the batch's loss and counts, in one Allreduce. Returns (mean loss, samples, correct) of
        the whole batch. Also agrees on Ctrl-C: the checkpointer of every rank sees it at once."""
        from . import checkpoint
        start = time.perf_counter()
        if self.stats["steps"] == 0:
            check_model(model)
        params = model.parameters()
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError(f"distributed training sums gradients in one buffer: every "
                            f"parameter must have one dtype, got {sorted(map(str, dtypes))}")
        total = sum(p.data.size for p in params) + 4
        if self._buffer is None or self._buffer.size != total or self._buffer.dtype != params[0].dtype:
            self._buffer = np.empty(total, dtype=params[0].data.dtype)
        buffer, offset = self._buffer, 0
        for p in params:             # each rank's gradient is of its part's mean: weigh it
            part = buffer[offset:offset + p.data.size]
            if p.grad is None:
                part[:] = 0
            else:
                np.multiply(np.asarray(p.grad).reshape(-1), self.share, out=part)
            offset += p.data.size
        asked, self.asked = self.asked, False
        buffer[offset:] = (loss * samples, correct, samples, asked)
        self.sum_in_place(buffer, f"the gradient Allreduce of step {self.step}")
        offset = 0
        for p in params:
            if p.grad is not None:
                p.grad = buffer[offset:offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size
        loss_sum, correct, samples, interrupts = (float(v) for v in buffer[offset:])
        run = checkpoint.current()
        if run is not None:           # Ctrl-C on any rank: every rank saves and stops here
            run.interrupt = interrupts > 0
        self.stats["steps"] += 1
        self.stats["gradient_bytes"] += buffer.nbytes
        self.stats["gradient_seconds"] += time.perf_counter() - start
        return loss_sum / samples, int(round(samples)), int(round(correct))

    def interrupt_now(self, signum, frame):
        """The checkpointer's SIGINT handler in a distributed run: the first Ctrl-C is sent
        with the next step's gradients, so every rank stops after the same step; a second
        one (or one outside training) stops this rank at once."""
        from . import checkpoint
        run = checkpoint.current()
        if run is not None and run.in_phase and not run.interrupt and not self.asked:
            self.asked = True
            return
        raise KeyboardInterrupt

    def sum_chunk(self, chunk):
        """A chunk of this rank's dense gradient G @ X.T, summed over the ranks (RigL growth)."""
        start = time.perf_counter()
        chunk = np.ascontiguousarray(chunk * chunk.dtype.type(self.share))
        self.sum_in_place(chunk, f"the growth-score Allreduce of step {self.step}")
        self.stats["growth_bytes"] += chunk.nbytes
        self.stats["growth_seconds"] += time.perf_counter() - start
        return chunk

    def check_topology(self, model):
        """Every rank's per-layer checksum of indices and values, compared (after an update)."""
        start = time.perf_counter()
        mine = topology_checksums(model)
        everyone = np.empty((self.size, *mine.shape), dtype=np.int64)
        self._wait(self.comm.Iallgather(mine, everyone),
                   f"the topology check after step {self.step}")
        self.stats["check_seconds"] += time.perf_counter() - start
        from .nn.sparse_layers import _SparseLayer
        names = [name for name, m in model.named_modules() if isinstance(m, _SparseLayer)]
        for rank in range(1, self.size):
            for layer, (ours, theirs) in enumerate(zip(everyone[0], everyone[rank])):
                if (ours != theirs).any():
                    what = "topology (mask)" if ours[0] != theirs[0] else "weights"
                    raise DistributedError(
                        f"after step {self.step} layer {names[layer]!r} has another {what} on "
                        f"rank {rank} than on rank 0: the replicas drifted apart (a different "
                        "MPI reduction order, or a rank started differently)")

    def describe(self) -> dict:
        """For the run record: ranks, threads and what the collectives cost on this rank."""
        steps = max(self.stats["steps"], 1)
        return {"ranks": self.size, "ranks_per_machine": self.local_size,
                "mpi": self.MPI.Get_library_version().splitlines()[0].strip(),
                "timeout_seconds": self.timeout, **self.stats,
                "gradient_bytes_per_step": self.stats["gradient_bytes"] / steps}

    # ----- the run ---------------------------------------------------------------------------
    def running(self):
        """Context manager making this the current communicator, growth scores summed."""
        return _Running(self)


class _Running:
    def __init__(self, comm):
        self.comm = comm

    def __enter__(self):
        global _current
        from .sparse import topology
        _current = self.comm
        topology.sum_chunks_with(self.comm.sum_chunk)
        return self.comm

    def __exit__(self, *exc):
        global _current
        from .sparse import topology
        _current = None
        topology.sum_chunks_with(None)
        return False
