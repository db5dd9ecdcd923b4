"""Neural-network operations: activations, linear, losses, dropout, convolution, pooling.

Same pattern as `sparsenet.ops`: one Function per operation, forward and backward side by side,
and a small function that users call (`F.relu(x)`, `F.cross_entropy(logits, labels)`).
"""
from __future__ import annotations

from .. import backend, random
from ..tensor import Function, Tensor


class ReLU(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, g):
        return (g * self.positive,)


class Tanh(Function):
    def forward(self, x):
        self.out = backend.array_module(x).tanh(x)
        return self.out

    def backward(self, g):
        return (g * (1 - self.out * self.out),)


class Sigmoid(Function):
    def forward(self, x):
        xp = backend.array_module(x)
        # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) and never overflows
        self.out = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.out

    def backward(self, g):
        return (g * self.out * (1 - self.out),)


class Linear(Function):
    """y = x @ W.T + b in one operation: the layer PyTorch users know, with one graph node."""

    def forward(self, x, weight, bias=None):
        if x.dtype != weight.dtype:
            raise TypeError(f"linear: input dtype {x.dtype} differs from weight dtype {weight.dtype}")
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                             f"{weight.shape} (expected input's last dimension {weight.shape[1]})")
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        y = x @ weight.T                                     # (batch, out)
        return y + bias if bias is not None else y

    def backward(self, g):
        x2 = self.x.reshape(-1, self.x.shape[-1])            # (batch, in)
        g2 = g.reshape(-1, g.shape[-1])                      # (batch, out)
        gx = None
        if self.needs_grad[0] and self.x.ndim == 2 and not self.x.flags.c_contiguous and \
                self.x.flags.f_contiguous:
            # the input is feature-major (a sparse layer's output): give its gradient the same
            # layout, which the sparse layer's backward then reads without a transposed copy
            gx = (self.weight.T @ g2.T).T
        elif self.needs_grad[0]:
            gx = (g2 @ self.weight).reshape(self.x.shape)
        gw = g2.T @ x2 if self.needs_grad[1] else None       # (out, in)
        return (gx, gw, g2.sum(axis=0)) if self.has_bias else (gx, gw)


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        xp = backend.array_module(x)
        shifted = x - x.max(axis=axis, keepdims=True)
        self.out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.axis = axis
        return self.out

    def backward(self, g):
        xp = backend.array_module(g)
        return (g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True),)


class CrossEntropy(Function):
    """Mean negative log-likelihood of integer labels under softmax(logits), fused and stable."""

    def forward(self, logits, labels):
        xp = backend.array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self.log_probs, self.labels = log_probs, labels
        rows = xp.arange(len(labels))
        return -log_probs[rows, labels].mean()

    def backward(self, g):
        xp = backend.array_module(g)
        grad = xp.exp(self.log_probs)
        grad[xp.arange(len(self.labels)), self.labels] -= 1
        return g * grad / grad.dtype.type(len(self.labels)), None


class Dropout(Function):
    def forward(self, x, p, rng):
        # drawn on the host from the library's generator, so a GPU run drops what a CPU run does
        keep = backend.to_device(rng.random(x.shape) >= p, backend.device_of(x))
        self.scale_mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
        return x * self.scale_mask

    def backward(self, g):
        return (g * self.scale_mask,)


def relu(x: Tensor) -> Tensor:
    return ReLU.apply(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(x)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits: Tensor, labels) -> Tensor:
    """Mean cross-entropy of `logits` (batch, classes) against integer `labels` (batch,)."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    xp = backend.array_module(logits.data)
    labels = xp.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (batch, classes), got shape {logits.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: labels must have shape ({logits.shape[0]},) to match "
                         f"logits {logits.shape}, got {labels.shape}")
    n_classes = logits.shape[1]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"cross_entropy: labels must lie in [0, {n_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return CrossEntropy.apply(logits, Tensor(labels))


def dropout(x: Tensor, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p, rng=rng or random.generator())


def flatten(x: Tensor, start_dim: int = 1) -> Tensor:
    return x.flatten(start_dim)


def _pair(v, name, least=None):
    """(a, b) from an int or a pair of ints; with `least`, each must be >= least (a stride or
    kernel of 0 or less, a negative padding, would compute something else silently)."""
    if isinstance(v, int) and not isinstance(v, bool):
        pair = v, v
    elif isinstance(v, tuple) and len(v) == 2 and all(isinstance(i, int) and not isinstance(i, bool)
                                                      for i in v):
        pair = v
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if least is not None and min(pair) < least:
        raise ValueError(f"{name} must be an int or a pair of ints >= {least}, got {v!r}")
    return pair


def _windows(x, kh, kw, stride):
    """A strided view (B, C, H_out, W_out, kh, kw) of every window; no copy."""
    xp = backend.array_module(x)
    view = xp.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view[:, :, ::stride[0], ::stride[1]]


def _pad(x, padding):
    if padding == (0, 0):
        return x
    xp = backend.array_module(x)
    ph, pw = padding
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _scatter_windows(grad_windows, padded_shape, stride, padding):
    """The adjoint of `_windows`: add each window's gradient back where it came from."""
    xp = backend.array_module(grad_windows)
    _, _, h_out, w_out, kh, kw = grad_windows.shape
    out = xp.zeros(padded_shape, dtype=grad_windows.dtype)
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * h_out:sh, j:j + sw * w_out:sw] += grad_windows[..., i, j]
    ph, pw = padding
    return out[:, :, ph:padded_shape[2] - ph, pw:padded_shape[3] - pw]


class Conv2d(Function):
    """2-D convolution (cross-correlation, as in PyTorch) through im2col and one matmul."""

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
        if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
            raise ValueError(f"conv2d: input (batch, C, H, W) = {x.shape} and weight "
                             f"(out, C, kh, kw) = {weight.shape} do not match")
        if x.dtype != weight.dtype:
            raise TypeError(f"conv2d: input dtype {x.dtype} differs from weight dtype {weight.dtype}")
        o, c, kh, kw = weight.shape
        xp_ = _pad(x, padding)
        if xp_.shape[2] < kh or xp_.shape[3] < kw:
            raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input "
                             f"{xp_.shape[2]}x{xp_.shape[3]}")
        win = _windows(xp_, kh, kw, stride)                  # (B, C, Ho, Wo, kh, kw)
        b, _, h_out, w_out = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(b * h_out * w_out, c * kh * kw)
        self.cols, self.weight, self.has_bias = cols, weight, bias is not None
        self.geometry = (x.shape, xp_.shape, h_out, w_out, stride, padding)
        y = cols @ weight.reshape(o, -1).T                   # (B*Ho*Wo, out)
        if bias is not None:
            y += bias
        return y.reshape(b, h_out, w_out, o).transpose(0, 3, 1, 2)

    def backward(self, g):
        x_shape, padded_shape, h_out, w_out, stride, padding = self.geometry
        o, c, kh, kw = self.weight.shape
        g2 = g.transpose(0, 2, 3, 1).reshape(-1, o)          # (B*Ho*Wo, out)
        gw = (g2.T @ self.cols).reshape(self.weight.shape) if self.needs_grad[1] else None
        gx = None
        if self.needs_grad[0]:
            gcols = g2 @ self.weight.reshape(o, -1)          # (B*Ho*Wo, C*kh*kw)
            gwin = gcols.reshape(x_shape[0], h_out, w_out, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)
            gx = _scatter_windows(gwin, padded_shape, stride, padding)
        return (gx, gw, g2.sum(axis=0)) if self.has_bias else (gx, gw)


class MaxPool2d(Function):
    def forward(self, x, kernel_size, stride):
        if x.ndim != 4:
            raise ValueError(f"max_pool2d: input must be (batch, C, H, W), got shape {x.shape}")
        kh, kw = kernel_size
        win = _windows(x, kh, kw, stride)                    # (B, C, Ho, Wo, kh, kw)
        flat = win.reshape(*win.shape[:4], kh * kw)
        self.argmax = flat.argmax(axis=-1)                   # first maximum wins, like PyTorch
        self.shape, self.kernel, self.stride = x.shape, (kh, kw), stride
        return flat.max(axis=-1)

    def backward(self, g):
        xp = backend.array_module(g)
        kh, kw = self.kernel
        hit = self.argmax[..., None] == xp.arange(kh * kw)   # (B, C, Ho, Wo, kh*kw)
        gwin = (hit * g[..., None]).reshape(*g.shape, kh, kw)
        return (_scatter_windows(gwin, self.shape, self.stride, (0, 0)),)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0) -> Tensor:
    options = dict(stride=_pair(stride, "stride", 1), padding=_pair(padding, "padding", 0))
    if bias is None:
        return Conv2d.apply(x, weight, **options)
    return Conv2d.apply(x, weight, bias, **options)


def max_pool2d(x: Tensor, kernel_size=2, stride=None) -> Tensor:
    kernel = _pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else _pair(stride, "stride", 1)
    return MaxPool2d.apply(x, kernel_size=kernel, stride=stride)


__all__ = ["relu", "tanh", "sigmoid", "linear", "log_softmax", "cross_entropy", "dropout",
           "flatten", "conv2d", "max_pool2d"]
