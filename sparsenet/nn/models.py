"""Models by name, as the papers define them (for 28x28 grey images, 10 classes by default).

- `lenet300`: LeNet-300-100, fully connected 784-300-100-10 (LeCun et al. 1998; the network of
  Han et al. 2015 and Frankle & Carbin 2019).
- `lenet5`: Caffe's LeNet-5: conv 20@5x5, pool 2, conv 50@5x5, pool 2, fc 500, fc 10.
- `conv2`, `conv4`, `conv6`: the Lottery Ticket paper's VGG-like convnets (Frankle & Carbin 2019,
  Figure 2): 3x3 convolutions with 64, 64 | 128, 128 | 256, 256 filters, a 2x2 max-pool after
  each pair, then fully connected 256-256-10.
- `mlp:784-4096-4096-10`: any stack of fully connected layers with ReLU between them.
- `gpt:L4-D128-H4-T64` (and `...-E8-K2` with experts): a decoder-only transformer for
  character-level text, `num_classes` being the vocabulary (see `sparsenet.nn.transformer`).
"""
from __future__ import annotations

from .layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

NAMED = ("lenet300", "lenet5", "conv2", "conv4", "conv6")


def mlp(sizes, rng=None) -> Sequential:
    layers = [Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, rng=rng))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def lenet5(in_channels=1, image_size=28, num_classes=10, rng=None) -> Sequential:
    side = ((image_size - 4) // 2 - 4) // 2
    return Sequential(
        Conv2d(in_channels, 20, 5, rng=rng), MaxPool2d(2),
        Conv2d(20, 50, 5, rng=rng), MaxPool2d(2),
        Flatten(), Linear(50 * side * side, 500, rng=rng), ReLU(), Linear(500, num_classes, rng=rng))


def lottery_convnet(n_pairs, in_channels=1, image_size=28, num_classes=10, rng=None) -> Sequential:
    layers, channels, side = [], in_channels, image_size
    for width in (64, 128, 256)[:n_pairs]:
        layers += [Conv2d(channels, width, 3, padding=1, rng=rng), ReLU(),
                   Conv2d(width, width, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2)]
        channels, side = width, side // 2
    layers += [Flatten(), Linear(channels * side * side, 256, rng=rng), ReLU(),
               Linear(256, 256, rng=rng), ReLU(), Linear(256, num_classes, rng=rng)]
    return Sequential(*layers)


def build_model(spec: str, input_shape=(1, 28, 28), num_classes=10, rng=None) -> Sequential:
    """A model from its name (see the module docstring). The spec is kept as `model.spec`."""
    if not isinstance(spec, str):
        raise TypeError(f"model spec must be a string, got {type(spec).__name__}")
    channels, height, width = input_shape
    if spec == "lenet300":
        model = mlp([channels * height * width, 300, 100, num_classes], rng=rng)
    elif spec == "lenet5":
        model = lenet5(channels, height, num_classes, rng=rng)
    elif spec in ("conv2", "conv4", "conv6"):
        model = lottery_convnet(int(spec[-1]) // 2, channels, height, num_classes, rng=rng)
    elif spec.startswith("gpt:"):
        from .transformer import build_gpt
        model = build_gpt(spec, vocabulary=num_classes, rng=rng)
    elif spec.startswith("mlp:"):
        try:
            sizes = [int(s) for s in spec[4:].split("-")]
        except ValueError:
            raise ValueError(f"mlp spec must look like 'mlp:784-300-10', got {spec!r}") from None
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ValueError(f"mlp spec needs at least two positive sizes, got {spec!r}")
        if sizes[0] != channels * height * width:
            raise ValueError(f"mlp spec {spec!r} starts with {sizes[0]} inputs but the data has "
                             f"{channels * height * width}")
        model = mlp(sizes, rng=rng)
    else:
        raise ValueError(f"unknown model {spec!r}: expected one of {', '.join(NAMED)}, "
                         "'mlp:IN-H1-...-OUT' or 'gpt:L4-D128-H4-T64'")
    model.spec = spec
    return model
