"""SynFlow: prune at initialization without data, by conserving synaptic flow.

Paper: Hidenori Tanaka, Daniel Kunin, Daniel L. K. Yamins & Surya Ganguli, 2020, "Pruning
neural networks without any data by iteratively conserving synaptic flow" (NeurIPS 2020).

Rule (Algorithm 1, which also sets the model to eval mode). Make the network linear and
positive, feed it ones, and score each weight by how much of the total "synaptic flow" R
passes through it:

    θ_μ = |θ_0| ⊙ μ                              # current mask μ, absolute initial weights
    R   = 1ᵀ ( ∏_l θ_μ^[l] ) 1                   # the network's output summed, input = ones
    S   = ∂R/∂θ_μ ⊙ θ_μ                          # synaptic saliency (always >= 0)
    for k = 1 .. n:                              # n = iterations
        keep the top ρ^(k/n) of all weights by S (global); μ <- that mask; rescore
    train the sparse network from θ_0 (signs and all) at the kept positions.

ρ = 1 − sparsity is the density kept; the exponential schedule ρ^(k/n) prunes the same
fraction of the survivors at every step, and the last step reaches ρ exactly. Iterating is
what avoids layer collapse: a layer that lost weights passes the flow through fewer of them,
which raises their scores at the next step (the paper's conservation argument).

Making the network linear: with |θ| and a ones input every activation is >= 0, where ReLU is
the identity and max-pooling picks among nonnegative numbers, so the real model is run as is,
in eval mode (no dropout). Biases are set to 0 while scoring: R in the paper is a product of
weight matrices only (the reference code takes |b| instead; sparsenet initializes biases to 0,
so both agree at initialization).

Data-free: the input is ones of the data's shape; the shape comes from `input_shape` or from
the loader's array metadata (`loader.x.shape`), the loader is never iterated.

Precision: R is a product of as many sums as there are layers and can overflow or underflow
float32 in deep networks; the parameters are cast to float64 for scoring (range ~1e±308), and
non-finite scores raise an error rather than prune at random.

Defaults and where they come from: iterations=100 (the experiments of Section 7 prune with
100 iterations; `--prune-epochs` in the reference code); exponential schedule and global scope
(the paper and the reference code, github.com/ganguli-lab/Synaptic-Flow, prune.py and
Pruners/pruners.py).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor
from .base import register
from .common import prunable_layers
from .saliency import PruningAtInit, float64_parameters, mask_weights


def synaptic_flow(model, input_shape, alive=None):
    """(R, S): the synaptic flow and its per-weight saliency {layer: (out, in*k)}, in float64.

    alive: {layer: bool mask} multiplied into |θ| (the mask μ); all ones when None.
    """
    layers = dict(prunable_layers(model))
    with float64_parameters(model):
        for name, m in model.named_modules():
            for pname, p in m._parameters.items():
                if p is None:
                    continue
                if pname == "bias":
                    p.data = p.data * 0.0                  # R has no bias terms
                else:
                    p.data = abs(p.data)                   # θ -> |θ|
        mask_weights(model, alive)                         # θ_μ = |θ| ⊙ μ
        device = backend.device_of(next(iter(model.parameters())).data)
        ones = backend.to_device(np.ones((1, *input_shape), dtype=np.float64), device)
        R = model(Tensor(ones)).sum()                      # 1ᵀ (∏ |W|) 1
        R.backward()
        theta = {n: backend.to_numpy(l.weight.data).reshape(l.weight.shape[0], -1)
                 for n, l in layers.items()}
        S = {n: backend.to_numpy(l.weight.grad).reshape(l.weight.shape[0], -1) * theta[n]
             for n, l in layers.items()}
        R = float(R.item())
    if not np.isfinite(R) or R == 0.0:
        raise FloatingPointError(f"the synaptic flow R = {R} is not a positive finite number "
                                 "even in float64: the network is too deep or too wide to score "
                                 "without rescaling its layers")
    return R, S


@register("synflow")
class SynFlow(PruningAtInit):
    """Iteratively keep the weights carrying the most synaptic flow; no data needed."""

    option_help = {
        "iterations": "pruning iterations, density ρ^(k/n) at step k (paper, Section 7: 100)",
        "input_shape": "one input's shape, e.g. [1, 28, 28]; default: the loader's",
        "scope": "global (the paper and its reference code) | layer",
    }

    def __init__(self, sparsity=0.9, iterations=100, scope="global", input_shape=None,
                 **options):
        super().__init__(sparsity=sparsity, scope=scope, **options)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        if input_shape is not None and (not isinstance(input_shape, (list, tuple)) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)):
            raise ValueError(f"input_shape must be a list of positive integers (one sample's "
                             f"shape, e.g. [1, 28, 28]), got {input_shape!r}")
        self.iterations = iterations
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.flow = []                    # R at each iteration, for plots
        self.last_scores = None

    def scores(self, model, loader, alive=None) -> dict:
        shape = self.input_shape
        if shape is None:
            shape = getattr(getattr(loader, "x", None), "shape", None)   # metadata only
            if shape is None:
                raise ValueError("synflow needs the shape of one input: pass input_shape=[...] "
                                 "or a loader with an array `x`")
            shape = tuple(shape[1:])
        R, S = synaptic_flow(model, shape, alive)
        self.count_passes(1)
        self.flow.append(R)
        self.last_scores = S
        return S

    def select_masks(self, model, loader, ranking) -> dict:
        self.flow = []
        alive = super().select_masks(model, loader, ranking)     # the schedule ρ^(k/n)
        self.report["flow_dense_and_last_step"] = [self.flow[0], self.flow[-1]]
        return alive

    def describe(self) -> dict:
        return {**super().describe(), "iterations": self.iterations}
