"""SGD, Adam and AdamW, with state that follows a sparse weight through topology changes.

The optimizer keeps per-parameter state (momentum, Adam moments) as arrays shaped like the
parameter. A sparse layer's `values` change length when its topology changes; the layer reports
`new_from_old` (for each new position, the old position it came from, or -1 for a new weight) and
`remap(param, new_from_old)` carries every state array across: a surviving weight keeps its
momentum, a new weight starts from zero, and a dropped weight's state is gone, so nothing can
bring it back to life.

On a GPU each step of a parameter is one fused kernel (`kernels.gpu.sgd_update` /
`adam_update`, the same arithmetic as the array expressions below, which the CPU runs).
"""
from __future__ import annotations

from .. import backend
from ..kernels import get_backend
from ..tensor import no_grad


class Optimizer:
    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if isinstance(params[0], dict):
            groups = [dict(defaults, **g) for g in params]
        else:
            groups = [dict(defaults, params=params)]
        for g in groups:
            g["params"] = list(g["params"])
            g["initial_lr"] = g["lr"]
            self._check(g)
        self.param_groups = groups
        self.state = {}                     # id(param) -> {name: array}

    @staticmethod
    def _check(group):
        if not group["lr"] >= 0:
            raise ValueError(f"lr must be >= 0, got {group['lr']}")
        if group.get("weight_decay", 0) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']}")

    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    def zero_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def _state(self, p, names):
        st = self.state.get(id(p))
        if st is None:
            xp = backend.array_module(p.data)
            st = {n: xp.zeros_like(p.data) for n in names}
            st["step"] = 0
            self.state[id(p)] = st
        elif st[names[0]].shape != p.data.shape:
            raise RuntimeError(f"optimizer state has shape {st[names[0]].shape} but the parameter "
                               f"now has shape {p.data.shape}: after a topology change call "
                               "optimizer.remap(param, new_from_old)")
        return st

    def remap(self, param, new_from_old):
        """Carry state across a topology change (see the module docstring)."""
        st = self.state.get(id(param))
        if st is None:
            return
        xp = backend.array_module(param.data)
        src = xp.asarray(new_from_old)
        keep = src >= 0
        for name, arr in st.items():
            if name == "step":
                continue
            new = xp.zeros(src.shape, dtype=arr.dtype)
            new[keep] = arr[src[keep]]
            st[name] = new

    def step(self):
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        if p.grad.shape != p.data.shape:
                            raise RuntimeError(f"gradient of shape {p.grad.shape} does not match "
                                               f"parameter of shape {p.data.shape}")
                        self._update(p, p.grad, group)

    def _update(self, p, grad, group):
        raise NotImplementedError


def _fused_on_gpu(p, grad) -> bool:
    """A parameter the gpu's fused kernels can update in place (as a flat view)."""
    return (backend.device_of(p.data) == "cuda" and p.data.flags.c_contiguous
            and grad.dtype == p.data.dtype)


class SGD(Optimizer):
    """PyTorch's SGD: v = mu*v + (g + wd*w); w -= lr * (g + mu*v if nesterov else v)."""

    def __init__(self, params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _update(self, p, grad, group):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if _fused_on_gpu(p, grad):
            buf = self._state(p, ("momentum",))["momentum"].reshape(-1) if mu else p.data[:0]
            get_backend(p.data).sgd_update(p.data.reshape(-1), grad.reshape(-1), buf, float(lr),
                                           float(mu), float(wd), bool(group["nesterov"]))
            return
        if wd:
            grad = grad + wd * p.data
        if mu:
            buf = self._state(p, ("momentum",))["momentum"]
            buf *= mu
            buf += grad
            grad = grad + mu * buf if group["nesterov"] else buf
        p.data -= p.data.dtype.type(lr) * grad


class Adam(Optimizer):
    """Kingma & Ba 2015, with bias correction; weight_decay adds wd*w to the gradient (L2)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must each be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, grad, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if _fused_on_gpu(p, grad):
            st = self._state(p, ("m", "v"))
            st["step"] += 1
            get_backend(p.data).adam_update(p.data.reshape(-1), grad.reshape(-1),
                                            st["m"].reshape(-1), st["v"].reshape(-1), float(lr),
                                            float(b1), float(b2), float(eps), float(wd),
                                            self.decoupled, st["step"])
            return
        if wd and self.decoupled:
            p.data *= p.data.dtype.type(1 - lr * wd)
        elif wd:
            grad = grad + wd * p.data
        st = self._state(p, ("m", "v"))
        st["step"] += 1
        t = st["step"]
        st["m"] *= b1
        st["m"] += (1 - b1) * grad
        st["v"] *= b2
        st["v"] += (1 - b2) * grad * grad
        xp = backend.array_module(p.data)
        m_hat_scale = 1 / (1 - b1 ** t)                    # bias corrections, as in the paper
        v_hat = st["v"] / p.data.dtype.type(1 - b2 ** t)
        p.data -= p.data.dtype.type(lr * m_hat_scale) * st["m"] / (xp.sqrt(v_hat) + eps)


class AdamW(Adam):
    """Loshchilov & Hutter 2019: weight decay applied to the weights, not through the gradient."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
