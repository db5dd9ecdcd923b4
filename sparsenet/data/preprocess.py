"""The input preprocessing a trained model expects, carried with the model.

sparsenet trains on standardized pixels, x = (pixel / 255 − mean) / std with Fashion-MNIST's
training statistics (`to_float`), for MNIST as well. A model fed anything else (raw uint8, or
the [0, 1] floats of torchvision's `ToTensor`) still runs, and silently loses accuracy. So every
model `build_model` makes, and hence every model `sparsenet.load` rebuilds from its spec,
carries `model.preprocess`, a `Standardize`: call it on images before the model.

    model = sn.load("lenet300.safetensors")
    logits = model(sn.Tensor(model.preprocess(images)))    # uint8 (N, 28, 28) or [0, 1] floats
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from .datasets import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ["Standardize"]


@dataclasses.dataclass(frozen=True)
class Standardize:
    """pixels -> (pixels / 255 − mean) / std as float32 (N, 1, H, W).

    Accepts uint8 pixels (0 .. 255) or floats already scaled to [0, 1], of shape (N, H, W),
    (N, 1, H, W) or (N, H·W) for square images; anything else is refused rather than guessed
    (floats outside [0, 1] may already be standardized: passing them twice would be wrong).
    """

    mean: float = FASHION_MNIST_MEAN
    std: float = FASHION_MNIST_STD

    def __post_init__(self):
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype == np.uint8:
            scaled = images.astype(np.float32) / np.float32(255.0)
        elif np.issubdtype(images.dtype, np.floating):
            if images.size and not np.isfinite(images).all():
                raise ValueError("images hold NaN or infinite values")
            if images.size and (images.min() < 0 or images.max() > 1):
                raise ValueError(f"float images must be pixels scaled to [0, 1] (as "
                                 f"torchvision's ToTensor gives), found values in "
                                 f"[{images.min():.4g}, {images.max():.4g}]: already "
                                 "standardized? then feed them to the model as they are")
            scaled = images.astype(np.float32)
        else:
            raise TypeError(f"images must be uint8 pixels or floats in [0, 1], got {images.dtype}")
        x = (scaled - np.float32(self.mean)) / np.float32(self.std)
        return x[:, None] if x.ndim == 3 else self._as_nchw(x)

    @staticmethod
    def _as_nchw(x):
        if x.ndim == 4 and x.shape[1] == 1:
            return x
        side = int(round(np.sqrt(x.shape[1]))) if x.ndim == 2 else 0
        if x.ndim == 2 and side * side == x.shape[1]:
            return x.reshape(len(x), 1, side, side)
        raise ValueError(f"images must have shape (N, H, W), (N, 1, H, W) or (N, H*W) of a "
                         f"square image, got {x.shape}")

    def to_json(self) -> str:
        """What a model file's metadata can hold (`from_json` reads it back)."""
        return json.dumps({"kind": "standardize", "scale": 1 / 255, "mean": self.mean,
                           "std": self.std})

    @classmethod
    def from_json(cls, text: str) -> "Standardize":
        try:
            fields = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"preprocessing metadata is not JSON: {e}") from None
        if not isinstance(fields, dict) or fields.get("kind") != "standardize":
            raise ValueError(f"preprocessing metadata must describe kind 'standardize', got "
                             f"{fields!r}")
        return cls(mean=fields.get("mean"), std=fields.get("std"))
