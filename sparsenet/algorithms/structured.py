"""Structured pruning: remove whole neurons and channels, so that the layers really shrink.

Papers
- Li, Kadav, Durdanovic, Samet & Graf (2017), "Pruning Filters for Efficient ConvNets", ICLR:
  score filter j of layer i by the sum of its absolute kernel weights s_j = sum |F_{i,j}|,
  remove the m lowest-scoring filters with their feature maps and the kernels of layer i+1
  that read those maps, copy the rest into new smaller layers, retrain. They report that the
  L2 norm ranks filters much the same (offered here as norm="l2").
- Neurons of fully connected layers go the same way (row j of W_l, b_l[j], column j of W_{l+1}),
  as in Hu, Peng, Tai & Tang (2016), "Network Trimming" (they score neurons by their activations,
  APoZ; here the score is Li et al.'s weight norm of the neuron's incoming weights).

The rule
    train the dense model for `epochs`
    for every hidden weighted layer l (never the output layer), each scored on the trained
    weights independently of the others (Li et al.'s "independent" multi-layer strategy):
        s_j = ||W_l[j]||_p,  p = 1 ("l1") or 2 ("l2");  W_l[j] = filter j / neuron j's inputs
        remove the floor(sparsity * n_l) neurons with the smallest s_j (ties: lower index first)
    shrink:  W_l <- W_l[kept_l],  b_l <- b_l[kept_l],
             W_{l+1} <- W_{l+1}[:, kept_l]          (Linear->Linear, Conv->(ReLU/Pool)->Conv)
             W_{l+1} <- W_{l+1}[:, kept_l x H*W]    (Conv->...->Flatten->Linear: H*W inputs each)
    fine-tune the smaller dense model for `finetune_epochs` with a new optimizer

`sparsity` here is the fraction of the hidden neurons/channels removed in every hidden layer,
not a fraction of weights: the record gives both (target_sparsity, and sparsity = weights
removed over the whole model, output layer included).

Defaults: norm="l1" (Li et al.); finetune_epochs=5 and finetune_lr = 0.1 x the training rate
(with the configured schedule) are this project's choice for a 20-epoch run, not the paper's.
Optional l1 / group_lasso (regularization.py) penalize the hidden layers during dense training,
group lasso on rows pushing whole neurons toward zero before they are removed (Wen et al. 2016).

The shrunk model is an ordinary dense model with its own shapes. Its `spec` is rewritten to
"mlp:..." when it is a plain MLP (then `sparsenet.load(path)` rebuilds it); otherwise the spec
is dropped and loading needs the caller's model of those shapes, e.g.
`sparsenet.load(path, shrink(build_model("lenet5"), record["structured"]["kept_indices"]))`.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np

from .. import backend, metrics
from ..nn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Tanh
from ..nn.module import Parameter
from ..nn.models import build_model
from .base import Method, register
from .common import SPARSE_TYPES, lowest_units
from .regularization import check_options, regularize

# Modules that act on each channel by itself: a removed channel stays removed through them
# (each maps an all-zero channel to an all-zero channel, which is what makes shrinking exact).
CHANNELWISE = (ReLU, Tanh, Dropout, MaxPool2d)
NORMS = ("l1", "l2")


# ----- the surgery ---------------------------------------------------------------------------
def weighted_chain(model) -> list:
    """[(name, layer, flatten_between)] of the weighted layers in data-flow order.

    flatten_between: a Flatten sits between this layer and the previous weighted one.
    Only Sequential models (nested Sequentials allowed) have a data flow that the module order
    tells; between two weighted layers only channel-wise modules and Flatten may sit.
    """
    leaves = []
    for name, m in model.named_modules():
        if isinstance(m, SPARSE_TYPES):
            raise TypeError(f"layer {name!r} is {type(m).__name__}: structured pruning shrinks "
                            "dense Linear and Conv2d layers only")
        if m._modules and not isinstance(m, Sequential):
            raise TypeError(f"structured pruning needs a Sequential model (its module order is "
                            f"its data flow); {name or 'the model'!r} is {type(m).__name__}")
        if not m._modules:
            leaves.append((name, m))
    chain, flatten, previous, blocker = [], False, None, None
    for name, m in leaves:
        if isinstance(m, (Linear, Conv2d)):
            if blocker is not None:
                raise TypeError(f"module {blocker[0]!r} ({blocker[1]}) sits between weighted "
                                f"layers; shrink knows Flatten (start_dim=1) and "
                                f"{[t.__name__ for t in CHANNELWISE]}")
            if isinstance(m, Conv2d) and isinstance(previous, Linear):
                raise TypeError(f"layer {name!r}: a Conv2d fed by a Linear cannot be shrunk")
            if isinstance(m, Linear) and isinstance(previous, Conv2d) and not flatten:
                raise TypeError(f"layer {name!r}: a Linear fed by a Conv2d needs a Flatten "
                                "between them")
            chain.append((name, m, flatten))
            flatten, previous = False, m
        elif isinstance(m, Flatten) and m.start_dim == 1:
            flatten = True
        elif not isinstance(m, CHANNELWISE) and chain:
            blocker = (name, type(m).__name__)    # harmless after the output layer
    if not chain:
        raise ValueError("the model has no Linear or Conv2d layer: nothing to prune")
    return chain


def _n_out(layer) -> int:
    return layer.out_features if isinstance(layer, Linear) else layer.out_channels


def _check_keep(chain, keep) -> dict:
    """keep {name: indices} as sorted unique int64 arrays, after checking every entry."""
    if not isinstance(keep, dict):
        raise TypeError(f"keep must be a dict {{layer name: kept output indices}}, got "
                        f"{type(keep).__name__}")
    names = [name for name, _, _ in chain]
    hidden = dict((name, layer) for name, layer, _ in chain[:-1])
    checked = {}
    for name, indices in keep.items():
        if name == names[-1]:
            raise ValueError(f"layer {name!r} is the output layer: it is never shrunk")
        if name not in hidden:
            raise ValueError(f"keep names {name!r}, not a hidden weighted layer; expected one of "
                             f"{names[:-1]}")
        n = _n_out(hidden[name])
        idx = backend.to_numpy(indices) if backend.device_of(indices) == "cuda" else \
            np.asarray(indices)
        if idx.size == 0:
            raise ValueError(f"keep[{name!r}] is empty: removing every neuron of a layer cuts "
                             "the network")
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError(f"keep[{name!r}] must be a 1-D list of integer indices, got "
                            f"{idx.dtype} of shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"keep[{name!r}] holds indices outside [0, {n}): "
                             f"min {idx.min()}, max {idx.max()}")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"keep[{name!r}] holds duplicate indices")
        checked[name] = np.sort(idx).astype(np.int64)
    return checked


def shrink(model, keep: dict):
    """A copy of `model` whose hidden layers keep only the output neurons/channels in `keep`.

    keep: {layer name: kept output indices (any order; kept ones stay in their order)}; layers
    left out keep everything. Removing neuron j of layer l removes row j of W_l and b_l[j] and
    the inputs of the next weighted layer that read it (after Flatten: its H*W positions).
    The model itself is not changed. The result computes exactly what `model` computes with
    the removed neurons' rows and biases set to zero.
    """
    chain = weighted_chain(model)
    keep = _check_keep(chain, keep)
    n_out = {name: _n_out(layer) for name, layer, _ in chain}     # before any shrinking
    small = copy.deepcopy(model)
    layers = dict(small.named_modules())
    previous = None
    for name, _, flattened in chain:
        layer = layers[name]
        xp = backend.array_module(layer.weight.data)
        w = layer.weight.data                                   # (out, in) or (out, in, kh, kw)
        rows = keep.get(name)
        cols = keep.get(previous) if previous is not None else None
        if cols is not None and flattened:
            n_in, n_prev = w.shape[1], n_out[previous]
            if n_in % n_prev:
                raise ValueError(f"layer {name!r} has {n_in} inputs, not a multiple of the "
                                 f"{n_prev} channels of {previous!r} that Flatten feeds it")
            hw = n_in // n_prev                   # channel c is flattened to [c*hw, (c+1)*hw)
            cols = (cols[:, None] * hw + np.arange(hw)).ravel()
        if rows is not None:
            w = w[xp.asarray(rows)]
            if layer.bias is not None:
                layer.bias = Parameter(xp.ascontiguousarray(layer.bias.data[xp.asarray(rows)]))
        if cols is not None:
            w = w[:, xp.asarray(cols)]
        if rows is not None or cols is not None:
            layer.weight = Parameter(xp.ascontiguousarray(w))
            if isinstance(layer, Linear):
                layer.out_features, layer.in_features = w.shape[:2]
            else:
                layer.out_channels, layer.in_channels = w.shape[:2]
        previous = name
    small.spec = _mlp_spec(small)
    return small


def _mlp_spec(model):
    """'mlp:784-150-50-10' when `build_model` of that spec has the same layers, else None."""
    try:
        linears = [m for _, m, _ in weighted_chain(model)]
        if not all(isinstance(m, Linear) for m in linears):
            return None
        spec = "mlp:" + "-".join(str(n) for n in [linears[0].in_features] +
                                 [m.out_features for m in linears])
        rebuilt = build_model(spec, rng=np.random.default_rng(0))
    except (TypeError, ValueError):
        return None
    same = [(k, v.shape) for k, v in rebuilt.state_dict().items()] == \
        [(k, v.shape) for k, v in model.state_dict().items()]
    return spec if same else None


def _check(sparsity, norm):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or \
            not 0 <= sparsity < 1:
        raise ValueError(f"sparsity (fraction of hidden neurons removed) must be in [0, 1), "
                         f"got {sparsity!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def select_neurons(model, sparsity, norm="l1") -> dict:
    """{hidden layer name: kept indices}: each hidden layer loses floor(sparsity * n) neurons,
    those whose incoming weights have the smallest L1 (or L2) norm."""
    _check(sparsity, norm)
    chain = weighted_chain(model)
    if len(chain) < 2:
        raise ValueError(f"the model has one weighted layer ({chain[0][0]!r}), its output layer: "
                         "there is no hidden neuron to prune")
    keep = {}
    for name, layer, _ in chain[:-1]:
        w = backend.to_numpy(layer.weight.data).astype(np.float64)
        rows = w.reshape(w.shape[0], -1)                       # (neurons, incoming weights)
        s = np.abs(rows).sum(axis=1) if norm == "l1" else np.sqrt((rows ** 2).sum(axis=1))
        drop = lowest_units(s, math.floor(sparsity * len(s)))
        keep[name] = np.flatnonzero(~drop)
    return keep


# ----- the method ----------------------------------------------------------------------------
def _counts(model, input_shape):
    """(weights, forward FLOPs per sample) of a model."""
    positions = metrics.layer_positions(model, input_shape)
    return metrics.sparsity_summary(model)["weights_stored"], \
        metrics.forward_flops(model, positions)[0]


@register("structured")
class Structured(Method):
    """Train dense, remove the lowest-norm neurons/channels of every hidden layer, fine-tune."""

    option_help = {
        "sparsity": "the fraction of hidden neurons/channels removed per layer (not of weights)",
        "norm": "l1 (Li et al. 2017) | l2: the score of a neuron's incoming weights",
        "finetune_epochs": "epochs of fine-tuning after the cut (engine choice: 5)",
        "finetune_lr": "learning rate of the fine-tuning; default 0.1 x the run's (engine "
                       "choice)",
        "l1": "L1 penalty on the hidden layers during dense training",
        "group_lasso": "group-lasso penalty on the hidden layers during dense training",
        "groups": "rows | columns | blocks: the groups of the group lasso",
        "format": "must be left out: the shrunk layers are dense",
        "distribution": "uniform only: every hidden layer loses the same fraction",
    }

    def __init__(self, sparsity=0.5, norm="l1", finetune_epochs=5, finetune_lr=None,
                 l1=0.0, group_lasso=0.0, groups="rows", format=None, distribution=None):
        _check(sparsity, norm)
        if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or \
                finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be an integer >= 0, got {finetune_epochs!r}")
        if finetune_lr is not None and not (isinstance(finetune_lr, (int, float))
                                            and finetune_lr > 0):
            raise ValueError(f"finetune_lr must be a positive number, got {finetune_lr!r}")
        check_options(l1, group_lasso, groups)
        if format is not None:
            raise ValueError(f"structured pruning makes smaller dense layers; format={format!r} "
                             "does not apply (leave --format and --pattern out)")
        if distribution not in (None, "uniform"):
            raise ValueError(f"structured pruning removes the same fraction of every hidden "
                             f"layer (uniform); distribution={distribution!r} does not apply")
        self.sparsity, self.norm = sparsity, norm
        self.finetune_epochs, self.finetune_lr = finetune_epochs, finetune_lr
        self.l1, self.group_lasso, self.groups = l1, group_lasso, groups
        self.phase, self.kept = "dense", {}

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.hidden = [name for name, _, _ in weighted_chain(model)[:-1]]

    def after_backward(self, step):
        # the penalty only shapes the dense model before pruning; fine-tuning runs without it
        if self.phase == "dense" and (self.l1 or self.group_lasso):
            regularize(self.model, self.l1, self.group_lasso, self.groups, layers=self.hidden)

    def describe(self):
        return {"norm": self.norm, "sparsity_meaning": "fraction of hidden neurons/channels "
                "removed per layer", "finetune_epochs": self.finetune_epochs,
                "finetune_lr": self.finetune_lr, "l1": self.l1, "group_lasso": self.group_lasso,
                "groups": self.groups}

    def train_model(self, config, model, data, log):
        from ..train import combine_flops, epochs_for, evaluate, make_record, train_phase
        _, _, x_test, y_test, _ = data
        input_shape = data[0].shape[1:]
        start = time.perf_counter()
        epochs = epochs_for(config)
        self.phase = "dense"
        history, flops, optimizer = train_phase(model, self, config, data, epochs, log)
        history = [dict(h, phase="dense") for h in history]
        params_before, flops_before = _counts(model, input_shape)
        accuracy_before = evaluate(model, x_test, y_test, device=config.device)[0]

        self.kept = select_neurons(model, self.sparsity, self.norm)
        small = shrink(model, self.kept)
        params_after, flops_after = _counts(small, input_shape)
        accuracy_pruned = evaluate(small, x_test, y_test, device=config.device)[0]
        if log:
            log(f"structured: {params_before:,} -> {params_after:,} weights, accuracy "
                f"{accuracy_before:.4f} -> {accuracy_pruned:.4f} before fine-tuning")

        # fit() counts the fine-tuning against the shrunk model's own dense cost; the run is
        # judged against the original model, so its dense reference is scaled back up.
        scale = flops_before / flops_after
        self.phase = "finetune"
        ft_epochs = epochs_for(config, self.finetune_epochs)
        lr = self.finetune_lr or config.lr / 10
        if not ft_epochs:
            optimizer = None                       # the dense phase's one belongs to `model`
        else:
            ft_history, ft_flops, optimizer = train_phase(small, self, config, data, ft_epochs,
                                                          log, lr=lr, seed_offset=1)
            ft_flops["dense_training_total"] *= scale
            flops = combine_flops([flops, ft_flops])
            history += [dict(h, phase="finetune", epoch=epochs + h["epoch"]) for h in ft_history]
        flops = dict(flops, inference_relative=flops_after / flops_before,
                     inference_per_sample=flops_after)
        accuracy_finetuned = evaluate(small, x_test, y_test, device=config.device)[0]

        names = [name for name, _, _ in weighted_chain(model)]
        totals = {name: int(m.weight.shape[0]) for name, m, _ in weighted_chain(model)}
        structured = {
            "params_before": params_before, "params_after": params_after,
            "flops_before": flops_before, "flops_after": flops_after,
            "accuracy_before": accuracy_before, "accuracy_after_prune": accuracy_pruned,
            "accuracy_after_finetune": accuracy_finetuned, "norm": self.norm,
            "finetune_epochs": ft_epochs, "finetune_lr": lr,
            "kept_per_layer": {n: {"kept": int(len(self.kept[n])) if n in self.kept
                                   else totals[n], "total": totals[n]} for n in names},
            "kept_indices": {n: [int(i) for i in k] for n, k in self.kept.items()},
        }
        record = make_record(config, small, self, optimizer, data, history, flops,
                             time.perf_counter() - start, epochs + ft_epochs,
                             structured=structured, sparsity=1 - params_after / params_before,
                             density=params_after / params_before,
                             parameters_dense=params_before)
        return small, record
