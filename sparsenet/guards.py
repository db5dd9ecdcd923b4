"""What a training run checks before it starts and says when it stops: the guards of train.py.

- `validate_config(config)`: every TrainConfig field of the right type and range, the method
  known and its options its own, no CUDA device asked for where there is none.
- `make_method(config)`: the method, with a sparsity left out resolved to the method's default
  and announced (a warning), never silently 0.
- `Arrays`, `num_classes_of`, `check_arrays`: the data set's declared classes (not the largest
  training label), finite images and labels in range.
- `non_finite_loss(...)`: why a loss is NaN, as far as it can be told (bad inputs, a NaN
  setting, or a divergence: only the last is cured by a lower learning rate).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import sys
import warnings

import numpy as np

from . import backend


def _integer(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _real(value, name, condition, expected):
    """A real number (not a bool, not a string) that is finite and meets `condition`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or not condition(value):
        kind = f" ({type(value).__name__})" if not isinstance(value, numbers.Real) else ""
        raise ValueError(f"{name} must be {expected}, got {value!r}{kind}")


def validate_config(config):
    """Raise ValueError naming the field for anything a run could not use: before any work."""
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0),
                          ("warmup_epochs", 0)):
        _integer(getattr(config, name), name, minimum)
    _integer(config.val, "val (validation images held out)", 0)
    _real(config.lr, "lr", lambda v: v > 0, "a positive number")
    _real(config.momentum, "momentum", lambda v: 0 <= v < 1, "a number in [0, 1)")
    _real(config.weight_decay, "weight_decay", lambda v: v >= 0, "a finite number >= 0")
    if config.sparsity is not None:
        _real(config.sparsity, "sparsity", lambda v: 0 <= v < 1, "a number in [0, 1)")
    if config.optimizer not in ("sgd", "adam", "adamw"):
        raise ValueError(f"optimizer must be sgd, adam or adamw, got {config.optimizer!r}")
    if config.schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"schedule must be cosine, step or constant, got {config.schedule!r}")
    if not isinstance(config.progress, bool):
        raise ValueError(f"progress must be True or False, got {config.progress!r}")
    if config.device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {config.device!r}")
    if config.device == "cuda" and not backend.cuda_available():
        raise ValueError("device='cuda' (--device cuda) needs CuPy and an NVIDIA GPU; none "
                         "was found (install the 'gpu' extra on a machine with CUDA, or "
                         "train on the cpu)")
    if config.max_steps is not None:
        _integer(config.max_steps, "max_steps", 1)
    from .threads import check_threads
    check_threads(config.threads)
    from .algorithms.regularization import check_options
    check_options(config.l1, config.group_lasso, config.groups)
    validate_method(config)


def validate_method(config):
    """The method exists, takes the options given, and agrees with the sparsity."""
    from .algorithms.base import method_class
    from .algorithms.options import check_option_names
    cls = method_class(config.method)
    if not isinstance(config.method_options, dict):
        raise ValueError(f"method_options must be a dict, got {config.method_options!r}")
    if "sparsity" in config.method_options:
        raise ValueError("give the sparsity as TrainConfig.sparsity (--sparsity), not as a "
                         "method option")
    if config.method == "dense":
        if config.sparsity not in (None, 0, 0.0):
            raise ValueError(f"method 'dense' has no sparsity, got sparsity={config.sparsity} "
                             "(--sparsity): choose a sparse method (`sparsenet methods`)")
        if config.method_options:
            raise ValueError(f"method 'dense' takes no options, got "
                             f"{sorted(config.method_options)} (--opt, --pattern, --format, "
                             "--distribution apply to sparse methods)")
    check_option_names(config.method, cls, config.method_options)


def make_method(config):
    """(the method, config with its sparsity resolved). Sparsity left out (None): 0 for dense,
    n/m's for the N:M format, else the method's own default, announced by a warning (a sparse
    method trained quietly at the wrong sparsity is the surprise to avoid)."""
    from .algorithms import get_method
    options = dict(config.method_options)
    if config.method == "dense":
        return get_method("dense"), dataclasses.replace(config, sparsity=0.0)
    if config.sparsity is not None:
        options["sparsity"] = config.sparsity
    elif options.get("format") == "nm":
        options["sparsity"] = 1.0 - options.get("n", 2) / options.get("m", 4)
    method = get_method(config.method, **options)
    sparsity = float(getattr(method, "sparsity", 0.0) or 0.0)
    if config.sparsity is None and "sparsity" not in options and sparsity > 0:
        warnings.warn(f"{config.method}: no sparsity given (--sparsity): training at the "
                      f"method's default sparsity {sparsity:g}", stacklevel=3)
    return method, dataclasses.replace(config, sparsity=sparsity)


class Arrays(tuple):
    """(x_train, y_train, x_test, y_test, origin), as `load_arrays` returns it, which also knows
    the data set's declared number of classes (`num_classes`) and its input preprocessing."""

    def __new__(cls, items, num_classes, preprocess=None):
        arrays = super().__new__(cls, items)
        arrays.num_classes, arrays.preprocess = int(num_classes), preprocess
        return arrays


def num_classes_of(data) -> int:
    """The classes of `data`: declared by the data set (`load_arrays`), or, for plain arrays,
    one more than the largest label of either split."""
    declared = getattr(data, "num_classes", None)
    if declared is not None:
        return declared
    return int(max(np.max(data[1]), np.max(data[3]) if len(data[3]) else 0)) + 1


def check_arrays(data, num_classes):
    """Images finite, labels whole numbers in [0, num_classes): said as what they are."""
    for x, y, split in ((data[0], data[1], "training"), (data[2], data[3], "test")):
        if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all():
            bad = int(np.size(x) - np.isfinite(x).sum())
            raise ValueError(f"the {split} images hold {bad} NaN or infinite value(s): clean "
                             "the data (the loss would be NaN from the first step)")
        if len(y) and (np.min(y) < 0 or np.max(y) >= num_classes):
            raise ValueError(f"the {split} labels must lie in [0, {num_classes}) (the data "
                             f"set's classes), found {int(np.min(y))} .. {int(np.max(y))}")


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):               # replaced or closed stream
        return False


def non_finite_loss(loss, xb, model, optimizer, step, epoch, lr) -> str:
    """Why the loss is not finite, as far as it can be told: bad inputs, bad settings, or a
    divergence (only the last one is cured by a lower learning rate)."""
    where = f"the loss is {loss} at step {step + 1} (epoch {epoch})"
    if not np.isfinite(backend.to_numpy(xb)).all():
        return f"{where}: the input batch holds NaN or infinite values (clean the data)"
    for group in optimizer.param_groups:
        for key in ("lr", "weight_decay", "momentum"):
            value = group.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                return f"{where}: the optimizer's {key} is {value}"
    for name, p in model.named_parameters():
        if not np.isfinite(backend.to_numpy(p.data)).all():
            return (f"{where}: parameter {name} already held NaN or infinity before this step "
                    f"(training diverged earlier, at lr {lr:g}: lower the learning rate, --lr)")
    return (f"training diverged: {where} with lr {lr:g}; lower the learning rate (--lr). "
            "lenet5, with no nonlinearity between its convolutions, trains at 0.01 (Caffe's "
            "LeNet solver)")
