"""Static sparse training: a fixed random sparse topology, never updated.

The control every dynamic sparse method is measured against (Evci et al. 2020, "Rigging the
Lottery: Making All Tickets Winners", Section 4: "Static" is the random ERK or uniform mask
trained without any update; Mocanu et al. 2018 call it "FixProb").

    at step 0:   W ← W_dense ⊙ M,  M a uniformly random pattern with density d_l in layer l
                 (d_l from ERK by default, Evci et al. 2020 Section 3)
    every step:  ordinary SGD on the stored weights; M never changes

Whatever a dynamic method gains over `static` at the same sparsity is what moving the
connections buys.
"""
from __future__ import annotations

from .base import SparseMethod, check_sparse_init, register
from .dst import start_sparse


@register("static")
class Static(SparseMethod):
    """A random sparse pattern (distribution erk | er | uniform) trained as it is; sparse_init
    as for the dynamic methods (dst.py: "auto" by default), so they compare at equal
    initialization. Built sparse from the start, like them."""

    sparse_from_scratch = True

    option_help = {"sparse_init": "initialise each neuron at its stored fan-in: true, false or "
                                  "\"auto\", as for the dynamic methods (dst.py)"}

    def __init__(self, sparsity=0.9, format="csr", block_size=None, n=2, m=4, distribution="erk",
                 dense_layers=(), sparse_init="auto"):
        super().__init__(sparsity, format, block_size, n, m, distribution, dense_layers)
        self.sparse_init = check_sparse_init(sparse_init)

    def describe(self):
        return dict(super().describe(), sparse_init=self.sparse_init,
                    sparse_init_used=getattr(self, "sparse_init_used", None),
                    signal_scale=getattr(self, "signal_scale", None))

    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.layers = start_sparse(self, model)
