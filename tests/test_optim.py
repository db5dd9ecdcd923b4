"""Optimizers against hand-written NumPy versions of PyTorch's update rules, and the schedules.

The references follow the algorithm boxes of torch.optim.SGD / Adam / AdamW: three steps with a
different gradient each time, in float64, compared to 1e-12.
"""
import math

import numpy as np
import pytest

from sparsenet import optim
from sparsenet.nn import Parameter

W0 = np.array([0.5, -1.0, 2.0, 0.0])
GRADS = [np.array([0.1, -0.2, 0.3, 1.0]), np.array([-0.5, 0.4, 0.0, 1.0]),
         np.array([0.2, 0.2, -0.7, -0.3])]


def run(opt_class, steps=3, **hyper):
    p = Parameter(W0.copy())
    opt = opt_class([p], **hyper)
    for g in GRADS[:steps]:
        p.grad = g.copy()
        opt.step()
    return p.data, opt


def torch_sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    w, buf = W0.copy(), None
    for g in GRADS:
        d = g + weight_decay * w
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    return w


def torch_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    w, m, v = W0.copy(), np.zeros(4), np.zeros(4)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            w = w * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize("hyper", [
    dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01), dict(lr=0.1, momentum=0.9, weight_decay=0.1),
    dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1),
], ids=["plain", "momentum", "nesterov", "decay", "momentum+decay", "nesterov+decay"])
def test_sgd_matches_pytorch(hyper):
    w, _ = run(optim.SGD, **hyper)
    np.testing.assert_allclose(w, torch_sgd(**hyper), rtol=0, atol=1e-12)


# eps=0: the update rule itself, exactly; the placement of eps is checked separately below
@pytest.mark.parametrize("hyper", [
    dict(lr=0.01), dict(lr=0.1, betas=(0.8, 0.99)), dict(lr=0.01, weight_decay=0.1),
], ids=["default", "betas", "l2"])
def test_adam_matches_pytorch(hyper):
    w, _ = run(optim.Adam, eps=0.0, **hyper)
    np.testing.assert_allclose(w, torch_adam(eps=0.0, **hyper), rtol=0, atol=1e-12)


@pytest.mark.parametrize("hyper", [dict(lr=0.01), dict(lr=0.1, weight_decay=0.5)],
                         ids=["default-decay", "strong-decay"])
def test_adamw_matches_pytorch(hyper):
    w, _ = run(optim.AdamW, eps=0.0, **hyper)
    hyper.setdefault("weight_decay", 0.01)                 # AdamW's default
    np.testing.assert_allclose(w, torch_adam(eps=0.0, decoupled=True, **hyper), rtol=0, atol=1e-12)


def test_adam_default_eps_is_close_to_pytorch():
    w, _ = run(optim.Adam, lr=0.01)
    np.testing.assert_allclose(w, torch_adam(lr=0.01), rtol=0, atol=1e-6)


def test_adam_eps_placement_matches_pytorch():
    w, _ = run(optim.Adam, lr=0.1, eps=0.1)
    np.testing.assert_allclose(w, torch_adam(lr=0.1, eps=0.1), rtol=0, atol=1e-9)


def test_parameters_without_grad_are_skipped_and_zero_grad_clears():
    p, q = Parameter(W0.copy()), Parameter(W0.copy())
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    p.grad = GRADS[0].copy()
    opt.step()
    np.testing.assert_array_equal(q.data, W0)
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_param_groups_with_their_own_lr():
    p, q = Parameter(W0.copy()), Parameter(W0.copy())
    opt = optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.01}], lr=0.1)
    p.grad, q.grad = np.ones(4), np.ones(4)
    opt.step()
    np.testing.assert_allclose(p.data, W0 - 0.1)
    np.testing.assert_allclose(q.data, W0 - 0.01)


def test_float32_parameters_stay_float32():
    p = Parameter(W0.astype(np.float32))
    opt = optim.Adam([p], lr=0.1)
    p.grad = GRADS[0].astype(np.float32)
    opt.step()
    assert p.data.dtype == np.float32


# ----- remap after a topology change -------------------------------------------------------
@pytest.mark.parametrize("opt_class, names", [
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), ("momentum",)),
    (lambda ps: optim.Adam(ps, lr=0.1), ("m", "v")),
], ids=["sgd", "adam"])
def test_remap_keeps_surviving_state_and_zeroes_new_entries(opt_class, names):
    p = Parameter(W0.copy())
    opt = opt_class([p])
    p.grad = GRADS[0].copy()
    opt.step()
    before = {n: opt.state[id(p)][n].copy() for n in names}
    step_count = opt.state[id(p)]["step"]

    new_from_old = np.array([2, -1, 0, 3, -1])            # 5 weights now; 1 was dropped
    p.data = np.array([p.data[2], 0.0, p.data[0], p.data[3], 0.0])
    p.grad = None
    with pytest.raises(RuntimeError, match="remap"):      # stale state is refused, not misused
        p.grad = np.ones(5)
        opt.step()
    opt.remap(p, new_from_old)
    for n in names:
        after = opt.state[id(p)][n]
        np.testing.assert_array_equal(after, [before[n][2], 0, before[n][0], before[n][3], 0])
    assert opt.state[id(p)]["step"] == step_count
    opt.step()                                             # works with the new shape
    assert p.data.shape == (5,)


def test_remap_before_any_step_is_a_no_op():
    p = Parameter(W0.copy())
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.remap(p, np.array([0, 1]))
    assert opt.state == {}


def test_gradient_of_the_wrong_shape_raises():
    p = Parameter(W0.copy())
    p.grad = np.ones(3)
    with pytest.raises(RuntimeError, match="does not match"):
        optim.SGD([p], lr=0.1).step()


# ----- bad hyperparameters -----------------------------------------------------------------
@pytest.mark.parametrize("make, words", [
    (lambda p: optim.SGD(p, lr=-0.1), "lr"),
    (lambda p: optim.SGD(p, lr=float("nan")), "lr"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "betas"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "betas"),
    (lambda p: optim.AdamW(p, lr=-1), "lr"),
    (lambda p: optim.SGD([], lr=0.1), "empty"),
])
def test_bad_hyperparameters(make, words):
    with pytest.raises(ValueError, match=words):
        make([Parameter(W0.copy())])


# ----- schedules ---------------------------------------------------------------------------
def factors(scheduler_class, steps, **kwargs):
    opt = optim.SGD([Parameter(W0.copy())], lr=0.2)
    sched = scheduler_class(opt, **kwargs)
    out = [sched.get_lr() / 0.2]
    for _ in range(steps):
        sched.step()
        out.append(opt.param_groups[0]["lr"] / 0.2)
    return out


def test_cosine_with_warmup():
    f = factors(optim.CosineLR, 12, total=10, warmup=2, min_factor=0.1)
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)       # warm-up
    assert f[2] == pytest.approx(1.0)                                      # cosine starts at 1
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5)                          # half way
    assert f[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f[10] == pytest.approx(0.1) and f[12] == pytest.approx(0.1)     # min at total, then flat
    assert all(a >= b for a, b in zip(f[1:], f[2:]))                       # then decreasing


def test_cosine_without_warmup_starts_at_full_lr():
    f = factors(optim.CosineLR, 4, total=4)
    assert f == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                               0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])


def test_step_lr():
    f = factors(optim.StepLR, 7, step_size=3, gamma=0.5)
    assert f == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_warmup_lr():
    assert factors(optim.WarmupLR, 5, warmup=4) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])


def test_constant_lr():
    assert factors(optim.ConstantLR, 3) == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("make", [
    lambda o: optim.StepLR(o, step_size=0), lambda o: optim.CosineLR(o, total=0),
    lambda o: optim.CosineLR(o, total=10, warmup=10), lambda o: optim.WarmupLR(o, warmup=0),
])
def test_bad_schedule_arguments(make):
    with pytest.raises(ValueError):
        make(optim.SGD([Parameter(W0.copy())], lr=0.1))
