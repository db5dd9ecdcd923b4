"""The training loop: epochs of mini-batch SGD, evaluation, a progress bar, and a run record.

`train_model(TrainConfig(...))` is what `sparsenet train` calls: it loads the data, builds the model and
the method, trains, and returns the JSON-able record (see `record_fields` in the README).
Set SPARSENET_FAST=1 to shrink data and epochs (the tests and tutorials do).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import platform
import resource
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from . import backend, checkpoint, distributed, metrics, optim, threads
from .checkpoint import LoopState
from .data import BatchLoader, load_dataset, to_float
from .guards import (Arrays, check_arrays, make_method, non_finite_loss, num_classes_of,
                     stderr_is_terminal, validate_config)
from .nn import build_model
from .nn.functional import cross_entropy
from .predictions import encode_predictions
from .random import manual_seed
from .tensor import Tensor, no_grad

__all__ = ["TrainConfig", "Arrays", "load_arrays", "make_method", "num_classes_of", "train_model",
           "train_phase", "fit", "run", "evaluate", "make_record", "check_arrays"]


def fast_mode() -> bool:
    return os.environ.get("SPARSENET_FAST", "") not in ("", "0")


@dataclasses.dataclass
class TrainConfig:
    model: str = "lenet300"
    method: str = "dense"
    sparsity: float | None = None   # None: 0 for dense, the method's own default otherwise
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"          # sgd | adam | adamw
    schedule: str = "cosine"        # cosine | step | constant
    warmup_epochs: int = 0
    seed: int = 0
    data: str = "auto"              # auto | subset | full | a directory
    dataset: str = "fashion-mnist"
    device: str = "cpu"
    progress: bool = True
    method_options: dict = dataclasses.field(default_factory=dict)
    l1: float = 0.0                 # sparsity regularization added to any method's gradients
    group_lasso: float = 0.0
    groups: str = "rows"            # rows | columns | blocks (group lasso)
    val: int = 0                    # hold out this many training images and evaluate on them
    steps: int = 0                  # language models: training steps (0: epochs decide)
    threads: int | None = None      # cores for the pool that owns them (threads.py); None: all
    max_steps: int | None = None    # stop after this many optimizer steps (a probe of a long run)

    def validate(self):
        """Raise ValueError naming the field for anything a run could not use: before any work
        (guards.validate_config)."""
        validate_config(self)

    def penalty(self) -> dict | None:
        """The regularization options for `regularize`, or None when there is none."""
        if not (self.l1 or self.group_lasso):
            return None
        return dict(l1=self.l1, group_lasso=self.group_lasso, groups=self.groups)


def load_arrays(source="auto", dataset="fashion-mnist"):
    """Float32 images (N, 1, 28, 28) and int64 labels; smaller in fast mode."""
    from .data.preprocess import Standardize
    ds = load_dataset(dataset, source)
    x_train, y_train = to_float(ds.train_images), ds.train_labels.astype(np.int64)
    x_test, y_test = to_float(ds.test_images), ds.test_labels.astype(np.int64)
    if fast_mode():
        x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:500], y_test[:500]
    return Arrays((x_train, y_train, x_test, y_test, ds.origin), ds.num_classes, Standardize())


def split_validation(data, val: int):
    """Hold out `val` training images as the evaluation set, for choosing hyperparameters
    without looking at the test set. The held-out images are a fixed random choice (the same
    for every run and seed); the test arrays are dropped, so nothing can peek at them."""
    x_train, y_train, _, _, origin = data
    if not 0 < val < len(y_train):
        raise ValueError(f"val must be between 1 and {len(y_train) - 1} (the training images), "
                         f"got {val}")
    order = np.random.default_rng(20261125).permutation(len(y_train))
    keep, held = np.sort(order[val:]), np.sort(order[:val])
    return Arrays((x_train[keep], y_train[keep], x_train[held], y_train[held],
                   f"{origin} (validation: {val} training images held out)"),
                  num_classes_of(data), getattr(data, "preprocess", None))


def make_optimizer(config: TrainConfig, params):
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    cls = optim.Adam if config.optimizer == "adam" else optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return optim.CosineLR(optimizer, total, warmup=config.warmup_epochs * steps_per_epoch)
    if config.schedule == "step":
        return optim.StepLR(optimizer, step_size=max(1, total // 3), gamma=0.1)
    return optim.ConstantLR(optimizer)


EVAL_ACTIVATION_BYTES = 64 << 20      # the widest layer's output for one evaluation batch


def eval_batch_size(model, largest=1000) -> int:
    """Images per evaluation batch: `largest`, or fewer for a model so wide that a batch's
    widest activation would pass EVAL_ACTIVATION_BYTES (333,334 units x 1000 images would be
    1.3 GB per layer), so evaluating never costs more memory than training."""
    widest = max([getattr(m, "out_features", 0) for m in model.modules()] + [1])
    return int(max(16, min(largest, EVAL_ACTIVATION_BYTES // (4 * widest))))


def evaluate(model, x, y, batch_size=None, device="cpu"):
    """(accuracy, predictions) of `model` on arrays x, y, in evaluation mode without a graph;
    batch_size: images per forward pass (default `eval_batch_size(model)`)."""
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    predictions = []
    with no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(Tensor(backend.to_device(x[i:i + batch_size], device)))
            predictions.append(backend.to_numpy(logits.data).argmax(axis=1))
    model.train(was_training)
    predictions = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
    return float((predictions == y).mean()), predictions


def versions() -> dict:
    import numba
    import scipy

    from . import __version__
    out = {"sparsenet": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "scipy": scipy.__version__, "machine": platform.machine()}
    if backend.cuda_available():                  # only looks if CuPy is installed
        out.update(cupy=backend.cupy_module().__version__, gpu=backend.gpu_name())
    return out


def check_loss(loss_value, xb, model, optimizer, step, epoch, scheduler):
    """Stop before the step spreads a loss that is no longer finite (saying why, if it can)."""
    if not np.isfinite(loss_value):
        raise FloatingPointError(non_finite_loss(loss_value, xb, model, optimizer, step, epoch,
                                                 scheduler.get_lr()))


def fit(model, optimizer, scheduler, method, loader, test_arrays, epochs, input_shape,
        device="cpu", progress=True, log=print, penalty=None, max_steps=None, probe=False,
        checkpoint=None):
    """Train for `epochs`; returns (history, flops dict). The method's hooks run at every step.

    `max_steps`: stop after this many steps (the last epoch is then partial); `probe`: that
    limit is the user's `--max-steps`, cutting the run short (said so in the log).

    `penalty`: options of `regularization.regularize` (L1 / group lasso), added to the
    gradients right after backward, before the method sees them.

    `checkpoint`: a `checkpoint.Phase`: the loop starts where its saved position stood (a
    resumed run) and reports every step and epoch to it, which saves the run as it goes.
    """
    if penalty:
        from .algorithms.regularization import regularize
    comm = distributed.current()    # data-parallel over MPI ranks (distributed.py), or None
    positions = metrics.layer_positions(model, input_shape)
    fwd_sparse, fwd_dense = metrics.forward_flops(model, positions)
    loop = (checkpoint.position() if checkpoint else None) or LoopState(order=loader.epoch)
    if comm is not None and loop.step == 0:     # work done before training (pruning-at-init
        loop.train_flops += method.extra_flops()    # scores), so steps count only their own
    progress = progress and stderr_is_terminal()    # a log file gets no bar (~55 KB per epoch)
    while loop.epoch <= epochs:
        epoch = loop.epoch
        loader.epoch = loop.order              # this epoch's shuffle (a resumed one: the same)
        t0 = time.perf_counter() - loop.seconds
        shown = t0                             # when the bar's numbers were last set
        batches = itertools.islice(loader, loop.batch, None)   # skip the batches already trained
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False,
                   total=len(loader), initial=loop.batch, mininterval=0.5)
        for xb, yb in bar:
            if max_steps is not None and loop.step >= max_steps:
                break
            if comm is not None:                        # this rank's part of the batch
                xb, yb = comm.local_batch(xb, yb, loop.step + 1)
            xb, yb = backend.to_device(xb, device), backend.to_device(yb, device)
            logits = model(Tensor(xb))
            loss = cross_entropy(logits, yb)
            loss_value, samples = loss.item(), len(yb)
            correct = int((backend.to_numpy(logits.data).argmax(axis=1)
                           == backend.to_numpy(yb)).sum())
            if comm is None:                           # stop before the step spreads it
                check_loss(loss_value, xb, model, optimizer, loop.step, epoch, scheduler)
            optimizer.zero_grad()
            loss.backward()
            if comm is not None:     # the whole batch's gradients, loss and counts, on every rank
                loss_value, samples, correct = comm.after_backward(model, loss_value, samples,
                                                                   correct)
                check_loss(loss_value, xb, model, optimizer, loop.step, epoch, scheduler)
            if penalty:
                regularize(model, **penalty)
            method.after_backward(loop.step)
            optimizer.step()
            method.after_step(loop.step)
            scheduler.step()
            if method.topology_changed():
                fwd_sparse, _ = metrics.forward_flops(model, positions)
                if comm is not None:                    # every rank's topology the same?
                    comm.check_topology(model)
            extra = method.extra_flops()
            if comm is not None:                 # this rank's part of the batch: the batch's
                extra /= comm.share
            loop.train_flops += 3 * fwd_sparse * samples + extra
            loop.dense_flops += 3 * fwd_dense * samples
            loop.step += 1
            loop.batch += 1
            loop.seen += samples
            loop.loss_sum += loss_value * samples
            loop.correct += correct
            now = time.perf_counter()
            loop.seconds = now - t0
            if progress and now - shown > 0.5:          # formatting every step costs time
                shown = now
                bar.set_postfix(loss=f"{loop.loss_sum / loop.seen:.4f}",
                                acc=f"{loop.correct / loop.seen:.3f}",
                                samples_s=f"{loop.seen / loop.seconds:.0f}", refresh=False)
            if checkpoint:
                checkpoint.step_done(loop)
        if loop.seen == 0:                              # max_steps ended the run at an epoch end
            break
        partial = loop.seen < loader.num_samples
        stopped = probe and max_steps is not None and loop.step >= max_steps
        method.after_epoch(epoch)
        seconds = time.perf_counter() - t0
        seen, loss_sum, correct = loop.seen, loop.loss_sum, loop.correct
        test_acc, _ = evaluate(model, *test_arrays, device=device)
        loop.history.append({"epoch": epoch, "loss": loss_sum / seen,
                             "train_accuracy": correct / seen, "test_accuracy": test_acc,
                             "seconds": seconds, "lr": scheduler.get_lr(), "steps": loop.step,
                             "samples": seen, "samples_per_second": seen / seconds,
                             "partial": partial})
        if log:
            log(f"epoch {epoch:3d}  loss {loss_sum / seen:.4f}  train {correct / seen:.4f}"
                f"  test {test_acc:.4f}  {seen / seconds:,.0f} samples/s"
                + (f"  (stopped after {loop.step} steps: --max-steps)" if stopped else ""))
        loop.next_epoch()
        loop.order = loader.epoch
        if checkpoint:
            checkpoint.epoch_done(loop, last=epoch == epochs or stopped)
        if stopped:
            break
    fwd_sparse, _ = metrics.forward_flops(model, positions)
    train_flops, dense_flops = loop.train_flops, loop.dense_flops
    flops = {"inference_relative": fwd_sparse / fwd_dense if fwd_dense else 1.0,
             "training_relative": train_flops / dense_flops if dense_flops else 1.0,
             "inference_per_sample": fwd_sparse, "training_total": train_flops,
             "dense_training_total": dense_flops}
    return loop.history, flops


def combine_flops(phases: list) -> dict:
    """FLOPs of several training phases (e.g. dense training, then fine-tuning) as one run's."""
    total = sum(f["training_total"] for f in phases)
    dense = sum(f["dense_training_total"] for f in phases)
    last = phases[-1]
    return dict(last, training_relative=total / dense if dense else 1.0, training_total=total,
                dense_training_total=dense)


def run(config: TrainConfig, log=print, data=None) -> dict:
    """Train one model with one method and return its JSON-able record."""
    return train_model(config, log=log, data=data)[1]


def epochs_for(config: TrainConfig, epochs=None) -> int:
    """The epochs a phase really runs: fast mode (SPARSENET_FAST=1) caps them at 2."""
    epochs = config.epochs if epochs is None else epochs
    return min(epochs, 2) if fast_mode() else epochs


def train_phase(model, method, config: TrainConfig, data, epochs, log=print, lr=None, seed_offset=0,
                start_step=0):
    """One phase of training: set the method up, build optimizer and schedule, run `fit`.

    Returns (history, flops, optimizer). Multi-phase methods (lottery tickets, prune then
    fine-tune) call this once per phase; `lr` overrides the configured learning rate.
    `start_step`: resume a run of `epochs` epochs at that step: the learning-rate schedule
    starts there and only the remaining steps are trained (lottery-ticket rewinding).
    """
    x_train, y_train, x_test, y_test, _ = data
    loader = BatchLoader(x_train, y_train, config.batch_size, shuffle=True,
                         seed=config.seed + seed_offset)
    # the method may replace layers (sparsify) before the optimizer sees the parameters
    total = epochs * len(loader)
    if not 0 <= start_step < total:
        raise ValueError(f"start_step must be in [0, {total}) (the phase's steps), got {start_step}")
    method.setup(model, None, loader, total - start_step)
    phase_config = config if lr is None else dataclasses.replace(config, lr=lr)
    optimizer = make_optimizer(phase_config, model.parameters())   # after setup: its layers
    method.optimizer = optimizer
    scheduler = make_scheduler(dataclasses.replace(phase_config, epochs=epochs), optimizer,
                               len(loader))
    for _ in range(start_step):
        scheduler.step()
    steps = total - start_step
    probe = config.max_steps is not None and config.max_steps < steps
    positions = metrics.layer_positions(model, x_train.shape[1:])
    threads.apply_policy(model, config.threads, positions)
    run = checkpoint.current()      # a checkpointed run: this phase may be restored (done or not)
    phase = run.phase(model, method, optimizer, scheduler, loader) if run else None
    if phase is not None and phase.finished is not None:
        history, flops = phase.finished
        return history, flops, optimizer
    history, flops = fit(model, optimizer, scheduler, method, loader, (x_test, y_test),
                         -(-steps // len(loader)), x_train.shape[1:], device=config.device,
                         progress=config.progress, log=log, penalty=config.penalty(),
                         max_steps=min(steps, config.max_steps) if probe else steps, probe=probe,
                         checkpoint=phase)
    if phase is not None:
        phase.end(history, flops)
    return history, flops, optimizer


def make_record(config: TrainConfig, model, method, optimizer, data, history, flops,
                train_seconds, epochs, **extra) -> dict:
    """The JSON-able record of a finished run (fields listed in the README)."""
    _, y_train, x_test, y_test, origin = data
    test_acc, predictions = evaluate(model, x_test, y_test, device=config.device)
    summary = metrics.sparsity_summary(model)
    record = {
        "method": config.method, "model": config.model, "sparsity": summary["sparsity"],
        "density": summary["density"],
        "target_sparsity": config.sparsity if config.sparsity is not None else 0.0,
        # with a validation split (config.val) the held-out images replace the test set
        ("val_accuracy" if config.val else "test_accuracy"): test_acc,
        # every other accuracy in the record (history, rounds) is on the same images
        "evaluated_on": f"validation: {config.val} held-out training images" if config.val
        else "test",
        "per_class_accuracy": metrics.per_class_accuracy(predictions, y_test,
                                                         num_classes_of(data)),
        # one byte per evaluated image (sparsenet/predictions.py): analyses without retraining
        "predictions": encode_predictions(predictions, y_test, num_classes_of(data)),
        "epochs": epochs, "seed": config.seed, "train_seconds": train_seconds,
        "steps": history[-1]["steps"] if history else 0,
        "stopped_early": config.max_steps is not None and any(h.get("partial") for h in history),
        "threads": threads.current(),
        "history": history, "layers": metrics.layer_table(model),
        "parameters": summary["weights_stored"], "parameters_dense": summary["weights_dense"],
        "bytes": metrics.parameter_bytes(model, optimizer), "flops": flops,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "data": {"origin": origin, "train": int(len(y_train)), "test": int(len(y_test)),
                 "fast_mode": fast_mode()},
        "hyperparameters": {k: v for k, v in dataclasses.asdict(config).items()
                            if k not in ("progress",)},
        "method_details": method.describe(), "versions": versions(),
    }
    record["energy"] = metrics.inference_energy(model, x_test.shape[1:])   # per layer, pJ
    record.update(extra)
    if config.method != "dense" and record["density"] >= 1.0:
        warnings.warn(f"method {config.method!r} trained a dense model (density 1.0): nothing "
                      f"was pruned at sparsity {config.sparsity}", stacklevel=2)
    return record


def train_model(config: TrainConfig, log=print, model=None, data=None, checkpointer=None):
    """Train and return (model, record). `data` may be preloaded `load_arrays` output.

    A method that needs more than one training phase defines `train_model(config, model, data,
    log)` and is handed the whole run (see lottery.py); every other method runs one phase.
    `checkpointer`: a `checkpoint.Checkpointer` that saves the run as it goes, or continues the
    run it saved (checkpoint.py).
    """
    config.validate()
    method, config = make_method(config)
    manual_seed(config.seed)
    from .train_lm import is_language_model      # text and transformers: their own loop
    if is_language_model(config):
        if checkpointer is not None:
            raise ValueError("checkpoints (--checkpoint, --resume) are for image runs; a "
                             "language-model run cannot be checkpointed yet")
        from .train_lm import train_language_model
        return train_language_model(config, log=log, model=model, corpus=data)
    data = data or load_arrays(config.data, config.dataset)
    if config.val:
        data = split_validation(data, config.val)
    comm = distributed.current()
    if comm is not None:            # every rank started alike (versions, settings, data)?
        comm.check_same_run(config, data)
    if checkpointer is None:
        model, record = _train(config, method, log, model, data)
    else:
        with checkpointer.running(config, data):
            model, record = _train(config, method, log, model, data)
        if checkpointer.resumed_from:
            record["resumed_from"] = checkpointer.resumed_from  # timings cover the last part only
    if comm is not None:
        record["distributed"] = comm.describe()
    return model, record


def _train(config, method, log, model, data):
    num_classes = num_classes_of(data)
    check_arrays(data, num_classes)
    x_train = data[0]
    build_start = time.perf_counter()
    if model is None:
        shape = x_train.shape[1:]
        # a sparse-from-scratch method's model is built sparse: no dense weight, at any width
        sparse = {}
        if getattr(method, "sparse_from_scratch", False):
            from .algorithms.dst import check_sparse_setting
            from .nn.models import architecture, weight_shapes
            check_sparse_setting(method)
            sparse = method.build_options(weight_shapes(architecture(config.model, shape,
                                                                     num_classes)))
        model = build_model(config.model, input_shape=shape, num_classes=num_classes, **sparse)
    build_seconds = time.perf_counter() - build_start
    if getattr(data, "preprocess", None) is not None:
        model.preprocess = data.preprocess             # what the model was trained on
    if config.device != "cpu":
        model.to(config.device)
    if hasattr(method, "train_model"):
        return method.train_model(config, model, data, log)
    epochs = epochs_for(config)
    start = time.perf_counter()
    history, flops, optimizer = train_phase(model, method, config, data, epochs, log)
    record = make_record(config, model, method, optimizer, data, history, flops,
                         time.perf_counter() - start, epochs, build_seconds=build_seconds)
    return model, record
