"""Lottery tickets: iterative magnitude pruning with rewinding, and its random-reinit control.

Frankle & Carbin 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks" (ICLR), Section 1 (iterative pruning); rewinding: Frankle, Dziugaite, Roy & Carbin
2019, "Stabilizing the Lottery Ticket Hypothesis" and 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis" (ICML).

    initialize theta_0; train, remembering theta_k (the weights after k steps)    round 0
    for round r = 1 .. R:
        each layer l keeps the (1 - p_l) largest |w| of the weights it still holds
        set the kept weights back to theta_k (k = 0: the original initialization)
        train the subnetwork from there                                        round r
    reinit control: the same masks, with fresh values drawn from the initial distribution

R is the first round whose remaining fraction of weights is <= 1 - sparsity. Masks live in the
sparse format (csr or masked; block prunes whole blocks by norm): a pruned weight is absent, so
it stays pruned. Round 0 trains `round_epochs` (default: the run's epochs), T steps. Rewinding
rewinds the run, not only the weights (Frankle et al. 2020, Section 3: "train ... from step k"):
rounds 1..R start from theta_k at step k of the same learning-rate schedule and train the T - k
steps left, with a fresh optimizer (momentum restarts at zero). Restarting the schedule from
step 0 instead would hit theta_k, already past the high-rate start, with the largest rates
again.

Defaults and where they come from:
- rate p = 0.2 per round for fully connected layers and output_rate = p / 2 for the output
  layer: Frankle & Carbin, LeNet-300-100 (Section 2 and their Figure 2 table of pruning
  rates); conv_rate = 0.1 for convolutions (their Conv-2/4/6). With these, 3, 7, 12, 15 and
  18 rounds leave 51.3, 21.1, 7.0, 3.6 and 1.9 % of LeNet-300-100's weights, the points of
  their Figure 3.
- rewind_step k = 5 % of a round's steps (469 steps, one epoch, for 20 epochs of
  Fashion-MNIST at batch 128). Frankle et al. 2019 and 2020 rewind to an iteration early in
  training (0.1-7 % of it, a few hundred iterations), which keeps tickets working where the
  reset to k = 0 fails at larger learning rates; k = 0 is the original paper's reset (small
  networks such as LeNet are stable from initialization, Frankle et al. 2020, so k = 0 works
  there as well). On lenet300 / Fashion-MNIST at 8.7 % remaining the two are within the
  spread of seeds: a validation split preferred k = 0 by 0.45 points, the test set k = 469 by
  0.18 (3 seeds each; benchmarks/results/tuning-pruning.md, accuracy-tuned-lenet300.md).
- reinit=False; with reinit=True every round also trains the control of Frankle & Carbin
  (Section 2): the winning ticket's masks with values drawn afresh from the initial
  distribution, recorded as `reinit_test_accuracy`; it doubles the cost.
"""
from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np

from .. import backend
from ..metrics import sparsity_summary
from ..nn import build_model
from ..nn.layers import Conv2d
from ..nn.sparse_layers import SparseConv2d
from ..sparse.convert import format_options
from ..train import combine_flops, epochs_for, make_record, train_phase
from .base import Method, SparseMethod, register
from .common import DENSE_TYPES, prunable_layers, weight_shape
from .magnitude import dense_equivalent, keep_largest, probe_format, pruned_layer_names


def round_schedule(units: dict, rates: dict, unit_size: dict, total_weights: int,
                   sparsity: float, max_rounds: int = 200) -> list:
    """[{layer: units kept}] for rounds 1..R: each round removes round(p_l · remaining_l)
    units of layer l, until the weights kept are at most (1 - sparsity) · total_weights.

    `total_weights` counts every prunable weight, layers kept dense included.
    """
    keep, rounds = dict(units), []
    unpruned = total_weights - sum(units[n] * unit_size[n] for n in units)
    while unpruned + sum(keep[n] * unit_size[n] for n in keep) > (1 - sparsity) * total_weights:
        new = {n: k - int(round(rates[n] * k)) for n, k in keep.items()}
        if new == keep or len(rounds) == max_rounds:
            raise ValueError(f"pruning at rates {rates} cannot reach sparsity {sparsity} "
                             f"in {len(rounds)} rounds")
        keep = new
        rounds.append(dict(keep))
    return rounds


def layer_weights(model) -> dict:
    """{layer name: (dense weight (out, in·kh·kw), bias or None)}: copies, prunable layers."""
    out = {}
    for name, layer in prunable_layers(model):
        shape = weight_shape(layer)
        if isinstance(layer, DENSE_TYPES):
            weight = backend.to_numpy(layer.weight.data).reshape(shape[0], -1).copy()
        else:
            weight = layer.weight.to_dense()
        bias = None if layer.bias is None else backend.to_numpy(layer.bias.data).copy()
        out[name] = (weight, bias)
    return out


def load_weights(model, weights: dict):
    """Write `weights` (from `layer_weights`) into the model at the positions each layer stores."""
    for name, layer in prunable_layers(model):
        weight, bias = weights[name]
        if isinstance(layer, DENSE_TYPES):
            layer.weight.data[...] = weight.reshape(layer.weight.shape)
        else:
            old = layer.weight               # the same positions, values taken from `weight`
            new = type(old).from_dense(weight.astype(old.dtype), mask=old.mask(),
                                       **format_options(old))
            layer.values.data, layer.values.grad = new.values, None
        if bias is not None:
            layer.bias.data[...] = bias


@register("lottery")
class LotteryTicket(SparseMethod):
    """Iterative magnitude pruning, rewinding the survivors to theta_k after every round."""

    option_help = {
        "rate": "p, the fraction of each fully connected layer's weights pruned per round "
                "(Frankle & Carbin, LeNet-300-100: 0.2)",
        "output_rate": "the output layer's rate (Frankle & Carbin: half of rate)",
        "conv_rate": "the convolutions' rate (Frankle & Carbin, Conv-2/4/6: 0.1)",
        "rewind_step": "k, the step rewound to; default 5 % of a round (Frankle et al. 2020 "
                       "rewind early in training; 0: the original reset)",
        "reinit": "also train the random-reinit control every round (Frankle & Carbin)",
        "round_epochs": "epochs per round; default the run's epochs",
        "distribution": "uniform only: each layer prunes at its own rate",
    }

    def __init__(self, sparsity=0.9, rate=0.2, output_rate=None, conv_rate=0.1, rewind_step=None,
                 reinit=False, round_epochs=None, format="csr", distribution="uniform", **options):
        super().__init__(sparsity, format=format, distribution=distribution, **options)
        if self.format == "nm":
            raise ValueError("lottery prunes a little more every round; the N:M format fixes the "
                             "density at n/m: use csr, masked or block")
        if distribution != "uniform":
            raise ValueError("lottery prunes each layer at its own rate (rate, conv_rate, "
                             f"output_rate); distribution={distribution!r} does not apply")
        output_rate = rate / 2 if output_rate is None and isinstance(rate, (int, float)) \
            else output_rate
        for value, name in ((rate, "rate"), (output_rate, "output_rate"), (conv_rate, "conv_rate")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a fraction in (0, 1), got {value!r}")
        for value, name, least in ((rewind_step, "rewind_step", 0),
                                   (round_epochs, "round_epochs", 1)):
            whole = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (whole and value >= least):
                raise ValueError(f"{name} must be None or an integer >= {least}, got {value!r}")
        if not isinstance(reinit, bool):
            raise ValueError(f"reinit must be true or false, got {reinit!r}")
        self.p, self.p_out, self.p_conv = rate, output_rate, conv_rate
        self.rewind_step, self.reinit, self.round_epochs = rewind_step, reinit, round_epochs
        self.round, self.theta_k = 0, None

    # ----- the schedule ---------------------------------------------------------------------
    def rates(self, model) -> dict:
        """p_l for every pruned layer: the output layer (the last) at output_rate."""
        layers = dict(prunable_layers(model))
        names = pruned_layer_names(model, self.dense_layers)
        last = list(layers)[-1]
        return {n: self.p_out if n == last else
                self.p_conv if isinstance(layers[n], (Conv2d, SparseConv2d)) else self.p
                for n in names}

    def schedule(self, model) -> list:
        """[{layer: units kept}] per round; warns when the last round overshoots the target."""
        rates = self.rates(model)
        probes = probe_format(model, list(rates), self.format, **self.format_options())
        total = sum(int(np.prod(weight_shape(m))) for _, m in prunable_layers(model))
        sizes = {n: p.nnz // p.n_units for n, p in probes.items()}
        rounds = round_schedule({n: p.n_units for n, p in probes.items()}, rates, sizes, total,
                                self.sparsity)
        unpruned = total - sum(p.nnz for p in probes.values())
        reached = [1 - (unpruned + sum(k * sizes[n] for n, k in keep.items())) / total
                   for keep in rounds]
        if rounds and reached[-1] - self.sparsity > 0.005:
            before = (f" ({len(rounds) - 1} reach {reached[-2]:.1%})" if len(rounds) > 1
                      else "")
            exact = math.floor(reached[-1] * 1e4) / 1e4      # rounded down: the same rounds
            warnings.warn(f"lottery: each round prunes a share of what is left (rate {self.p}), "
                          f"so {len(rounds)} rounds reach {reached[-1]:.1%} sparsity, past the "
                          f"target {self.sparsity:.1%}{before}; give --sparsity {exact:.4f} "
                          "for a target that says what the run does, or change --opt rate",
                          stacklevel=2)
        self.reached_sparsity = reached
        return rounds

    # ----- hooks used in round 0: remember theta_k ------------------------------------------
    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        if self.round == 0:
            self.k = round(0.05 * total_steps) if self.rewind_step is None else self.rewind_step
            if self.k > total_steps:
                raise ValueError(f"rewind_step {self.k} is beyond the {total_steps} steps of "
                                 "a round")
            if self.k == 0:
                self.theta_k = layer_weights(model)

    def after_step(self, step):
        if self.round == 0 and step + 1 == self.k:         # the weights after k steps
            self.theta_k = layer_weights(self.model)

    # ----- between rounds ---------------------------------------------------------------------
    def prune(self, model, keep: dict):
        """Keep the `keep[l]` largest-|w| units of each layer l (dense layers become sparse)."""
        dense_equivalent(model, list(keep), self.format, **self.format_options())
        layers = dict(prunable_layers(model))
        for name, k in keep.items():
            keep_largest(layers[name], k)

    def fresh_weights(self, config, model, data, round_):
        """The initial distribution drawn again: a new model of the same architecture."""
        spec = getattr(model, "spec", config.model)
        rng = np.random.default_rng([config.seed, round_, 1])
        outputs = weight_shape(prunable_layers(model)[-1][1])[0]        # the same classes
        fresh = build_model(spec, input_shape=data[0].shape[1:], num_classes=outputs, rng=rng)
        return layer_weights(fresh)

    # ----- the whole run ------------------------------------------------------------------------
    def train_model(self, config, model, data, log=print):
        self.fit_format(model)                     # blocks that cannot tile a layer: dense
        keeps = self.schedule(model)
        epochs = epochs_for(config, self.round_epochs)
        start = time.perf_counter()
        history, phases, rounds, optimizer = [], [], [], None
        for r in range(len(keeps) + 1):
            self.round = r
            control = None
            if r > 0:
                self.prune(model, keeps[r - 1])
                if self.reinit:
                    control = copy.deepcopy(model)
                    load_weights(control, self.fresh_weights(config, model, data, r))
                load_weights(model, self.theta_k)                   # rewind to theta_k
            if log:
                log(f"lottery round {r}/{len(keeps)}: density {model_density(model):.4f}")
            # a rewound ticket resumes the run at step k: schedule from k, T - k steps
            resume = self.k if r > 0 else 0
            hist, flops, optimizer = train_phase(model, self, config, data, epochs, log,
                                                 seed_offset=r, start_step=resume)
            history += [dict(h, round=r, epoch=r * epochs + h["epoch"]) for h in hist]
            phases.append(flops)
            rounds.append({"round": r, "density": model_density(model),
                           "test_accuracy": hist[-1]["test_accuracy"], "epochs": epochs})
            if control is not None:
                hist, _, _ = train_phase(control, Method(), config, data, epochs, None,
                                         seed_offset=r, start_step=resume)
                rounds[-1]["reinit_test_accuracy"] = hist[-1]["test_accuracy"]
                if log:
                    log(f"  ticket {rounds[-1]['test_accuracy']:.4f}  "
                        f"reinit {rounds[-1]['reinit_test_accuracy']:.4f}")
        extra = {"rounds": rounds, "dense_test_accuracy": rounds[0]["test_accuracy"]}
        if self.reinit and len(rounds) > 1:
            extra["reinit_test_accuracy"] = rounds[-1]["reinit_test_accuracy"]
        record = make_record(config, model, self, optimizer, data, history, combine_flops(phases),
                             time.perf_counter() - start, epochs * len(rounds), **extra)
        return model, record

    def describe(self) -> dict:
        return {**super().describe(), "rate": self.p, "output_rate": self.p_out,
                "conv_rate": self.p_conv, "rewind_step": getattr(self, "k", self.rewind_step),
                "reinit": self.reinit, "round_epochs": self.round_epochs}


def model_density(model) -> float:
    return sparsity_summary(model)["density"]
