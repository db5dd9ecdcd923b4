"""How a global density is shared among layers: uniform, Erdős–Rényi (ER) and ERK.

Mocanu et al. 2018 (SET) give each layer a density proportional to (n_in + n_out) / (n_in·n_out)
(Erdős–Rényi); for a convolution n_in and n_out are its input and output channels, the kernel
left out, as in RigL's reference code (rigl/sparse_utils.py, `get_sparsities_erdos_renyi`:
`n_in, n_out = shape[-2:]` of a kh x kw x in x out kernel). `er_fans` is that one convention,
used here and by SET's ε densities (set.py). Evci et al. 2020 (RigL, Section 3) extend it to
convolutions with the kernel dimensions (ERK):

    density_l = eps · (n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w)      (ERK)

and take each ratio to a power `power_scale` (1 in the paper). `eps` is chosen so that the total
number of weights kept is the requested fraction of all weights. A layer whose density would pass
1 is made dense and `eps` is solved again over the remaining layers (RigL's reference code does
the same), so the total stays exact. Counts are integers; rounding is settled by the largest
remainder so that they add up to round(density · total) exactly.
"""
from __future__ import annotations

import numpy as np

KINDS = ("uniform", "er", "erk")


def er_fans(shape) -> tuple:
    """(n_in, n_out) of Erdős–Rényi for a weight of shape (out, in) or (out, in, kh, kw): the
    input and output features or channels, the kernel left out (see the module docstring)."""
    return int(shape[1]), int(shape[0])


def er_density(shape, epsilon) -> float:
    """SET's Erdős–Rényi density ε (n_in + n_out) / (n_in · n_out) of a weight of shape (out, in)
    or (out, in, kh, kw), capped at 1 (Mocanu et al. 2018); a convolution's n_in and n_out are
    its channels, as for `distribution="er"` (`er_fans`: one convention for both)."""
    n_in, n_out = er_fans(shape)
    return min(1.0, epsilon * (n_in + n_out) / (n_in * n_out))


def _raw_score(shape, kind, power_scale):
    """The unnormalized density of a weight of `shape`: (out, in) or (out, in, kh, kw)."""
    n_in, n_out = er_fans(shape)
    kernel = list(shape[2:])
    if kind == "er":
        score = (n_in + n_out) / (n_in * n_out)
    else:
        score = (n_in + n_out + sum(kernel)) / (n_in * n_out * int(np.prod(kernel or [1])))
    return score ** power_scale


def layer_densities(shapes: dict, density: float, kind: str = "erk", power_scale: float = 1.0,
                    dense_layers=()) -> dict:
    """{layer name: density} whose weighted mean over all weights equals `density`.

    `shapes` maps layer names to weight shapes; `dense_layers` are kept at density 1 (they count
    towards the total).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not shapes:
        raise ValueError("shapes is empty: a model with nothing to prune")
    unknown = set(dense_layers) - set(shapes)
    if unknown:
        raise ValueError(f"dense_layers names layers that are not in shapes: {sorted(unknown)}")
    sizes = {name: int(np.prod(s)) for name, s in shapes.items()}
    total = sum(sizes.values())
    target = density * total
    dense = set(dense_layers)
    if sum(sizes[n] for n in dense) > target + 1e-9:
        raise ValueError(f"the layers kept dense ({sorted(dense)}) already hold more than "
                         f"density={density} of all weights")
    while True:
        free = [n for n in shapes if n not in dense]
        if not free:
            break
        raw = {n: 1.0 if kind == "uniform" else _raw_score(shapes[n], kind, power_scale)
               for n in free}
        budget = target - sum(sizes[n] for n in dense)
        eps = budget / sum(raw[n] * sizes[n] for n in free)
        too_dense = [n for n in free if eps * raw[n] > 1]
        if not too_dense:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.update(too_dense)
    return {n: 1.0 for n in shapes}


def layer_counts(shapes: dict, density: float, kind: str = "erk", power_scale: float = 1.0,
                 dense_layers=()) -> dict:
    """{layer name: number of weights kept}, integers adding up to round(density · total)."""
    dens = layer_densities(shapes, density, kind, power_scale, dense_layers)
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
    exact = {n: dens[n] * sizes[n] for n in shapes}
    counts = {n: min(sizes[n], int(np.floor(exact[n]))) for n in shapes}
    missing = int(round(density * sum(sizes.values()))) - sum(counts.values())
    # hand the rounding remainder to the layers that lost the most to flooring
    order = sorted(shapes, key=lambda n: exact[n] - counts[n], reverse=True)
    for n in order:
        if missing <= 0:
            break
        if counts[n] < sizes[n]:
            counts[n] += 1
            missing -= 1
    return counts
