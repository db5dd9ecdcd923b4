"""RigL: the Rigged Lottery.

Evci, Gale, Menick, Castro & Elsen, 2020, "Rigging the Lottery: Making All Tickets Winners",
ICML 2020 (reference code: google-research/rigl, rigl/sparse_optimizers_base.py,
`SparseRigLOptimizerBase`; rigl/sparse_optimizers.py only binds it to TF1's pruning masks).

Rule (Algorithm 1, Section 3), every ΔT steps while t < T_end, in every sparse layer l:

    f_t      = α/2 · (1 + cos(π t / T_end))                            the drop fraction (Eq. 1)
    k        = floor(f_t · N_l)                                         N_l: stored weights
    drop     = ArgTopK(-|θ_l|, k)                                       smallest magnitudes
    grow     = ArgTopK_{i ∉ θ_l \\ drop}(|∇_{Θ_l} L_t|, k)               largest dense gradient
    θ_l      ← θ_l \\ drop ∪ grow,   new weights = 0, their optimizer state = 0

∇L_t is the dense gradient of the current mini-batch, G·Xᵀ for a linear layer (G: the gradient
at the layer's output, X its input). It is computed only on update steps, a chunk of rows at a
time with a running top-k (`layer.dense_grad_topk`), so the dense matrix is never held whole:
the layers keep (G, X) of their backward (`keep_for_growth`) only for the step before an update.

Where the update sits in the step differs from the reference code. Here it runs after the
step's optimizer update (dst.py's `after_step`): the update step trains like any other, and the
drop sees the weights after it. The reference runs the mask update *instead of* the optimizer
step on update iterations (`apply_gradients` builds `cond(is_mask_update_iter, mask update,
optimizer step)`), so its drop sees the weights before that step and the step's gradient serves
only to grow; SET's reference base class, by contrast, runs the mask update after the step.
The difference is one SGD step in every ΔT (1 % at ΔT = 100).

Defaults and sources: α = 0.3, ΔT = 100, T_end = 75 % of training, cosine decay, ERK layer
densities (Section 3 and Section 4.1 of the paper); grown weights at zero ("zeros" grow_init of
the reference code). A weight dropped and regrown in the same update keeps its value and state
(reference `reinit_when_same=False`). The reference adds N(0, 1e-5) noise to the drop scores to
break ties; here ties go to the lower position, so runs are reproducible and formats agree.

Formats: csr, masked and block (units are blocks, scored by the L2 norm of their gradient) grow
anywhere in the layer; nm keeps N:M by growing back, in every group, what the drop took from it.

Training FLOPs (Appendix H): an ordinary step costs 3·f_S (forward, input gradient, weight
gradient, all sparse); an update step computes the dense weight gradient, 2·f_S + f_D, so the
average step costs (3·f_S·ΔT + 2·f_S + f_D) / (ΔT + 1). The loop counts 3·f_S per step and this
method adds f_D − f_S per update step through `extra_flops()`.
"""
from __future__ import annotations

from .base import register
from .dst import DynamicSparseMethod


@register("rigl")
class RigL(DynamicSparseMethod):
    """Drop the smallest |w|; grow where the dense gradient |∇L| is largest."""

    needs_dense_gradient = True

    def grow(self, layer, counts, dropped):
        rows, cols, _ = layer.dense_grad_topk(k=counts, dropped=dropped,
                                              chunk_rows=self.chunk_rows)
        return rows, cols
