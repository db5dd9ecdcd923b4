"""`sparsenet train --distributed`: one rank's part of a data-parallel run (distributed.py).

Rank 0 checks and writes every output (the record, the model, the checkpoints) and prints; the
other ranks train in step and write nothing. On `--resume DIR` rank 0 reads the checkpoint and
sends its files to the others, so the ranks need no shared folder. The others keep a
checkpointer too (on a scratch folder, writing nothing), so a resumed run restores on every rank
and Ctrl-C stops every rank at the same step (the flag travels with the gradients).

Errors. What every rank computes alike (a start-up difference, a topology mismatch, a diverged
loss, Ctrl-C) ends every rank cleanly, rank 0 printing the one message. An error on one rank
alone (a file it cannot read, a bug) would leave the others waiting in their next collective:
that rank prints it and aborts the job (MPI_Abort), and a rank that dies without a word is
caught by the others' collective deadline (`--mpi-timeout`).
"""
from __future__ import annotations

import os
import sys
import tempfile

from .checkpoint import LATEST, Checkpointer
from .distributed import DEFAULT_TIMEOUT, Communicator, DistributedError

COLLECTIVE = (DistributedError, FloatingPointError, KeyboardInterrupt)


class FollowerCheckpointer(Checkpointer):
    """A rank other than 0: the same phases, restores and Ctrl-C as rank 0's checkpointer, on
    the copy of the checkpoint rank 0 sent (`scratch`), writing nothing."""

    def _write(self, path, arrays, **meta):
        self.saved_steps = self.steps


def agree(comm, error):
    """Every rank's start-up error (a message or None), made everyone's: DistributedError on
    every rank if any rank had one, naming the ranks."""
    errors = comm.allgather_json(error, "the start-up agreement")
    failed = [(rank, message) for rank, message in enumerate(errors) if message]
    if failed:
        rank, message = failed[0]
        where = "" if len(failed) == comm.size else f" (on rank {rank} of {comm.size})"
        raise DistributedError(f"{message}{where}")


def shared_checkpointer(comm, args, outputs, scratch):
    """Rank 0: `outputs(args)` (its checks of --json, --save, --checkpoint, --resume and its
    Checkpointer); the others: a FollowerCheckpointer on `scratch`, holding rank 0's checkpoint
    files on --resume. Any rank's error is every rank's."""
    checkpointer, error = None, None
    if comm.rank == 0:
        try:
            checkpointer = outputs(args)
        except (ValueError, TypeError, OSError) as err:
            error = str(err)
    agree(comm, error)
    if not (args.checkpoint or args.resume):
        return checkpointer
    if comm.rank == 0:                         # Ctrl-C travels with the gradients
        checkpointer.interrupt_now = comm.interrupt_now
    names = sorted(n for n in os.listdir(args.resume) if n.endswith(".safetensors")) \
        if comm.rank == 0 and args.resume else []
    names = comm.allgather_json(names, "the list of checkpoint files")[0]
    for name in names:
        payload = None
        if comm.rank == 0:
            with open(os.path.join(args.resume, name), "rb") as f:
                payload = f.read()
        payload = comm.broadcast_bytes(payload, f"sending the checkpoint file {name}")
        if comm.rank != 0:
            with open(os.path.join(scratch, name), "wb") as f:
                f.write(payload)
    if comm.rank == 0:
        return checkpointer
    if args.resume and LATEST not in names:
        raise DistributedError(f"--resume {args.resume}: rank 0 sent no {LATEST}")
    follower = FollowerCheckpointer(scratch, every=args.checkpoint_every,
                                    resume=bool(args.resume), log=None)
    follower.interrupt_now = comm.interrupt_now
    return follower


def _quiet(*args, **kwargs):
    pass


def command(args, config, body, outputs):
    """Run `body(args, config, checkpointer, log, lead)` (the CLI's train-and-write) on this
    rank, under one `Communicator`. `outputs(args)`: the CLI's output checks (rank 0)."""
    comm = Communicator(timeout=DEFAULT_TIMEOUT if args.mpi_timeout is None else args.mpi_timeout)
    lead = comm.rank == 0
    if args.threads is None:                   # the machine's cores shared by its ranks
        config.threads = comm.threads_per_rank()
    config.progress = config.progress and lead
    try:
        try:
            config.validate()
            error = None
        except (ValueError, TypeError) as err:
            error = str(err)
        agree(comm, error)
        with tempfile.TemporaryDirectory(prefix=f"sparsenet-rank{comm.rank}-") as scratch, \
                comm.running():
            checkpointer = shared_checkpointer(comm, args, outputs, scratch)
            if lead:
                print(f"distributed: {comm.size} ranks ({comm.local_size} on this machine, "
                      f"{config.threads} thread(s) each), global batch {config.batch_size}",
                      flush=True)
            body(args, config, checkpointer, log=print if lead else _quiet, lead=lead)
    except COLLECTIVE:                         # every rank has it: rank 0 tells, all stop
        if lead:
            raise
        raise SystemExit(2) from None
    except SystemExit:
        raise
    except Exception as err:                   # this rank alone: do not leave the others waiting
        comm.abort(f"{type(err).__name__}: {err}", code=2)
