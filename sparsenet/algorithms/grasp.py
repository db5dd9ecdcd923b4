"""GraSP: prune at initialization so that the gradient keeps flowing.

Paper: Chaoqi Wang, Guodong Zhang & Roger Grosse, 2020, "Picking Winning Tickets Before
Training by Preserving Gradient Flow" (ICLR 2020).

Rule (Section 4, eq. 8 and Algorithm 1). Removing a weight moves the gradient norm
Δ(θ) = gᵀg by, to first order, 2 δᵀ H g. With the temperature T on the logits and a balanced
sample D of the training data,

    g    = ∇_θ L(θ; D)                       # L = cross-entropy of f(x; θ) / T
    Hg   = ∇²_θ L(θ; D) · g                  # Hessian-gradient product, g held fixed
    S(−θ) = −θ ⊙ Hg                          # eq. 8: the change of the gradient flow
    remove the (sparsity · m) weights with the HIGHEST S, over all layers; keep the rest
    train the sparse network from the same initial weights.

Why the highest: removing weight q is the step δ = −θ_q e_q, which changes the gradient
norm by ≈ ∇Δᵀδ = 2 (Hg)ᵀδ = 2 S_q. The weights with the highest S are those whose removal
raises the gradient flow most (or lowers it least); the reference code keeps the weights with
`score <= threshold`, the threshold being the smallest of the top-k removed. So the score a
weight is *kept* by is −S = θ ⊙ Hg, ranked "largest kept" as usual.

Why finite differences: sparsenet's backward passes compute on plain arrays, not on a graph, so
the gradient cannot be differentiated again (no double backprop). The product is taken instead
as the directional derivative of the gradient along z = g (detached), by central differences:

    Hg ≈ [∇L(θ + h·g) − ∇L(θ − h·g)] / (2h),   h = epsilon · ‖θ‖ / ‖g‖

in float64, whose error is O(h²) from the curvature plus ~1e-16/h from rounding; epsilon = 1e-5
makes both far below the spread of the scores (a test checks it against an exact Hessian).
ReLU and max-pool are piecewise linear: a step of relative size 1e-5 crosses a kink in only a
few units, where double backprop would also see zero curvature.

Defaults and where they come from (the authors' code, github.com/alecwangcq/GraSP,
pruner/GraSP.py): T=200; samples_per_class=25, the default of the reference's `GraSP` function
(10 classes -> 250 samples, taken class-balanced from the training loader). The released
configurations do not use it: every configs/*/GraSP_*.json passes samples_per_class 10 for
CIFAR-10 (and CIFAR-100 on VGG19), 5 for CIFAR-100 on ResNet32 and 1 for Tiny-ImageNet and
ImageNet; `--opt samples_per_class=10` is their CIFAR-10 setting. The reference splits the
sample in two halves and sums the gradients and products of both, which equals ours on the
whole sample up to a constant factor (no ranking changes). The reference also re-initializes Linear layers with Xavier-normal before scoring
(`reinit=True`), a detail of its code that the paper does not describe: not done here.
Signed scores in block format: see saliency.py (they are shifted to be >= 0 before a block's
L2 norm is taken).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .base import register
from .common import prunable_layers
from .saliency import PruningAtInit, float64_parameters, weight_gradients, weight_matrices


def balanced_sample(loader, samples_per_class, num_classes):
    """samples_per_class examples of each class from the loader's next epoch (as the reference
    code's GraSP_fetch_data); fewer if the epoch ends first. The loader is rewound."""
    epoch = getattr(loader, "epoch", None)
    chosen = {c: [] for c in range(num_classes)}
    for x, y in loader:
        for i, label in enumerate(np.asarray(y)):
            if int(label) in chosen and len(chosen[int(label)]) < samples_per_class:
                chosen[int(label)].append((x[i], label))
        if all(len(v) == samples_per_class for v in chosen.values()):
            break
    if epoch is not None:
        loader.epoch = epoch
    pairs = [pair for c in range(num_classes) for pair in chosen[c]]
    if not pairs:
        raise ValueError("the loader gave no sample to score the weights with")
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def hessian_gradient_product(model, x, y, temperature=1.0, epsilon=1e-5):
    """(g, Hg): the weight gradient and the Hessian times it, {layer: (out, in*k)}, in float64.

    Hg by central differences of the gradient along g (see the module docstring).
    """
    layers = dict(prunable_layers(model))
    with float64_parameters(model):
        theta = weight_matrices(model)
        g = weight_gradients(model, x, y, temperature)
        norm_theta = np.sqrt(sum((t * t).sum() for t in theta.values()))
        norm_g = np.sqrt(sum((v * v).sum() for v in g.values()))
        if norm_g == 0:
            return g, {name: np.zeros_like(v) for name, v in g.items()}
        h = epsilon * norm_theta / norm_g

        def gradient_at(sign):                       # ∇L(θ + sign·h·g)
            for name, layer in layers.items():
                moved = (theta[name] + sign * h * g[name]).reshape(layer.weight.shape)
                layer.weight.data = backend.to_device(moved, backend.device_of(layer.weight.data))
            return weight_gradients(model, x, y, temperature)

        plus, minus = gradient_at(+1.0), gradient_at(-1.0)
    Hg = {name: (plus[name] - minus[name]) / (2.0 * h) for name in g}
    return g, Hg


@register("grasp")
class GraSP(PruningAtInit):
    """Remove the weights whose removal reduces the gradient flow least: highest −θ ⊙ Hg."""

    option_help = {
        "T": "temperature on the logits (the reference code: 200)",
        "samples_per_class": "class-balanced samples scored per class (the reference "
                             "function's default: 25; its released CIFAR-10 configs: 10)",
        "epsilon": "relative step of the finite-difference Hessian-gradient product (engine "
                   "choice; a test checks it against the exact product)",
        "scope": "global (the paper) | layer",
    }

    def __init__(self, sparsity=0.9, T=200.0, samples_per_class=25, epsilon=1e-5,
                 scope="global", **options):
        super().__init__(sparsity=sparsity, scope=scope, **options)
        if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
            raise ValueError(f"T (the temperature) must be a positive number, got {T!r}")
        if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int) \
                or samples_per_class < 1:
            raise ValueError(f"samples_per_class must be a positive integer, got "
                             f"{samples_per_class!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        self.T, self.samples_per_class, self.epsilon = float(T), samples_per_class, float(epsilon)
        self.last_scores = None

    def scores(self, model, loader, alive=None) -> dict:
        num_classes = prunable_layers(model)[-1][1].weight.shape[0]
        x, y = balanced_sample(loader, self.samples_per_class, num_classes)
        g, Hg = hessian_gradient_product(model, x, y, self.T, self.epsilon)
        self.count_passes(3 * len(y))                    # g, then ∇L at θ ± h·g
        theta = weight_matrices(model)
        S = {name: -theta[name] * Hg[name] for name in theta}              # eq. 8
        norm = abs(sum(s.sum() for s in S.values())) + 1e-10               # as the reference
        self.last_scores = {name: s / norm for name, s in S.items()}
        self.report["scoring_samples"] = int(len(y))
        return {name: -s for name, s in self.last_scores.items()}          # keep the lowest S

    def describe(self) -> dict:
        return {**super().describe(), "T": self.T, "samples_per_class": self.samples_per_class,
                "epsilon": self.epsilon}
