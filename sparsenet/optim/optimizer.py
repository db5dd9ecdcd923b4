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

import math
import numbers

import numpy as np

from .. import backend
from ..kernels import get_backend
from ..tensor import no_grad


def _flat_kernel(name, *arrays):
    """The fused update kernel `name` and flat views of `arrays`, or (None, None) when an array
    is not contiguous or its backend has no such kernel (the NumPy expressions then run)."""
    if not all(a.flags.c_contiguous for a in arrays) or arrays[0].dtype.kind != "f":
        return None, None
    kernel = getattr(get_backend(*arrays), name, None)
    return kernel, [a.reshape(-1) for a in arrays]


class Optimizer:
    _state_names = ()                       # the arrays `_state` keeps per parameter

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
        for key in ("lr", "weight_decay", "momentum", "eps"):
            value = group.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
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

    # ----- state, as PyTorch lays it out -------------------------------------------------------
    def _indexed_params(self) -> list:
        """Every parameter once, numbered in group order (how state_dict names them)."""
        seen, params = set(), []
        for g in self.param_groups:
            for p in g["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def state_dict(self) -> dict:
        """{"state": {index: {name: array, "step": int}}, "param_groups": [{hyperparameters...,
        "params": [index, ...]}]}, parameters numbered in group order as PyTorch does. The
        arrays are NumPy copies."""
        params = self._indexed_params()
        index = {id(p): i for i, p in enumerate(params)}
        state = {}
        for p in params:
            st = self.state.get(id(p))
            if st is not None:
                state[index[id(p)]] = {k: v if k == "step" else backend.to_numpy(v).copy()
                                       for k, v in st.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load what `state_dict` returned (of an optimizer of the same kind over parameters
        of the same shapes, in the same order). Everything is checked before anything changes."""
        params = self._indexed_params()
        groups, state = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(state, dict):
            raise ValueError("state_dict must have 'state' (a dict) and 'param_groups' (a list)")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, the optimizer "
                             f"{len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if set(saved) != set(own):
                raise ValueError(f"parameter group {i} has the settings {sorted(saved)}, the "
                                 f"optimizer's {sorted(own)}: another kind of optimizer?")
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"parameter group {i} has {len(saved['params'])} parameters in "
                                 f"state_dict, {len(own['params'])} in the optimizer")
        names = set(self._state_names) | {"step"}
        new_state = {}
        for key, st in state.items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"state_dict has state for parameter {i}; the optimizer has "
                                 f"{len(params)}")
            if set(st) != names:
                raise ValueError(f"state of parameter {i} has {sorted(st)}, expected "
                                 f"{sorted(names)}")
            p = params[i]
            xp = backend.array_module(p.data)
            for name in self._state_names:
                if tuple(st[name].shape) != tuple(p.data.shape) or st[name].dtype != p.data.dtype:
                    raise ValueError(f"state {name!r} of parameter {i} has shape "
                                     f"{tuple(st[name].shape)} and dtype {st[name].dtype}; the "
                                     f"parameter {p.data.shape} {p.data.dtype}")
            if isinstance(st["step"], bool) or not isinstance(st["step"], (int, np.integer)):
                raise ValueError(f"state 'step' of parameter {i} must be an integer, got "
                                 f"{st['step']!r}")
            new_state[id(p)] = {k: int(v) if k == "step" else xp.array(v)
                                for k, v in st.items()}
        for saved, own in zip(groups, self.param_groups):
            try:
                self._check(dict(own, **saved))
            except TypeError as err:
                raise ValueError(f"state_dict has a parameter group with bad settings: {err}") \
                    from None
        for saved, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state

    def step(self):
        self._check_not_replaced()
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

    def _check_not_replaced(self):
        """A parameter whose layer was swapped out (sparsify, a method's setup) after this
        optimizer was built gets no gradient any more: stepping on would silently train only
        the layers that were not replaced, so refuse instead."""
        for group in self.param_groups:
            for p in group["params"]:
                where = getattr(p, "replaced", None)
                if where:
                    raise RuntimeError(
                        f"this optimizer holds a parameter of {where} (shape {p.shape}) that "
                        "was replaced after the optimizer was built (sparsify or a method's "
                        "setup swapped the layer): build the optimizer from model.parameters() "
                        "after method.setup / sparsify, as sparsenet.train does")


class SGD(Optimizer):
    """PyTorch's SGD: v = mu*v + (g + wd*w); w -= lr * (g + mu*v if nesterov else v)."""

    _state_names = ("momentum",)

    def __init__(self, params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _update(self, p, grad, group):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        buf = self._state(p, ("momentum",))["momentum"] if mu else None
        kernel, flat = _flat_kernel("sgd_update", p.data, grad, *([buf] if mu else []))
        if kernel is not None:                  # one pass instead of five (same numbers)
            kernel(flat[0], flat[1], flat[2] if mu else flat[0][:0], lr, mu, wd,
                   bool(group["nesterov"]))
            return
        if wd:
            grad = grad + wd * p.data
        if mu:
            buf *= mu
            buf += grad
            grad = grad + mu * buf if group["nesterov"] else buf
        p.data -= p.data.dtype.type(lr) * grad


class Adam(Optimizer):
    """Kingma & Ba 2015, with bias correction; weight_decay adds wd*w to the gradient (L2)."""

    decoupled = False
    _state_names = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must each be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, grad, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        st = self._state(p, ("m", "v"))
        st["step"] += 1
        t = st["step"]
        kernel, flat = _flat_kernel("adam_update", p.data, grad, st["m"], st["v"])
        if kernel is not None:                  # one pass (same numbers)
            kernel(*flat, lr, b1, b2, eps, wd, self.decoupled, t)
            return
        if wd and self.decoupled:
            p.data *= p.data.dtype.type(1 - lr * wd)
        elif wd:
            grad = grad + wd * p.data
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
