"""Module and Parameter, in PyTorch's shape.

A Module registers the Parameters and sub-Modules assigned to it as attributes, so that
`model.parameters()` finds every trainable tensor and `state_dict()` names every array.
A module whose stored arrays can change shape (a sparse layer after a topology update) overrides
`_own_state` / `_load_own_state`; the rest of the machinery stays the same.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable leaf: requires_grad is always on."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----- registration ------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               "before assigning attributes")
        target = (self._parameters if isinstance(value, Parameter)
                  else self._modules if isinstance(value, Module) else None)
        for table in (self._parameters, self._modules, self._buffers):
            if table is not target:
                table.pop(name, None)
        if target is not None:
            target[name] = value          # an existing name keeps its place (layer order matters)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array):
        """A non-trainable array that belongs in the state dict (a mask, an index array)."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def __delattr__(self, name):
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        object.__delattr__(self, name)

    # ----- traversal ---------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix=""):
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """Trainable numbers actually stored (for a sparse layer: its nonzeros)."""
        return sum(p.size for p in self.parameters())

    def get_submodule(self, name: str) -> "Module":
        module = self
        for part in name.split(".") if name else []:
            if part not in module._modules:
                raise KeyError(f"no submodule named {name!r} (stopped at {part!r})")
            module = module._modules[part]
        return module

    def replace_submodule(self, name: str, new: "Module"):
        """Swap the submodule at dotted `name` for `new` (used to sparsify a dense model).

        The old module's parameters that `new` does not take over are marked `replaced`: an
        optimizer built before the swap still holds them, and its `step` refuses to go on
        training parameters that are no longer part of the model.
        """
        parent_name, _, leaf = name.rpartition(".")
        parent = self.get_submodule(parent_name)
        if leaf not in parent._modules:
            raise KeyError(f"no submodule named {name!r}")
        old = parent._modules[leaf]
        setattr(parent, leaf, new)
        kept = {id(p) for p in new.parameters()}
        for p in old.parameters():
            if id(p) not in kept:
                p.replaced = f"layer {name!r}"

    # ----- modes -------------------------------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device: str):
        """Move every parameter and buffer to ``device`` ("cpu" or "cuda"), in place."""
        for m in self.modules():
            for p in m._parameters.values():
                p.data = backend.to_device(p.data, device)
                p.grad = None if p.grad is None else backend.to_device(p.grad, device)
            for name, buf in list(m._buffers.items()):
                m.register_buffer(name, backend.to_device(buf, device))
            m._moved_to(device)
        return self

    def _moved_to(self, device: str):
        """Hook for modules that cache derived arrays (a CSC permutation) to move them too."""

    # ----- state -------------------------------------------------------------------------
    def _own_state(self) -> "OrderedDict[str, np.ndarray]":
        state = OrderedDict((k, p.data) for k, p in self._parameters.items())
        state.update(self._buffers)
        return state

    def _check_own_state(self, state: dict, prefix: str):
        """Raise if `state` (this module's entries, local names) cannot be loaded."""
        own = self._own_state()
        for name, new in state.items():
            current = own[name]
            if new.shape != current.shape or new.dtype != current.dtype:
                raise ValueError(f"state_dict entry {prefix}{name} has shape {new.shape} and dtype "
                                 f"{new.dtype}; the model expects {current.shape} {current.dtype}")

    def _load_own_state(self, state: dict, prefix: str):
        own = self._own_state()
        for name, new in state.items():
            xp = backend.array_module(own[name])
            if name in self._parameters:
                self._parameters[name].data = xp.array(new)
            else:
                self.register_buffer(name, xp.array(new))

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every parameter and buffer as a NumPy array (copies), keyed by dotted name."""
        out = OrderedDict()
        for mod_name, module in self.named_modules():
            for name, arr in module._own_state().items():
                out[f"{mod_name}.{name}" if mod_name else name] = np.array(backend.to_numpy(arr))
        return out

    def load_state_dict(self, state: dict, strict: bool = True):
        """Load arrays by name. With strict=True missing or unexpected names are an error."""
        expected = set()
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            expected.update(prefix + k for k in module._own_state())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        per_module = []
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            own_names = set(module._own_state())
            own = {k[len(prefix):]: v for k, v in state.items()
                   if k.startswith(prefix) and k[len(prefix):] in own_names}
            module._check_own_state(own, prefix)
            per_module.append((module, own, prefix))
        for module, own, prefix in per_module:      # everything checked first: a failure changes nothing
            module._load_own_state(own, prefix)
        return self

    # ----- calling and printing ----------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ")
                 for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")
