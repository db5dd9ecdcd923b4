"""The few hooks a training loop calls, and the registry of methods by name.

A method is an object with five hooks; the loop in `sparsenet.train` calls them in this order:

    method.setup(model, optimizer, loader, total_steps)   # once: sparsify, prune at init, ...
    for each step t:
        loss.backward()
        method.after_backward(t)      # edit gradients (gradient annealing, regularization)
        optimizer.step()
        method.after_step(t)          # re-apply masks, update the topology
    method.after_epoch(epoch)

`topology_changed()` tells the loop to recount FLOPs; `extra_flops()` reports work beyond the
3-forward training step (RigL's dense gradients). `describe()` adds fields to the run record.
A method never looks at a layer's format: it talks to layers through the topology interface.

`state_dict()` / `load_state_dict()` carry a method's own state through a checkpoint (see
sparsenet/checkpoint.py): every attribute that holds plain data (numbers, strings, NumPy arrays
and generators, and lists, tuples and dicts of them: a schedule's log, a step counter, a rewind
point, a per-layer budget), by value. Attributes that hold the model, its layers, the optimizer
or helper objects are rebuilt by `setup` and left out; a method whose state lives on its layers
adds it by overriding both (dst.py, autosparse.py).

A method's options are its constructor's keyword arguments; each class declares what they mean
and where their defaults come from in `option_help` (options.py reads both, and
`sparsenet methods NAME` prints them). `get_method` refuses an option the method lacks.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np

from .options import check_option_names


def is_plain(value) -> bool:
    """Data a checkpoint can hold by value: no module, layer, optimizer or other object."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic,
                                           np.random.Generator)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and is_plain(v) for k, v in value.items())
    return False


class Method:
    name = "dense"

    def setup(self, model, optimizer, loader, total_steps: int):
        self.model, self.optimizer, self.loader, self.total_steps = model, optimizer, loader, total_steps

    def after_backward(self, step: int):
        pass

    def after_step(self, step: int):
        pass

    def after_epoch(self, epoch: int):
        pass

    def topology_changed(self) -> bool:
        """True once after each change of any layer's stored positions: a method that changes
        them sets `self._changed = True`, and this reads and clears it."""
        changed = getattr(self, "_changed", False)
        if changed:
            self._changed = False
        return changed

    def extra_flops(self) -> float:
        """FLOPs spent since the last call beyond the ordinary training step: a method adds them
        to `self._extra`, and this reads and clears it."""
        extra = getattr(self, "_extra", 0.0)
        if extra:
            self._extra = 0.0
        return extra

    def describe(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        """{attribute: value} of every attribute holding plain data (`is_plain`)."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if is_plain(v)})

    def load_state_dict(self, state: dict) -> None:
        """Set the attributes of `state_dict()`; a generator is restored in place, so one
        shared with the library (`sparsenet.random.generator()`) stays shared."""
        for name, value in state.items():
            current = getattr(self, name, None)
            if isinstance(value, np.random.Generator) and isinstance(current, np.random.Generator):
                current.bit_generator.state = value.bit_generator.state
            else:
                setattr(self, name, value)


class Dense(Method):
    """No sparsity: the baseline every method is compared against."""

    option_help = {}


FORMATS = ("csr", "block", "nm", "masked")
BLOCK_SIZES = (16, 8, 4, 2)          # tried in this order when no block_size is given

# sparse_init="auto": initialise at the stored fan-in when the dense-fan-in initialisation
# would leave the network's output this small a fraction of the dense network's (see dst.py)
AUTO_SIGNAL_SCALE = 1e-3


def signal_scale(densities) -> float:
    """How much a dense-fan-in initialisation shrinks the signal through the sparse layers:
    each layer at density d multiplies the standard deviation of its output by sqrt(d)
    (it sums d of the inputs the initialisation was scaled for), so the network's output is
    the product of those against the dense network's."""
    return float(np.prod([np.sqrt(d) for d in densities.values() if d < 1] or [1.0]))


def check_sparse_init(value):
    if value != "auto" and not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"sparse_init must be true, false or \"auto\", got {value!r}")
    return value if value == "auto" else bool(value)


class SparseMethod(Method):
    """A method with a target sparsity stored in a sparse format (the options every one shares).

    sparsity: fraction of weights removed overall; format: csr | block | nm | masked (the rule
    is the same, the format enforces the structure); block_size for block, n and m for N:M;
    distribution: how the sparsity is shared among layers (uniform | er | erk);
    dense_layers: layer names (or 'first' / 'last') kept dense.

    Blocks must tile a weight: a layer whose sides the block size does not divide (LeNet-300's
    300 x 784 for 16) is kept dense, with a warning (`fit_format`, called by `setup`); with no
    block_size given, the largest of 16, 8, 4, 2 that tiles 90 % of the weights is taken.
    """

    option_help = {
        "sparsity": "fraction of the weights removed overall, in [0, 1) (`--sparsity`)",
        "format": "storage of the sparse layers: csr | block | nm | masked; the rule is the "
                  "same, the format enforces its structure (`--format`, `--pattern`)",
        "block_size": "side of the square blocks of format block (`--pattern block:BS`); "
                      "default: the largest of 16, 8, 4, 2 that tiles 90 % of the weights; "
                      "a layer the blocks do not tile stays dense",
        "n": "format nm keeps n of every m consecutive inputs (`--pattern nm:N:M`; 2:4 is "
             "NVIDIA Ampere's sparse pattern)",
        "m": "the group size of format nm (see n)",
        "distribution": "how the sparsity is shared among layers: uniform | er | erk "
                        "(Erdős–Rényi-Kernel, Evci et al. 2020, Section 3) (`--distribution`)",
        "dense_layers": "layer names (or 'first', 'last') kept dense, e.g. [\"first\"]",
    }

    def __init__(self, sparsity=0.9, format="csr", block_size=None, n=2, m=4,
                 distribution="erk", dense_layers=()):
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if format == "nm" and not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
            raise ValueError(f"the N:M format needs integers 0 < n < m, got n={n}, m={m}")
        if distribution not in ("uniform", "er", "erk"):
            raise ValueError(f"distribution must be uniform, er or erk, got {distribution!r}")
        if block_size is not None and (isinstance(block_size, bool)
                                       or not isinstance(block_size, int) or block_size <= 0):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.sparsity, self.format, self.distribution = sparsity, format, distribution
        self.block_size, self.n, self.m = block_size, n, m
        self.dense_layers = tuple([dense_layers] if isinstance(dense_layers, str) else dense_layers)
        self.untiled_layers, self._asked_dense = (), self.dense_layers

    sparse_from_scratch = False    # True: the model is built sparse (`build_options`), never dense

    def format_options(self) -> dict:
        return {"block": {"block_size": self.block_size or BLOCK_SIZES[0]},
                "nm": {"n": self.n, "m": self.m}}.get(self.format, {})

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.fit_format(model)

    def fit_format(self, model):
        """Block format only: `fit_format_to` the model's weighted layers. Once per model."""
        if self.format != "block" or getattr(self, "_fitted_to", None) is model:
            return
        from .common import prunable_layers, weight_shape
        self.fit_format_to({n: weight_shape(m) for n, m in prunable_layers(model)})
        self._fitted_to = model

    def fit_format_to(self, weight_shapes):
        """Block format only: choose the block size if none was given, and keep dense (with a
        warning) the layers it does not tile; ValueError if it tiles none. `weight_shapes`:
        {layer name: dense weight shape}, in model order."""
        if self.format != "block" or getattr(self, "_fitted_shapes", None) == weight_shapes:
            return
        names = list(weight_shapes)
        kept = {names[0] if d == "first" else names[-1] if d == "last" else d
                for d in self._asked_dense}
        shapes = {n: (s[0], int(np.prod(s[1:]))) for n, s in weight_shapes.items()
                  if n not in kept}

        def tiled(bs):
            return sum(r * c for r, c in shapes.values() if r % bs == 0 and c % bs == 0)

        total = sum(r * c for r, c in shapes.values())
        if self.block_size is None:
            fits = [bs for bs in BLOCK_SIZES if tiled(bs) >= 0.9 * total]
            self.block_size = fits[0] if fits else max(BLOCK_SIZES, key=tiled)
            if self.block_size != BLOCK_SIZES[0]:
                warnings.warn(f"{self.name}: block_size {BLOCK_SIZES[0]} does not tile this "
                              f"model's layers; using block_size {self.block_size}, which "
                              f"tiles {tiled(self.block_size) / total:.1%} of the weights",
                              stacklevel=3)
        bs = self.block_size
        untiled = [n for n, (r, c) in shapes.items() if r % bs or c % bs]
        if len(untiled) == len(shapes):
            sizes = ", ".join(f"{b} ({tiled(b) / total:.1%})" for b in BLOCK_SIZES if tiled(b))
            raise ValueError(f"block_size {bs} tiles none of the model's layers "
                             f"({', '.join(f'{r}x{c}' for r, c in shapes.values())}): a block "
                             f"must divide both sides of a weight. Block sizes that do, with "
                             f"the share of weights they tile: {sizes or 'none'}")
        if untiled:
            warnings.warn(f"{self.name}: block_size {bs} does not divide the weights of layer(s) "
                          f"{', '.join(f'{n!r} {shapes[n][0]}x{shapes[n][1]}' for n in untiled)}"
                          ": kept dense", stacklevel=3)
        self.dense_layers = tuple(self._asked_dense) + tuple(untiled)
        self.untiled_layers, self._fitted_shapes = tuple(untiled), dict(weight_shapes)

    def layout(self, shapes) -> dict:
        """{layer name: density} of the initial sparse model, from the dense weight shapes
        {name: shape} of the model's weighted layers, in order (1 keeps a layer dense): the
        method's sparsity shared by its distribution; n/m in every layer for N:M."""
        from ..nn.models import sparse_densities
        self.fit_format_to(shapes)
        names = list(shapes)
        keep = {names[0] if d == "first" else names[-1] if d == "last" else d
                for d in self.dense_layers}
        if self.format == "nm":
            return {name: 1.0 if name in keep else self.n / self.m for name in names}
        return sparse_densities(shapes, sparsity=self.sparsity, distribution=self.distribution,
                                dense_layers=sorted(keep))

    def build_options(self, shapes) -> dict:
        """The `build_model` options of the initial sparse model (sparse from construction:
        no dense weight is ever allocated): densities, format and how values are drawn."""
        densities = self.layout(shapes)
        fan_in = "stored" if self.resolve_sparse_init(densities) else "dense"
        return dict(density_per_layer=densities, format=self.format, init_fan_in=fan_in,
                    **self.sparse_format_options())

    def resolve_sparse_init(self, densities) -> bool:
        """Whether to initialise each neuron at its stored fan-in (`sparse_init`, when the
        method has it: True, False or "auto"; see `choose_sparse_init`); kept for the record."""
        setting = getattr(self, "sparse_init", False)
        self.signal_scale = signal_scale(densities)
        self.sparse_init_used = (self.signal_scale < AUTO_SIGNAL_SCALE if setting == "auto"
                                 else bool(setting))
        return self.sparse_init_used


    def sparse_format_options(self) -> dict:
        """Options of the sparse format a layer is built with (constant_fan_in for SRigL)."""
        return self.format_options()

    def sparsify(self, model, from_dense=False, rng=None, sparsity=None):
        """Swap the model's dense layers for sparse ones of this method's format (in place)."""
        from .common import sparsify_model
        return sparsify_model(model, self.sparsity if sparsity is None else sparsity,
                              format=self.format, distribution=self.distribution,
                              dense_layers=self.dense_layers, from_dense=from_dense, rng=rng,
                              **self.format_options())

    def describe(self) -> dict:
        out = {"format": self.format, "distribution": self.distribution, **self.format_options()}
        if self.untiled_layers:
            out["kept_dense_untiled"] = list(self.untiled_layers)
        return out


_REGISTRY = {"dense": Dense}


def register(name: str):
    """Class decorator adding a method to the registry used by the command line."""
    def add(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return add


_HELPER_MODULES = {"base", "common", "schedules", "saliency", "dst", "options"}
_discovered = False


def _discover():
    """Import every algorithm file once: each registers its methods with @register."""
    global _discovered
    if _discovered:
        return
    import importlib
    import pkgutil

    from .. import algorithms
    for info in pkgutil.iter_modules(algorithms.__path__):
        if info.name not in _HELPER_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{algorithms.__name__}.{info.name}")
    _discovered = True


def available() -> list:
    _discover()
    return sorted(_REGISTRY)


def method_class(name: str):
    """The class registered under `name`; ValueError naming the known ones otherwise."""
    _discover()
    if not isinstance(name, str) or name not in _REGISTRY:
        import difflib
        close = difflib.get_close_matches(str(name), available(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}: expected one of {', '.join(available())}")
    return _REGISTRY[name]


def get_method(name: str, **options) -> Method:
    """The method `name` built with `options`; an option it does not take is refused with the
    list of those it does (`dense` takes none)."""
    cls = method_class(name)
    check_option_names(name, cls, options)
    return cls(**options)
