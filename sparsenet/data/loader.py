"""Mini-batches over in-memory arrays."""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np

__all__ = ["BatchLoader"]


def _check_int(value, argname: str, minimum: int) -> int:
    # bool is an int subclass, but batch_size=True is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argname} must be >= {minimum}, got {value}")
    return int(value)


def _check_bool(value, argname: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname} must be a bool, got {type(value).__name__}")
    return bool(value)


class BatchLoader:
    """Iterate over (x_batch, y_batch) pairs taken along the first axis.

    Each pass over the loader is one epoch. With `shuffle`, epoch `e` uses a
    permutation drawn from a generator seeded with (seed, e): two loaders
    built with the same seed yield the same sequence of epochs, while
    successive epochs of one loader differ. The epoch counter advances when
    iteration starts; set `loader.epoch` to replay or skip epochs (for
    example when resuming from a checkpoint).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        for array, argname in ((x, "x"), (y, "y")):
            if not isinstance(array, np.ndarray):
                raise TypeError(f"{argname} must be a numpy.ndarray, got {type(array).__name__}")
            if array.ndim == 0:
                raise ValueError(f"{argname} must have at least one dimension, got a scalar")
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if len(x) == 0:
            raise ValueError("x and y must not be empty")
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.shuffle = _check_bool(shuffle, "shuffle")
        self.seed = _check_int(seed, "seed", 0)
        self.drop_last = _check_bool(drop_last, "drop_last")
        if self.drop_last and self.batch_size > len(x):
            # Otherwise every epoch would silently be empty.
            raise ValueError(
                f"drop_last=True with batch_size={self.batch_size} > {len(x)} samples "
                "would give no batches"
            )
        self.x = x
        self.y = y
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch `epoch`, in the order they are served."""
        epoch = _check_int(epoch, "epoch", 0)
        if not self.shuffle:
            return np.arange(self.num_samples)
        # A SeedSequence built from both numbers gives independent streams
        # per epoch without any state carried between epochs.
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.num_samples)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Drawn here, not inside the generator, so the epoch advances as soon
        # as iter() is called, even if the caller never takes a batch.
        indices = self.order(self.epoch)
        self.epoch += 1
        return self._batches(indices)

    def _batches(self, indices: np.ndarray):
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chosen = indices[start:start + self.batch_size]
            yield self.x[chosen], self.y[chosen]
