"""Checkpoints: a stopped run continues exactly where it stopped.

`sparsenet train --checkpoint DIR` saves the run as it goes; `--resume DIR` continues it, and
the run ends with the record the uninterrupted run would have written (timings aside).

A run is a sequence of phases, one `train_phase` call each: most methods train one; magnitude
pruning trains dense, prunes and fine-tunes (two); a lottery ticket trains one per round. DIR holds

    phase-0000.safetensors, ...   each finished phase's end state and results, written once
    checkpoint.safetensors        the latest state: the phases finished, where the current one is

A state (state.py) is the model (arrays and sparse layout), the optimizer, the schedule, the
method's own state (`Method.state_dict`), the library's random generator, the loader's epoch,
and the loop's position (`LoopState`: the batches taken in this epoch, running sums, history,
FLOP counts). Files are safetensors (arrays) with the rest as JSON in the header, never pickle,
written atomically (`files.atomic_write`) and checked on load: a checkpoint of another run is
refused with the settings that differ.

Resuming runs the method's `train_model` again from the start with the same configuration. A
finished phase is not trained: `train_phase` sets the method up as the first time, restores the
phase's end state and returns its results, so what a method does between phases (prune, rewind)
sees exactly what it saw the first time. The unfinished phase restores the latest state and
`fit` continues with the next batch. Random draws, data order and arithmetic are the same, so
the resumed run is the uninterrupted one.

Ctrl-C (SIGINT) during a phase is held until the step in progress ends; then a checkpoint is
written and `Interrupted` (a KeyboardInterrupt) is raised. A second Ctrl-C stops at once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading

from . import files, state, tensorfile
from .io import check_metadata

FORMAT = "sparsenet-checkpoint"
LATEST = "checkpoint.safetensors"
_current = None                       # the Checkpointer of the run in progress


def current():
    """The active `Checkpointer` (inside `Checkpointer.running`), or None."""
    return _current


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the checkpoint was written."""


@dataclasses.dataclass
class LoopState:
    """Where `fit` stands in a phase: the epoch in progress, its running sums, the history."""
    epoch: int = 1                  # the epoch being trained (from 1)
    batch: int = 0                  # its batches already trained
    order: int = 0                  # the loader epoch whose shuffle this epoch serves
    step: int = 0                   # steps of this phase
    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0            # spent in this epoch so far (a timing, not restored exactly)
    train_flops: float = 0.0
    dense_flops: float = 0.0
    history: list = dataclasses.field(default_factory=list)

    def check(self, path):
        """Refuse a position a checkpoint could not have written."""
        counts = {"epoch": 1, "batch": 0, "order": 0, "step": 0, "seen": 0, "correct": 0}
        for name, least in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise tensorfile.TensorFileError(path, f"position.loop.{name}", f"must be an "
                                                 f"integer >= {least}, got {value!r}")
        for name in ("loss_sum", "seconds", "train_flops", "dense_flops"):
            if isinstance(getattr(self, name), bool) or \
                    not isinstance(getattr(self, name), (int, float)):
                raise tensorfile.TensorFileError(path, f"position.loop.{name}", "must be a number")
        if not isinstance(self.history, list):
            raise tensorfile.TensorFileError(path, "position.loop.history", "must be a list")
        return self

    def next_epoch(self):
        self.epoch, self.batch, self.seen, self.loss_sum, self.correct, self.seconds = \
            self.epoch + 1, 0, 0, 0.0, 0, 0.0


def _fingerprint(config, data) -> dict:
    """What must be equal for a checkpoint to continue this run."""
    from . import __version__
    from .train import fast_mode
    # what only shapes how the run is carried out (cores, a probe's step limit) may differ
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("progress", "threads", "max_steps")}
    x_train, y_train, x_test, y_test, origin = data
    summary = {"origin": origin, "train": int(len(y_train)), "test": int(len(y_test)),
               "input_shape": list(x_train.shape[1:]), "fast_mode": fast_mode()}
    return json.loads(json.dumps({"config": settings, "data": summary, "sparsenet": __version__}))


def _differences(saved, now, prefix="") -> list:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += _differences(saved.get(key, "<absent>"), now.get(key, "<absent>"),
                                f"{prefix}{key}.")
        return out
    return [] if saved == now else [f"{prefix[:-1]}: {saved!r} in the checkpoint, {now!r} now"]


class Checkpointer:
    """Save a run's state in `directory` every `every` steps and at the end of every epoch and
    phase; with `resume=True`, continue the run saved there. The directory is checked here,
    before any training: a new run needs a writable folder with no checkpoint in it."""

    def __init__(self, directory, every=None, resume=False, log=print):
        self.directory, self.every, self.resume, self.log = os.fspath(directory), every, resume, log
        if not self.directory:
            raise ValueError(f"{'--resume' if resume else '--checkpoint'} needs a folder name")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int)
                                  or every <= 0):
            raise ValueError(f"--checkpoint-every must be a positive number of steps, got {every!r}")
        self.latest_path = os.path.join(self.directory, LATEST)
        if resume:
            if not os.path.isfile(self.latest_path):
                raise ValueError(f"--resume {self.directory}: no checkpoint there "
                                 f"({LATEST} is missing)")
            files.check_output_dir(self.directory, "--resume")
        else:
            files.check_output_dir(self.directory, "--checkpoint")
            if os.path.exists(self.latest_path):
                raise ValueError(f"--checkpoint {self.directory}: it already holds a checkpoint; "
                                 f"continue it with --resume {self.directory}, or choose an "
                                 "empty folder")
        self.steps, self.interrupt, self.in_phase, self.resumed_from = 0, False, False, None
        self.saved_steps = None            # steps of the last checkpoint written

    # ----- the run ------------------------------------------------------------------------------
    def running(self, config, data):
        """Context manager for one run: checks (or starts) the directory, handles Ctrl-C."""
        return _Running(self, config, data)

    def _begin(self, config, data):
        self.fingerprint = _fingerprint(config, data)
        self.next_phase, self.phases_done, self.position = 0, 0, None
        if not self.resume:
            os.makedirs(self.directory, exist_ok=True)
            return
        meta, _, _ = self._read(self.latest_path, read_arrays=False)
        self.phases_done, self.steps = meta["phases_done"], meta["steps"]
        self.saved_steps = self.steps
        self.position = meta.get("position")
        self.resumed_from = {"phases_done": self.phases_done, "steps": self.steps}
        if self.log:
            self.log(f"resuming {self.directory}: {self.steps} steps trained, "
                     f"{self.phases_done} phase(s) finished")

    def _read(self, path, read_arrays=True):
        """(run metadata, JSON state, arrays) of a checkpoint file, checked against this run."""
        entries, metadata = tensorfile.read_header(path)
        check_metadata(path, metadata, FORMAT, allowed={"format", "version", "checkpoint"})
        try:
            meta = json.loads(metadata.get("checkpoint", ""))
        except ValueError as err:
            raise tensorfile.TensorFileError(path, "metadata 'checkpoint'",
                                             f"is not JSON ({err})") from None
        if not isinstance(meta, dict) or not {"fingerprint", "phases_done", "steps"} <= set(meta):
            raise tensorfile.TensorFileError(path, "metadata 'checkpoint'", "lacks fingerprint, "
                                             "phases_done or steps")
        differences = _differences(meta["fingerprint"], self.fingerprint)
        if differences:
            raise ValueError(f"{path} is the checkpoint of another run: "
                             + "; ".join(differences[:4]) + (" ..." if len(differences) > 4 else ""))
        for key in ("phases_done", "steps"):
            if isinstance(meta[key], bool) or not isinstance(meta[key], int) or meta[key] < 0:
                raise tensorfile.TensorFileError(path, f"checkpoint.{key}", f"must be an integer "
                                                 f">= 0, got {meta[key]!r}")
        packed = meta.get("position") or meta.get("finished")
        needed = {"loop"} if meta.get("position") else {"history", "flops"}
        if packed is not None and not (isinstance(packed, dict) and needed <= set(packed)):
            raise tensorfile.TensorFileError(path, "metadata 'checkpoint'", f"the state lacks "
                                             f"{sorted(needed)}")
        named = state.array_names(packed) if packed else set()
        if packed:          # the model's arrays: load_state_dict checks them against the model
            named |= {name for name in entries if name.startswith("model/")}
        tensorfile.check_names(path, entries, named, what="checkpoint arrays")
        return meta, packed, tensorfile.read_tensors(path, entries) if read_arrays else {}

    def _write(self, path, arrays, **meta):
        from . import __version__
        meta = dict(meta, fingerprint=self.fingerprint, steps=self.steps)
        try:
            tensorfile.write(path, arrays, {"format": FORMAT, "version": __version__,
                                            "checkpoint": json.dumps(meta)})
        except OSError as err:         # the previous checkpoint is intact: say how to go on
            kept = (f"the last one ({self.saved_steps} steps) is intact: --resume "
                    f"{self.directory} continues from it" if self.saved_steps is not None
                    else "none was written before")
            raise files.OutputError(f"--checkpoint {self.directory}: could not write {path} "
                                    f"({err.strerror or err}); {kept}") from None
        self.saved_steps = self.steps

    def phase_path(self, index) -> str:
        return os.path.join(self.directory, f"phase-{index:04d}.safetensors")

    # ----- one phase ------------------------------------------------------------------------------
    def phase(self, model, method, optimizer, scheduler, loader):
        """The next phase of the run: restored if the checkpoint has it (see the module doc)."""
        index, self.next_phase = self.next_phase, self.next_phase + 1
        return Phase(self, index, model, method, optimizer, scheduler, loader)

    def interrupt_now(self, signum, frame):
        if self.in_phase and not self.interrupt:
            self.interrupt = True          # finish the step, write a checkpoint (Phase.step_done)
            return
        raise KeyboardInterrupt


class _Running:
    def __init__(self, checkpointer, config, data):
        self.checkpointer, self.config, self.data = checkpointer, config, data

    def __enter__(self):
        global _current
        self.checkpointer._begin(self.config, self.data)
        self.handler = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # a background job: off
            self.handler = signal.signal(signal.SIGINT, self.checkpointer.interrupt_now)
        _current = self.checkpointer
        return self.checkpointer

    def __exit__(self, *exc):
        global _current
        _current = None
        if self.handler is not None:
            signal.signal(signal.SIGINT, self.handler)
        return False


class Phase:
    """One `train_phase` of a checkpointed run. `finished`: (history, flops) of a phase the
    checkpoint had finished (its end state restored); `position()`: where `fit` resumes."""

    def __init__(self, run, index, model, method, optimizer, scheduler, loader):
        self.run, self.index = run, index
        self.objects = (model, method, optimizer, scheduler, loader)
        self.finished, self.loop = None, None
        if index < run.phases_done:
            path = run.phase_path(index)
            meta, packed, arrays = run._read(path)
            if meta["phases_done"] != index + 1 or packed is None:
                raise tensorfile.TensorFileError(path, "checkpoint.phases_done", f"is "
                                                 f"{meta['phases_done']}, expected {index + 1}")
            self._restore(path, packed, arrays)
            self.finished = (state.unpack(packed["history"], arrays),
                             state.unpack(packed["flops"], arrays))
            run.steps = meta["steps"]
        elif index == run.phases_done and run.position is not None:
            meta, packed, arrays = run._read(run.latest_path)
            self._restore(run.latest_path, packed, arrays)
            try:
                self.loop = LoopState(**state.unpack(packed["loop"], arrays)).check(run.latest_path)
            except TypeError as err:
                raise tensorfile.TensorFileError(run.latest_path, "position.loop", str(err)) from None
            run.position = None
        run.in_phase = self.finished is None

    def _restore(self, path, packed, arrays):
        model, method, optimizer, scheduler, loader = self.objects
        state.restore(path, packed, arrays, model, optimizer, scheduler, method, loader)

    def position(self) -> LoopState | None:
        return self.loop

    def _save_position(self, loop):
        model, method, optimizer, scheduler, loader = self.objects
        arrays, packed = state.capture(model, optimizer, scheduler, method, loader)
        packed["loop"] = state.pack(dataclasses.asdict(loop), "loop", arrays)
        self.run._write(self.run.latest_path, arrays, phases_done=self.index, position=packed)

    def step_done(self, loop):
        """After every step: save every `every` steps, and when Ctrl-C asked for it."""
        self.run.steps += 1
        every = self.run.every
        if (every and self.run.steps % every == 0) or self.run.interrupt:
            self._save_position(loop)
        self._stop_if_asked()

    def epoch_done(self, loop, last: bool):
        """After an epoch's evaluation (`loop` already at the next one): save, unless the
        phase ends here (`end` saves it)."""
        if not last:
            self._save_position(loop)
            self._stop_if_asked()

    def end(self, history, flops):
        """The phase is over: write its file once, and point the latest checkpoint past it."""
        model, method, optimizer, scheduler, loader = self.objects
        arrays, packed = state.capture(model, optimizer, scheduler, method, loader)
        packed["history"] = state.pack(history, "history", arrays)
        packed["flops"] = state.pack(flops, "flops", arrays)
        self.run._write(self.run.phase_path(self.index), arrays, phases_done=self.index + 1,
                        finished=packed)
        self.run._write(self.run.latest_path, {}, phases_done=self.index + 1, position=None)
        self.run.phases_done = self.index + 1
        self.run.in_phase = False
        self._stop_if_asked()

    def _stop_if_asked(self):
        if self.run.interrupt:
            self.run.in_phase = False
            raise Interrupted(f"interrupted after {self.run.steps} steps; checkpoint written to "
                              f"{self.run.directory}: continue with --resume {self.run.directory}")
