"""AutoSparse: learnable per-layer thresholds trained with Gradient Annealing.

Kundu, Mellempudi, Vooturi, Kaul & Dubey, 2023, "AutoSparse: Towards Automated Sparse Training
of Deep Neural Networks" (Intel Labs; arXiv 2304.06941). The thresholds are STR's (Kusupati et
al. 2020, "Soft Threshold Weight Reparameterization for Learnable Sparsity"); the new part is GA.

Rule, in every weighted layer l (dense weight W, one learnable scalar s_l):

    τ_l   = sigmoid(s_l)                                        the layer's threshold
    W̃     = sign(W) · ReLU(|W| − τ_l)                           what the forward pass uses
    backward, with ReLU's derivative replaced by  ReLU'_α(x) = 1 if x > 0 else α_t:
        ∂L/∂W = ∂L/∂W̃ · (1 if |W| > τ_l else α_t)              pruned weights keep learning
        ∂L/∂s = −τ_l (1 − τ_l) · Σ sign(W) · ∂L/∂W̃ · (1 if |W| > τ_l else α_t)
    α_t   = α_0 · max((1 + cos(π t / T)) / 2,  1 − sigmoid(L0 + (L1 − L0) t / T))
            (the paper's sigmoid-cosine decay; T: the whole run), and α_t = 0 from T_reset on.

With α = 0 this is STR: a pruned weight has no gradient and can only come back if τ falls.
GA lets it keep moving (annealed, so the network settles), and the thresholds, trained by the
same optimizer as the weights (weight decay included), decide each layer's sparsity.

Defaults and sources: α_0 = 0.75, L0 = −6, L1 = 6, α reset to 0 at 90 % of training (epoch 90
of 100): the paper's ResNet50/ImageNet setting, checked against a public re-implementation
(cern-nextgen/PQuantML, `get_autosparse_config` and `cosine_sigmoid_decay`; the authors' code is
not public). Thresholds are per layer, as in the paper and STR.

The target sparsity. AutoSparse has no budget: the sparsity is what training makes of the
thresholds, steered in the paper by s_init (−5 for ResNet50: τ ≈ 0.007), weight decay on s (it
pulls s to 0, τ up) and α_0, tuned per model. In a short run weight decay barely moves s (it
shrinks by exp(−Σ lr_t · wd), about 2 % in 20 LeNet-300-100 epochs at lr 0.05, wd 1e-4), while
the loss pulls every τ down (a lower τ enlarges every kept weight): started at 90 %, LeNet's
thresholds fell below 30 % sparsity within 10 epochs on the subset. So the default here is a
*budgeted variant* (`variant="budgeted"`, named so in the record's `method_details.variant`):
two engine choices, not in the paper, make `sparsity` a target:
- init: each τ_l starts at the quantile of |W_l| that prunes the layer's share of the target
  (ERK by default), so training starts at the target;
- target pull (`target_gain` μ, default 10; 0 is the paper's free run), after backward:
      ∂L/∂s_l += −μ · (S* − S_t)      S_t, S*: overall sparsity of the thresholded layers, target
  one force on every layer, so the overall sparsity stays near S* while its split among layers
  is learned. `s_init=<number>` gives the paper's constant initialization instead.
`variant="paper"` is the paper's free run: no pull (μ = 0), s_init = −5 (its ResNet50 value), no
target (leave `sparsity` out): the sparsity is whatever training makes of the thresholds.
The record reports the target, each layer's final τ_l and sparsity, and the overall sparsity.

Formats: only `masked`. GA needs every pruned weight stored and given a gradient; csr, block and
nm store only the kept weights, so a dropped weight could never return: that is STR without GA,
not AutoSparse. During training each weighted layer is an `AutoSparseLinear`/`AutoSparseConv2d`
(the dense layer plus its s), whose `mask` (|W| > τ) is what the FLOP counts read; after the
last step it is replaced by what it computes, W̃ as a masked SparseLinear/SparseConv2d, so the
trained model evaluates, saves and loads like any sparse model.
Training FLOPs: forward and input gradient use W̃ (sparse); while α_t > 0 the weight gradient is
needed at every position, so `extra_flops` adds 2·(dense − kept)·columns per layer and step.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..nn import functional as F
from ..nn.layers import Conv2d, Linear
from ..nn.module import Module, Parameter
from ..nn.sparse_layers import sparse_like
from ..sparse import Masked
from ..tensor import Function
from .base import SparseMethod, register
from .common import layer_densities, prunable_layers, weight_shape
from .dst import check_positive_int

L0, L1 = -6.0, 6.0


def annealing_factor(step, total_steps, alpha_0, reset_step):
    """α_t: α_0 times the larger of a cosine and a sigmoid decay over the run, 0 from reset_step."""
    if step >= reset_step:
        return 0.0
    progress = step / total_steps
    cosine = (1 + math.cos(math.pi * progress)) / 2
    sigmoid = 1 - 1 / (1 + math.exp(-(L0 + (L1 - L0) * progress)))
    return alpha_0 * max(cosine, sigmoid)


def _excess(w, s):
    """|W| − sigmoid(s) in the weights' precision: > 0 exactly where a weight is kept."""
    xp = backend.array_module(w)
    tau = 1 / (1 + xp.exp(-s))                                           # (1,)
    return xp.abs(w) - tau, tau


class SoftThreshold(Function):
    """W̃ = sign(W) · ReLU(|W| − sigmoid(s)), backward with ReLU' = 1 (kept) or alpha (pruned)."""

    def forward(self, w, s, alpha=0.0):
        xp = backend.array_module(w)
        excess, tau = _excess(w, s)
        self.sign = xp.sign(w)
        self.slope = xp.where(excess > 0, 1, alpha).astype(w.dtype)     # ReLU'_α
        self.dtau_ds, self.s_shape = tau * (1 - tau), s.shape
        return self.sign * xp.maximum(excess, 0)

    def backward(self, g):
        g_excess = g * self.slope                                 # ∂L/∂(|W| − τ), annealed
        gw = g_excess * (self.sign * self.sign)                   # d|W|/dW · sign(W) = sign(W)²
        gs = -(g_excess * self.sign).sum() * self.dtau_ds
        return gw, gs.reshape(self.s_shape)


class _SoftThresholdLayer:
    """What AutoSparseLinear and AutoSparseConv2d add to their dense layer: s, α, the mask."""

    format = "masked"

    def _adopt(self, layer, s):
        """Take over `layer`'s parameters and settings (no copy), and add the threshold s."""
        Module.__init__(self)
        object.__setattr__(self, "training", layer.training)
        for key, value in vars(layer).items():
            if key not in ("_parameters", "_modules", "_buffers", "training"):
                setattr(self, key, value)
        self.s = Parameter(np.array([s], dtype=layer.weight.dtype))
        self.alpha = 0.0                       # the annealing factor of the current step
        self.columns = 0                       # output columns of the last training forward

    @property
    def threshold(self) -> float:
        return float(1 / (1 + np.exp(-backend.to_numpy(self.s.data)[0])))

    @property
    def mask(self) -> np.ndarray:
        """The weights the forward pass uses: |W| > τ (what FLOPs and the record count)."""
        return backend.to_numpy(_excess(self.weight.data, self.s.data)[0] > 0)

    def as_sparse(self):
        """What the layer computes, W̃, as a SparseLinear/SparseConv2d of format masked."""
        w_eff = SoftThreshold().forward(self.weight.data, self.s.data)     # on the weights' device
        matrix = w_eff.reshape(w_eff.shape[0], -1)                    # (out, in * kh * kw)
        values = backend.array_module(matrix).ascontiguousarray(matrix).ravel()
        weight = Masked(values, backend.to_numpy(matrix != 0))
        return sparse_like(self, weight)

    def effective_weight(self):
        return SoftThreshold.apply(self.weight, self.s, alpha=self.alpha)


class AutoSparseLinear(_SoftThresholdLayer, Linear):
    def __init__(self, layer: Linear, s: float):
        self._adopt(layer, s)

    def forward(self, x):
        y = F.linear(x, self.effective_weight(), self.bias)
        self.columns = y.shape[0] if self.training else self.columns
        return y


class AutoSparseConv2d(_SoftThresholdLayer, Conv2d):
    def __init__(self, layer: Conv2d, s: float):
        self._adopt(layer, s)

    def forward(self, x):
        y = F.conv2d(x, self.effective_weight(), self.bias, stride=self.stride,
                     padding=self.padding)
        self.columns = y.shape[0] * y.shape[2] * y.shape[3] if self.training else self.columns
        return y


def _logit(tau):
    return math.log(tau / (1 - tau))


@register("autosparse")
class AutoSparse(SparseMethod):
    """Learnable per-layer thresholds (STR) with annealed gradients for the pruned weights (GA)."""

    VARIANTS = {"budgeted": {"target_gain": 10.0, "s_init": None, "sparsity": 0.9},
                "paper": {"target_gain": 0.0, "s_init": -5.0, "sparsity": 0.0}}
    option_help = {
        "variant": "budgeted: the engine's target pull keeps the overall sparsity at the "
                   "target (default) | paper: the paper's free run (μ = 0, s_init = -5, no "
                   "target)",
        "sparsity": "the target of the budgeted variant (default 0.9); the paper variant has "
                    "none",
        "alpha": "α_0, the gradient-annealing factor at step 0 (paper, ResNet50: 0.75)",
        "t_reset": "when α becomes 0: a fraction of training or a step count (paper: epoch 90 "
                   "of 100, 0.9)",
        "s_init": "a constant initial threshold parameter, τ = sigmoid(s) (paper, ResNet50: "
                  "-5); default: the |w| quantile of each layer's target (budgeted variant)",
        "target_gain": "μ, the pull towards the target sparsity (budgeted: 10; paper: 0)",
        "format": "masked only: gradient annealing trains the pruned weights too",
    }

    def __init__(self, sparsity=None, alpha=0.75, t_reset=0.9, s_init=None, target_gain=None,
                 variant="budgeted", format="masked", block_size=None, n=2, m=4,
                 distribution="erk", dense_layers=()):
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {sorted(self.VARIANTS)}, got {variant!r}")
        preset = self.VARIANTS[variant]
        if variant == "paper" and sparsity not in (None, 0, 0.0):
            raise ValueError(f"variant 'paper' has no target sparsity (it is an outcome of "
                             f"training): leave sparsity out, got {sparsity!r}")
        sparsity = preset["sparsity"] if sparsity is None else sparsity
        s_init = preset["s_init"] if s_init is None else s_init
        target_gain = preset["target_gain"] if target_gain is None else target_gain
        self.variant = variant
        super().__init__(sparsity, format, block_size, n, m, distribution, dense_layers)
        if format != "masked":
            raise ValueError(f"autosparse needs format 'masked', got {format!r}: gradient "
                             "annealing trains the pruned weights too, so every weight must stay "
                             "stored; csr, block and nm keep only the kept weights and a dropped "
                             "one could never return")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha (α_0, the gradient-annealing factor at step 0) must be a "
                             f"number in [0, 1], got {alpha!r}")
        if isinstance(t_reset, bool) or not isinstance(t_reset, (int, float)) or t_reset <= 0 \
                or (isinstance(t_reset, float) and t_reset > 1):
            raise ValueError(f"t_reset (when α becomes 0) must be a fraction of training in (0, 1] "
                             f"or a positive step count, got {t_reset!r}")
        if s_init is not None and (isinstance(s_init, bool) or not isinstance(s_init, (int, float))
                                   or not math.isfinite(s_init)):
            raise ValueError(f"s_init (the threshold parameter, τ = sigmoid(s)) must be a finite "
                             f"number or None, got {s_init!r}")
        if s_init is None and sparsity == 0:
            raise ValueError("autosparse starts each layer's threshold at the |w| quantile of its "
                             "target: sparsity must be in (0, 1), or give s_init")
        if isinstance(target_gain, bool) or not isinstance(target_gain, (int, float)) \
                or not math.isfinite(target_gain) or target_gain < 0:
            raise ValueError(f"target_gain (μ, the pull of the thresholds towards the target "
                             f"sparsity) must be a finite number >= 0, got {target_gain!r}")
        self.alpha_0, self.t_reset, self.s_init = float(alpha), t_reset, s_init
        self.target_gain = float(target_gain)

    # ----- set-up: every weighted layer gets its threshold ---------------------------------------
    def setup(self, model, optimizer, loader, total_steps):
        super().setup(model, optimizer, loader, total_steps)
        self.total_steps = check_positive_int(total_steps, "total_steps")
        self.reset_step = (max(1, int(round(self.t_reset * total_steps)))
                           if isinstance(self.t_reset, float) else int(self.t_reset))
        layers = prunable_layers(model)
        if any(not isinstance(layer, (Linear, Conv2d)) for _, layer in layers):
            raise ValueError("autosparse trains dense Linear/Conv2d layers with thresholds (format "
                             "'masked'); the model already has sparse layers")
        self.layers, self.initial, self.targets = [], {}, self._layer_targets(model, layers)
        for name, layer in layers:
            if name not in self.targets:                     # kept dense
                continue
            s = self.s_init if self.s_init is not None else \
                self._quantile_s(name, layer, self.targets[name])
            kind = AutoSparseConv2d if isinstance(layer, Conv2d) else AutoSparseLinear
            wrapped = kind(layer, s)
            model.replace_submodule(name, wrapped)
            self.layers.append((name, wrapped))
            self.initial[name] = wrapped.threshold
        if not self.layers:
            raise ValueError(f"sparsity={self.sparsity} with distribution={self.distribution!r} "
                             "left every layer dense: no threshold to learn")
        self.sizes = {name: int(np.prod(weight_shape(layer))) for name, layer in self.layers}
        self.target = None if self.sparsity == 0 else sum(     # S*, over the thresholded layers
            self.targets[n] * k for n, k in self.sizes.items()) / sum(self.sizes.values())
        self.alpha_t = annealing_factor(0, self.total_steps, self.alpha_0, self.reset_step)
        self._set_alpha(self.alpha_t)
        self._kept = self._kept_counts()
        self._changed, self._extra = True, 0.0

    def _layer_targets(self, model, layers):
        """{name: target sparsity} of the layers that get a threshold (None: s_init, no target)."""
        if self.sparsity > 0:
            densities = layer_densities(model, self.sparsity, self.distribution, self.dense_layers)
            return {n: 1 - d for n, d in densities.items() if d < 1}
        names = [n for n, _ in layers]               # s_init alone: all but the dense_layers
        keep = {names[0] if d == "first" else names[-1] if d == "last" else d
                for d in self.dense_layers}
        return {n: None for n in names if n not in keep}

    @staticmethod
    def _quantile_s(name, layer, sparsity):
        """s with sigmoid(s) = the quantile of |w| that prunes `sparsity` of the layer."""
        tau = float(np.quantile(np.abs(backend.to_numpy(layer.weight.data)), sparsity))
        if not 0 < tau < 1:
            raise ValueError(f"layer {name!r}: the threshold for sparsity {sparsity:.4f} would be "
                             f"{tau:.4g}, outside (0, 1) where τ = sigmoid(s) lives")
        return _logit(tau)

    def _set_alpha(self, alpha):
        for _, layer in self.layers:
            layer.alpha = alpha

    def _kept_counts(self):
        return {name: int(layer.mask.sum()) for name, layer in self.layers}

    # ----- every step -----------------------------------------------------------------------------
    def after_backward(self, step):
        """The target pull: g_s += −μ (S* − S_t), S_t the sparsity the forward pass just used."""
        if self.target_gain == 0 or self.target is None:
            return
        gap = self.target - (1 - sum(self._kept.values()) / sum(self.sizes.values()))
        for _, layer in self.layers:
            if layer.s.grad is not None:
                layer.s.grad = layer.s.grad - layer.s.grad.dtype.type(self.target_gain * gap)

    def after_step(self, step):
        if self.alpha_t > 0:       # GA needed ∂L/∂W̃ at the pruned positions too: a dense SDDMM
            for name, layer in self.layers:
                self._extra += 2.0 * (self.sizes[name] - self._kept[name]) * layer.columns
        self.alpha_t = annealing_factor(step + 1, self.total_steps, self.alpha_0, self.reset_step)
        self._set_alpha(self.alpha_t)
        kept = self._kept_counts()
        self._changed |= kept != self._kept
        self._kept = kept
        if step + 1 == self.total_steps:
            self.finish()

    def finish(self):
        """After the last step, each layer becomes what it computes: W̃ stored in the masked
        format (W̃ and its zeros are the trained model), so the run's model saves, loads and
        counts like any sparse model. The thresholds stay in the record."""
        model = self.model
        for name, layer in self.layers:
            model.replace_submodule(name, layer.as_sparse())
        self._changed = True

    # ----- checkpoints: besides the plain attributes, the thresholds s on the layers --------
    def state_dict(self) -> dict:
        state = super().state_dict()
        if hasattr(self, "layers"):        # they outlive the layers' place in the model (finish)
            state["layer_s"] = {name: backend.to_numpy(layer.s.data).copy()
                                for name, layer in self.layers}
        return state

    def load_state_dict(self, state):
        state = dict(state)
        thresholds = state.pop("layer_s", None)
        super().load_state_dict(state)
        if thresholds is not None:
            if set(thresholds) != {name for name, _ in self.layers}:
                raise ValueError(f"the state has thresholds for {sorted(thresholds)}, the method "
                                 f"for {[name for name, _ in self.layers]}")
            for name, layer in self.layers:
                xp = backend.array_module(layer.s.data)
                layer.s.data = xp.array(thresholds[name], dtype=layer.s.data.dtype)
            self._set_alpha(self.alpha_t)

    def describe(self) -> dict:
        pulled = self.target_gain > 0 and self.sparsity > 0
        variant = self.variant + (": the thresholds are pulled towards the target sparsity (an "
                                  "engine addition, not in the paper)" if pulled else
                                  ": free thresholds, the sparsity is an outcome of training")
        out = dict(super().describe(), variant=variant, alpha_0=self.alpha_0,
                   t_reset=self.t_reset,
                   alpha_decay="sigmoid-cosine", L0=L0, L1=L1, target_gain=self.target_gain,
                   s_init="quantile of |w| at the target" if self.s_init is None else self.s_init)
        if hasattr(self, "layers"):
            out.update(reset_step=self.reset_step, final_alpha=self.alpha_t,
                       target_thresholded=self.target,
                       thresholded_sparsity=1 - sum(self._kept.values()) / sum(self.sizes.values()),
                       thresholds=[{"name": name, "threshold": layer.threshold,
                                    "s": float(backend.to_numpy(layer.s.data)[0]),
                                    "initial_threshold": self.initial[name],
                                    "target_sparsity": self.targets[name],
                                    "sparsity": 1 - self._kept[name] / self.sizes[name]}
                                   for name, layer in self.layers])
        return out
