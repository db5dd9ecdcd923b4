"""SNIP: prune once at initialization by connection sensitivity.

Paper: Namhoon Lee, Thalaiyasingam Ajanthan & Philip H. S. Torr, 2019, "SNIP: Single-shot
Network Pruning based on Connection Sensitivity" (ICLR 2019).

Rule (Section 4.1, Algorithm 1). Put an indicator c_j = 1 on every weight, w_j -> c_j w_j, and
ask how much the loss moves when c_j does. On one mini-batch D_b at initialization,

    g_j = dL(c ⊙ w; D_b) / dc_j  at c = 1      = (dL/dw_j) · w_j
    s_j = |g_j| / sum_k |g_k|                  # connection sensitivity, normalized (eq. 6)
    keep the kappa = (1 - sparsity) · m weights with the largest s_j, over all layers at once
    train the sparse network in the standard way, from the same initial weights.

Defaults and where they come from:
- batches=1: one mini-batch of the training loader (Algorithm 1 samples a single mini-batch;
  the paper trains with batch size 100 on MNIST, our loader's batch is the run's, 128 by
  default). More batches average the gradient over more data (Tanaka et al.'s SynFlow code
  sums SNIP's gradient over a small pruning loader).
- scope="global": a single threshold over all layers (Algorithm 1 sorts all s_j together).
  "layer" keeps the per-layer counts of `distribution` instead.
- The scores use the model in eval mode and float64 (see saliency.py); the normalization by
  sum_k |g_k| changes no ranking and is kept so that `last_scores` read as in the paper.
- iterations=1: the paper's single shot. iterations=n > 1 is *iterative SNIP* (de Jorge et al.,
  2021, "Progressive Skeletonization: Trimming more fat from a network at initialization",
  ICLR 2021): prune to density rho^(k/n) at step k, rescoring |g ⊙ w| of the network pruned so
  far (same batch), which the authors propose against SNIP's layer collapse at extreme sparsity.
Layer collapse: at high sparsity SNIP may leave a layer almost empty; every layer keeps at least
its best weight, and `describe()["layer_collapse"]` names layers left below 10 % of the overall
density; `describe()["disconnected"]` names layers where more than half of the output units
keep no input at all (SNIP at 98 % on lenet300 does this to its first layer).

Where the reference code (namhoonlee/snip-public, snip/model.py and snip/network.py) differs:
- it scores one initialization and trains another: the mask is computed on `weights_bp`
  ("before pruning") and applied to `weights_ap`, a second set of variables drawn afresh from
  the same initializer. Here, as Algorithm 1 reads, the scored weights are the trained ones.
- it ranks the biases with the weights (`prn_keys` holds the 'w' and the 'b' variables); its
  biases start at zero, so their sensitivity |g · b| is 0 and they rank last. Here only weights
  are scored and the biases stay dense.
- it initializes weights by variance scaling (`tf.variance_scaling_initializer`: a truncated
  normal of variance 1/fan_in) and biases at zero; here the model's own initialization
  (Kaiming uniform, variance 2/fan_in; biases zero) is what is scored and trained.
"""
from __future__ import annotations

from .base import register
from .saliency import (PruningAtInit, float64_parameters, mask_weights, take_batches,
                       weight_gradients, weight_matrices)


@register("snip")
class SNIP(PruningAtInit):
    """Keep the weights whose removal would change the loss most: |dL/dw ⊙ w| on one batch."""

    option_help = {
        "batches": "mini-batches of the training loader scored (Algorithm 1: one)",
        "iterations": "1: the paper's single shot; n > 1: iterative SNIP (de Jorge et al. 2021)",
        "scope": "global (Algorithm 1 sorts all layers together) | layer",
    }

    def __init__(self, sparsity=0.9, batches=1, iterations=1, scope="global", **options):
        super().__init__(sparsity=sparsity, scope=scope, **options)
        for value, name in ((batches, "batches"), (iterations, "iterations")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.batches, self.iterations = batches, iterations
        self.last_scores = None

    def scores(self, model, loader, alive=None) -> dict:
        x, y = take_batches(loader, self.batches)                    # D_b
        with float64_parameters(model):
            mask_weights(model, alive)                               # pruned so far: w = 0
            w = weight_matrices(model)
            grad = weight_gradients(model, x, y)                     # dL/dw
        self.count_passes(len(y))
        g = {name: grad[name] * w[name] for name in w}               # dL/dc at c = 1
        total = sum(abs(g_l).sum() for g_l in g.values())
        s = {name: abs(g_l) / total for name, g_l in g.items()}      # eq. 6
        self.last_scores = s
        self.report["scoring_samples"] = int(len(y))
        return s

    def describe(self) -> dict:
        return {**super().describe(), "batches": self.batches, "iterations": self.iterations}
