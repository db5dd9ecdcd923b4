"""The training loop: epochs of mini-batch SGD, evaluation, a progress bar, and a run record.

`train_model(TrainConfig(...))` is what `sparsenet train` calls: it loads the data, builds the model and
the method, trains, and returns the JSON-able record (see `record_fields` in the README).
Set SPARSENET_FAST=1 to shrink data and epochs (the tests and tutorials do).
"""
from __future__ import annotations

import dataclasses
import os
import platform
import resource
import time

import numpy as np
from tqdm.auto import tqdm

from . import backend, metrics, optim
from .algorithms import get_method
from .data import BatchLoader, load_dataset, to_float
from .nn import build_model
from .nn.functional import cross_entropy
from .random import manual_seed
from .tensor import Tensor, no_grad


def fast_mode() -> bool:
    return os.environ.get("SPARSENET_FAST", "") not in ("", "0")


@dataclasses.dataclass
class TrainConfig:
    model: str = "lenet300"
    method: str = "dense"
    sparsity: float = 0.0
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

    def validate(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        if isinstance(self.val, bool) or not isinstance(self.val, (int, np.integer)) or self.val < 0:
            raise ValueError(f"val (validation images held out) must be an integer >= 0, "
                             f"got {self.val!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) \
                or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {self.steps!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        from .algorithms.regularization import check_options
        check_options(self.l1, self.group_lasso, self.groups)

    def penalty(self) -> dict | None:
        """The regularization options for `regularize`, or None when there is none."""
        if not (self.l1 or self.group_lasso):
            return None
        return dict(l1=self.l1, group_lasso=self.group_lasso, groups=self.groups)


def load_arrays(source="auto", dataset="fashion-mnist"):
    """Float32 images (N, 1, 28, 28) and int64 labels; smaller in fast mode."""
    ds = load_dataset(dataset, source)
    x_train, y_train = to_float(ds.train_images), ds.train_labels.astype(np.int64)
    x_test, y_test = to_float(ds.test_images), ds.test_labels.astype(np.int64)
    if fast_mode():
        x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:500], y_test[:500]
    return x_train, y_train, x_test, y_test, ds.origin


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
    return (x_train[keep], y_train[keep], x_train[held], y_train[held],
            f"{origin} (validation: {val} training images held out)")


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


def evaluate(model, x, y, batch_size=1000, device="cpu"):
    """(accuracy, predictions) of `model` on arrays x, y, in evaluation mode without a graph."""
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
    return {"sparsenet": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__, "machine": platform.machine()}


def fit(model, optimizer, scheduler, method, loader, test_arrays, epochs, input_shape,
        device="cpu", progress=True, log=print, penalty=None, max_steps=None):
    """Train for `epochs`; returns (history, flops dict). The method's hooks run at every step.

    `max_steps`: stop after this many steps (the last epoch is then partial).

    `penalty`: options of `regularization.regularize` (L1 / group lasso), added to the
    gradients right after backward, before the method sees them.
    """
    if penalty:
        from .algorithms.regularization import regularize
    positions = metrics.layer_positions(model, input_shape)
    fwd_sparse, fwd_dense = metrics.forward_flops(model, positions)
    train_flops = dense_flops = 0.0
    history, step = [], 0
    for epoch in range(1, epochs + 1):
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for xb, yb in bar:
            if max_steps is not None and step >= max_steps:
                break
            xb, yb = backend.to_device(xb, device), backend.to_device(yb, device)
            logits = model(Tensor(xb))
            loss = cross_entropy(logits, yb)
            if not np.isfinite(loss.item()):           # stop before the step spreads it
                raise FloatingPointError(
                    f"training diverged: the loss is {loss.item()} at step {step + 1} (epoch "
                    f"{epoch}) with lr {scheduler.get_lr():g}; lower the learning rate (--lr). "
                    f"lenet5, with no nonlinearity between its convolutions, trains at 0.01 "
                    f"(Caffe's LeNet solver)")
            optimizer.zero_grad()
            loss.backward()
            if penalty:
                regularize(model, **penalty)
            method.after_backward(step)
            optimizer.step()
            method.after_step(step)
            scheduler.step()
            if method.topology_changed():
                fwd_sparse, _ = metrics.forward_flops(model, positions)
            train_flops += 3 * fwd_sparse * len(yb) + method.extra_flops()
            dense_flops += 3 * fwd_dense * len(yb)
            step += 1
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += int((backend.to_numpy(logits.data).argmax(axis=1)
                            == backend.to_numpy(yb)).sum())
            if progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                samples_s=f"{seen / (time.perf_counter() - t0):.0f}")
        method.after_epoch(epoch)
        seconds = time.perf_counter() - t0
        test_acc, _ = evaluate(model, *test_arrays, device=device)
        history.append({"epoch": epoch, "loss": loss_sum / max(seen, 1),
                        "train_accuracy": correct / max(seen, 1), "test_accuracy": test_acc,
                        "seconds": seconds, "lr": scheduler.get_lr()})
        if log:
            log(f"epoch {epoch:3d}  loss {loss_sum / max(seen, 1):.4f}  train {correct / max(seen, 1):.4f}"
                f"  test {test_acc:.4f}  {seen / seconds:,.0f} samples/s")
    fwd_sparse, _ = metrics.forward_flops(model, positions)
    flops = {"inference_relative": fwd_sparse / fwd_dense if fwd_dense else 1.0,
             "training_relative": train_flops / dense_flops if dense_flops else 1.0,
             "inference_per_sample": fwd_sparse, "training_total": train_flops,
             "dense_training_total": dense_flops}
    return history, flops


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
    optimizer = make_optimizer(phase_config, model.parameters())
    method.optimizer = optimizer
    scheduler = make_scheduler(dataclasses.replace(phase_config, epochs=epochs), optimizer,
                               len(loader))
    for _ in range(start_step):
        scheduler.step()
    steps = total - start_step
    history, flops = fit(model, optimizer, scheduler, method, loader, (x_test, y_test),
                         -(-steps // len(loader)), x_train.shape[1:], device=config.device,
                         progress=config.progress, log=log, penalty=config.penalty(),
                         max_steps=steps)
    return history, flops, optimizer


def make_record(config: TrainConfig, model, method, optimizer, data, history, flops,
                train_seconds, epochs, **extra) -> dict:
    """The JSON-able record of a finished run (fields listed in the README)."""
    _, y_train, x_test, y_test, origin = data
    test_acc, predictions = evaluate(model, x_test, y_test, device=config.device)
    summary = metrics.sparsity_summary(model)
    record = {
        "method": config.method, "model": config.model, "sparsity": summary["sparsity"],
        "density": summary["density"], "target_sparsity": config.sparsity,
        # with a validation split (config.val) the held-out images replace the test set
        ("val_accuracy" if config.val else "test_accuracy"): test_acc,
        # every other accuracy in the record (history, rounds) is on the same images
        "evaluated_on": f"validation: {config.val} held-out training images" if config.val
        else "test",
        "per_class_accuracy": metrics.per_class_accuracy(predictions, y_test, int(y_test.max()) + 1),
        "epochs": epochs, "seed": config.seed, "train_seconds": train_seconds,
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
    record.update(extra)
    return record


def train_model(config: TrainConfig, log=print, model=None, data=None):
    """Train and return (model, record). `data` may be preloaded `load_arrays` output.

    A method that needs more than one training phase defines `train_model(config, model, data,
    log)` and is handed the whole run (see lottery.py); every other method runs one phase.
    """
    config.validate()
    manual_seed(config.seed)
    from .train_lm import is_language_model      # text and transformers: their own loop
    if is_language_model(config):
        from .train_lm import train_language_model
        return train_language_model(config, log=log, model=model, corpus=data)
    data = data or load_arrays(config.data, config.dataset)
    if config.val:
        data = split_validation(data, config.val)
    x_train, y_train = data[0], data[1]
    model = model or build_model(config.model, input_shape=x_train.shape[1:],
                                 num_classes=int(y_train.max()) + 1)
    if config.device != "cpu":
        model.to(config.device)
    options = dict(config.method_options)
    if config.method != "dense":
        options.setdefault("sparsity", config.sparsity)
    method = get_method(config.method, **options)
    if hasattr(method, "train_model"):
        return method.train_model(config, model, data, log)
    epochs = epochs_for(config)
    start = time.perf_counter()
    history, flops, optimizer = train_phase(model, method, config, data, epochs, log)
    record = make_record(config, model, method, optimizer, data, history, flops,
                         time.perf_counter() - start, epochs)
    return model, record
