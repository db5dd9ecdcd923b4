"""Layer density distributions (uniform, ER, ERK) and the sparsity / update schedules."""
import math

import numpy as np
import pytest

from sparsenet.sparse.distributions import layer_counts, layer_densities
from sparsenet.algorithms.schedules import (ConstantSparsity, CubicSparsity, DropFraction,
                                            UpdateSchedule)

LENET300 = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
CONV = {"c1": (64, 1, 3, 3), "c2": (64, 64, 3, 3), "f1": (256, 3136), "f2": (10, 256)}


@pytest.mark.parametrize("kind", ["uniform", "er", "erk"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("shapes", [LENET300, CONV])
def test_total_is_exact(kind, density, shapes):
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
    dens = layer_densities(shapes, density, kind)
    kept = sum(dens[n] * sizes[n] for n in shapes)
    assert kept == pytest.approx(density * sum(sizes.values()), rel=1e-9)
    assert all(0 < d <= 1 for d in dens.values())
    counts = layer_counts(shapes, density, kind)
    assert sum(counts.values()) == round(density * sum(sizes.values()))
    assert all(0 <= counts[n] <= sizes[n] for n in shapes)


def test_erk_formula_and_dense_overflow():
    dens = layer_densities(LENET300, 0.1, "erk")
    # the small output layer would pass density 1, so it is dense and the others are rescaled
    assert dens["fc3"] == 1.0
    ratio = dens["fc1"] / dens["fc2"]
    expected = ((784 + 300) / (784 * 300)) / ((300 + 100) / (300 * 100))
    assert ratio == pytest.approx(expected)


def test_erk_uses_kernel_dimensions_and_er_does_not():
    shapes = {"a": (64, 64, 3, 3), "b": (256, 3136)}
    erk = layer_densities(shapes, 0.1, "erk")
    er = layer_densities(shapes, 0.1, "er")
    erk_ratio = ((64 + 64 + 6) / (64 * 64 * 9)) / ((256 + 3136) / (256 * 3136))
    assert erk["a"] / erk["b"] == pytest.approx(erk_ratio)
    assert er["a"] / er["b"] == pytest.approx(((128) / (64 * 64)) / ((256 + 3136) / (256 * 3136)))


def test_uniform_and_dense_layers():
    dens = layer_densities(LENET300, 0.1, "uniform", dense_layers=("fc3",))
    assert dens["fc3"] == 1.0 and dens["fc1"] == pytest.approx(dens["fc2"])


@pytest.mark.parametrize("bad", [dict(density=0.0), dict(density=1.5), dict(kind="xyz"),
                                 dict(dense_layers=("nope",))])
def test_bad_inputs(bad):
    args = dict(shapes=LENET300, density=0.1, kind="erk") | bad
    with pytest.raises(ValueError):
        layer_densities(**args)


def test_nothing_to_prune():
    with pytest.raises(ValueError, match="nothing to prune"):
        layer_densities({}, 0.1)


def test_cubic_schedule_formula():
    s = CubicSparsity(final=0.9, begin_step=100, end_step=1100, every=100, initial=0.0)
    assert s(0) == 0.0 and s(100) == 0.0 and s(1100) == 0.9 and s(5000) == 0.9
    t = 600
    assert s(t) == pytest.approx(0.9 + (0.0 - 0.9) * (1 - (t - 100) / 1000) ** 3)
    values = [s(t) for t in range(100, 1101, 100)]
    assert all(a <= b for a, b in zip(values, values[1:]))          # monotone
    assert s.is_update_step(300) and not s.is_update_step(350) and not s.is_update_step(1200)


def test_drop_fraction_cosine_and_update_schedule():
    f = DropFraction(alpha=0.3, t_end=1000)
    assert f(0) == pytest.approx(0.3) and f(500) == pytest.approx(0.15) and f(1000) == 0.0
    assert f(250) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    u = UpdateSchedule(delta_t=100, t_end=750)
    assert [t for t in range(0, 1000) if u(t)] == [100, 200, 300, 400, 500, 600, 700]


@pytest.mark.parametrize("make", [
    lambda: DropFraction(alpha=0.0), lambda: DropFraction(alpha=1.0),
    lambda: UpdateSchedule(delta_t=0), lambda: UpdateSchedule(delta_t=10, t_end=200, total_steps=100),
    lambda: CubicSparsity(final=1.0, begin_step=0, end_step=10), lambda: ConstantSparsity(-0.1),
    lambda: CubicSparsity(final=0.5, begin_step=10, end_step=5)])
def test_schedule_bad_inputs(make):
    with pytest.raises(ValueError):
        make()


def test_set_epsilon_and_distribution_er_count_a_convolution_alike():
    """One Erdős–Rényi convention (distributions.er_fans: a convolution's channels): SET's ε
    densities are proportional to distribution "er" wherever neither is capped at 1."""
    from sparsenet.sparse.distributions import er_fans
    from sparsenet.algorithms.set import er_density
    shapes = {"c1": (64, 32, 3, 3), "c2": (128, 64, 5, 5), "f1": (256, 4096), "f2": (64, 256)}
    assert er_fans((64, 32, 3, 3)) == (32, 64)
    er = layer_densities(shapes, 0.05, "er")
    eps = {n: er_density(s, 1.0) for n, s in shapes.items()}
    ratios = [er[n] / eps[n] for n in shapes]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)
