"""Random pruning at initialization: the control every pruning-at-init method must beat.

No single paper: it is the baseline of SNIP (Lee et al. 2019), GraSP (Wang et al. 2020) and
SynFlow (Tanaka et al. 2020), and the subject of Liu et al. 2022, "The Unreasonable
Effectiveness of Random Pruning: Return of the Most Naive Baseline for Sparse Training" (ICLR
2022), which shows that its strength hangs on the per-layer densities (ERK >> uniform).

Rule:

    S_ij ~ U(0, 1), independently for every weight   # a score that knows nothing
    k_l  = the count of layer l under `distribution` (uniform | er | erk, exact total)
    keep the top k_l scores of each layer, i.e. k_l weights drawn uniformly at random
    train the sparse network from the same initial weights.

Defaults: scope="layer" with the `distribution` of the run (erk unless --distribution says
otherwise), since the per-layer shares are what random pruning is about; scope="global" ranks
the random scores over all layers at once, which gives every layer the same density in
expectation (uniform, up to sampling noise). Random numbers come from the library generator
(`sparsenet.manual_seed`), so a seed fixes the pattern. Blocks are drawn by the L2 norm of
their random scores (a random block), N:M keeps n random slots of every group of m.
"""
from __future__ import annotations

from .. import random
from .base import register
from .common import prunable_layers, weight_shape
from .saliency import PruningAtInit


@register("random")
class RandomPruning(PruningAtInit):
    """Keep random weights, as many per layer as `distribution` says."""

    option_help = {"scope": "layer: the counts of `distribution` (default) | global: one "
                            "ranking of random scores (uniform in expectation)"}

    def __init__(self, sparsity=0.9, scope="layer", **options):
        super().__init__(sparsity=sparsity, scope=scope, **options)

    def scores(self, model, loader, alive=None) -> dict:
        rng = random.generator()
        return {name: rng.random((weight_shape(m)[0], int(m.weight.size // weight_shape(m)[0])))
                for name, m in prunable_layers(model)}
