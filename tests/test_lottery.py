"""Lottery tickets (Frankle & Carbin 2019): iterative magnitude pruning with rewinding."""
import copy
import json

import numpy as np
import pytest

from sparsenet import cli, optim
from sparsenet.algorithms import get_method
from sparsenet.algorithms.common import prunable_layers
from sparsenet.algorithms.lottery import LotteryTicket, layer_weights, load_weights, round_schedule
from sparsenet.data import BatchLoader
from sparsenet.nn import build_model
from sparsenet.nn.functional import cross_entropy
from sparsenet.tensor import Tensor
from sparsenet.train import TrainConfig, run

SPEC = "mlp:784-64-32-10"
LENET = {"1": 784 * 300, "3": 300 * 100, "5": 100 * 10}


def small_model(seed=0):
    return build_model(SPEC, rng=np.random.default_rng(seed))


# ----- the round schedule -------------------------------------------------------------------
def remaining(keep):
    return sum(keep.values()) / sum(LENET.values())


def test_lenet_rounds_give_the_percentages_of_the_paper():
    # Frankle & Carbin 2019, Figure 3 (LeNet-300-100): P_m = 51.3, 21.1, 7.0, 3.6, 1.9 % remain
    # after 3, 7, 12, 15 and 18 rounds at 20 % per round, the output layer at 10 %
    method = LotteryTicket(sparsity=0.981)
    assert method.rates(build_model("lenet300")) == {"1": 0.2, "3": 0.2, "5": 0.1}
    keeps = method.schedule(build_model("lenet300"))
    assert len(keeps) == 18
    assert [round(100 * remaining(keeps[r - 1]), 1) for r in (3, 7, 12, 15, 18)] == \
        [51.3, 21.1, 7.0, 3.6, 1.9]


@pytest.mark.parametrize("sparsity, rounds", [(0.5, 4), (0.893, 11), (0.964, 15)])
def test_the_number_of_rounds_is_the_fewest_that_reach_the_sparsity(sparsity, rounds):
    keeps = LotteryTicket(sparsity=sparsity).schedule(build_model("lenet300"))
    assert len(keeps) == rounds
    assert remaining(keeps[-1]) <= 1 - sparsity < remaining(keeps[-2])


def test_each_round_removes_its_rate_of_what_is_left():
    keeps = round_schedule(LENET, {"1": 0.2, "3": 0.2, "5": 0.1}, dict.fromkeys(LENET, 1),
                           sum(LENET.values()), 0.9)
    previous = dict(LENET)
    for keep in keeps:
        assert keep["1"] == previous["1"] - round(0.2 * previous["1"])
        assert keep["5"] == previous["5"] - round(0.1 * previous["5"])     # output: half rate
        previous = keep
    # after r rounds a hidden layer holds about 0.8^r, the output layer 0.9^r
    r = len(keeps)
    assert keeps[-1]["1"] / LENET["1"] == pytest.approx(0.8 ** r, rel=1e-3)
    assert keeps[-1]["5"] / LENET["5"] == pytest.approx(0.9 ** r, abs=2e-3)


def test_rates_by_layer_kind_and_dense_layers_left_out():
    conv = build_model("conv2")
    rates = LotteryTicket(rate=0.2, conv_rate=0.1).rates(conv)
    layers = [n for n, _ in prunable_layers(conv)]
    assert [rates[n] for n in layers] == [0.1, 0.1, 0.2, 0.2, 0.1]
    assert LotteryTicket(output_rate=0.05, dense_layers="first").rates(small_model()) == \
        {"3": 0.2, "5": 0.05}
    assert round_schedule({"a": 100}, {"a": 0.5}, {"a": 1}, 100, 0.0) == []   # nothing to prune


# ----- rewinding and the reinit control ---------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csr", "masked"])
def test_rewinding_restores_the_saved_values_at_the_kept_positions(fmt):
    model = small_model()
    theta_k = layer_weights(model)
    rng = np.random.default_rng(1)
    for _, layer in prunable_layers(model):                # "training" moves every weight
        layer.weight.data += rng.standard_normal(layer.weight.shape).astype(np.float32) * 0.1
        layer.bias.data += 0.5
    trained = layer_weights(model)
    method = LotteryTicket(sparsity=0.5, format=fmt)
    keep = method.schedule(model)[0]
    method.prune(model, keep)
    load_weights(model, theta_k)
    for name, layer in prunable_layers(model):
        mask = layer.weight.mask()
        assert layer.format == fmt and layer.weight.nnz == keep[name]
        # kept: the largest |w| after training, not at theta_k
        w = np.abs(trained[name][0])
        assert w[mask].min() >= w[~mask].max()
        np.testing.assert_array_equal(layer.weight.to_dense(), np.where(mask, theta_k[name][0], 0))
        np.testing.assert_array_equal(layer.bias.data, theta_k[name][1])


def test_reinit_control_draws_new_values_with_the_same_masks():
    model = small_model()
    theta_0 = layer_weights(model)
    method = LotteryTicket(sparsity=0.5)
    method.prune(model, method.schedule(model)[0])
    control = copy.deepcopy(model)
    config = TrainConfig(model=SPEC, seed=0)
    data = (np.zeros((4, 1, 28, 28), np.float32), np.arange(4) % 10)
    fresh = method.fresh_weights(config, model, data, 1)
    load_weights(control, fresh)
    load_weights(model, theta_0)
    for (name, ticket), (_, other) in zip(prunable_layers(model), prunable_layers(control)):
        mask = ticket.weight.mask()
        np.testing.assert_array_equal(other.weight.mask(), mask)
        new, old = other.weight.to_dense()[mask], ticket.weight.to_dense()[mask]
        assert not np.isclose(new, old).any()
        # drawn from the same initial distribution: the same spread as theta_0
        assert new.std() == pytest.approx(theta_0[name][0].std(), rel=0.15)
    assert not np.array_equal(fresh["1"][0], method.fresh_weights(config, model, data, 2)["1"][0])


def test_theta_k_is_the_weights_after_k_steps():
    model = small_model()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 784)).astype(np.float32), rng.integers(0, 10, 64)
    loader = BatchLoader(x, y, 16, shuffle=False)
    method = LotteryTicket(rewind_step=3)
    method.setup(model, None, loader, 8)
    method.optimizer = opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    after = []
    for t in range(8):
        xb, yb = x[16 * (t % 4):16 * (t % 4 + 1)], y[16 * (t % 4):16 * (t % 4 + 1)]
        loss = cross_entropy(model(Tensor(xb)), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(t)
        after.append(layer_weights(model))
    for name in method.theta_k:
        np.testing.assert_array_equal(method.theta_k[name][0], after[2][name][0])   # 3 steps
        assert not np.array_equal(method.theta_k[name][0], after[3][name][0])


# ----- bad inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("options, words", [
    (dict(sparsity=1.0), "sparsity"), (dict(sparsity=-0.5), "sparsity"),
    (dict(rate=0.0), "rate"), (dict(rate=1.5), "rate"), (dict(output_rate=1.0), "output_rate"),
    (dict(format="nm"), "N:M"), (dict(distribution="erk"), "distribution"),
    (dict(rewind_step=-1), "rewind_step"), (dict(round_epochs=0), "round_epochs"),
    (dict(reinit="yes"), "reinit"),
])
def test_bad_options_are_refused(options, words):
    with pytest.raises(ValueError, match=words):
        get_method("lottery", **options)


def test_rewind_step_beyond_a_round_is_refused(fast_mode):
    with pytest.raises(ValueError, match="rewind_step"):
        run(TrainConfig(model=SPEC, method="lottery", sparsity=0.3, epochs=1, data="subset",
                        progress=False, method_options={"rewind_step": 10_000}), log=None)


# ----- whole runs --------------------------------------------------------------------------------
def lottery_run(**options):
    return run(TrainConfig(model=SPEC, method="lottery", sparsity=0.5, epochs=1, data="subset",
                           progress=False, method_options=options), log=None)


def test_a_run_records_every_round_and_is_deterministic(fast_mode):
    record = lottery_run(reinit=True, rewind_step=2)
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == list(range(5))    # round 0: dense
    densities = [r["density"] for r in rounds]
    assert densities[0] == 1.0 and all(a > b for a, b in zip(densities, densities[1:]))
    assert densities[-1] <= 0.5 < densities[-2]
    assert record["density"] == densities[-1] and record["epochs"] == 5
    assert [h["round"] for h in record["history"]] == [0, 1, 2, 3, 4]
    assert record["test_accuracy"] == rounds[-1]["test_accuracy"]
    assert all(0 <= r["reinit_test_accuracy"] <= 1 for r in rounds[1:])
    assert record["method_details"]["rewind_step"] == 2
    again = lottery_run(reinit=True, rewind_step=2)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in record["history"]]
    assert [r["reinit_test_accuracy"] for r in again["rounds"][1:]] == \
        [r["reinit_test_accuracy"] for r in rounds[1:]]


def test_command_line_end_to_end(fast_mode, tmp_path):
    path = tmp_path / "lottery.json"
    assert cli.main(["train", "--method", "lottery", "--sparsity", "0.5", "--data", "subset",
                     "--epochs", "2", "--no-progress", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["method"] == "lottery" and record["density"] <= 0.5
    assert record["method_details"]["rewind_step"] == 1      # 5 % of 2 epochs of 8 steps


def test_rounds_after_the_first_resume_at_the_rewind_step(fast_mode):
    # rewinding rewinds the run: rounds 1.. train T - k steps from step k of the schedule
    steps = {}

    class Counting(LotteryTicket):
        def after_step(self, step):
            super().after_step(step)
            steps.setdefault(self.round, []).append(step)

    from sparsenet.random import manual_seed
    from sparsenet.train import load_arrays
    config = TrainConfig(model=SPEC, method="lottery", sparsity=0.3, epochs=1, data="subset",
                         progress=False)
    method = Counting(sparsity=0.3, rewind_step=3)
    model = small_model()
    manual_seed(0)
    method.train_model(config, model, load_arrays("subset"), log=None)
    assert len(steps[0]) == 8                                # 1000 images, batch 128
    assert all(len(steps[r]) == 8 - 3 for r in steps if r > 0)
