"""Training character-level language models: `sparsenet train --model gpt:... --dataset
shakespeare`. `train.train_model` hands such a run to `train_language_model` here.

A step is one batch of random windows (`data.TextBatches`, batch_size x context characters);
the loss is the mean cross-entropy of the next character plus the MoE layers' balancing losses.
The run has `config.steps` steps, or, with steps = 0, `config.epochs` times the steps that see
as many characters as the training split holds; `config.max_steps` stops it early (the schedule
stays the whole run's, the record says `stopped_early`). The thread policy (threads.py) is the
image runs'. Every method's hooks run as in the image loop
(setup before the optimizer, after_backward, after_step), so RigL, SR-STE and the others train
transformers unchanged; the methods that need several training phases (lottery tickets,
prune-then-fine-tune) are refused.

Optimizer: `config.optimizer` (use adamw for transformers) with weight decay on the weight
matrices only (Linear weights, sparse values, experts), not on biases, layer norms, embeddings
or routers (nanoGPT's grouping); schedule: linear warm-up over the first 5 % of the steps, then
`config.schedule`. Evaluation: bits per character, the mean cross-entropy over ln 2, on
consecutive windows of the validation split (every character predicted once): its first 32,768
characters ten times during the run, the whole split (and the test split) at the end.

The record has the image records' bookkeeping fields (method, model, seed, train_seconds,
layers, parameters, bytes, flops, hyperparameters, versions) and, instead of accuracies,
`val_bpc` and `test_bpc`, a `history` of evaluations, the per-step training loss and, for MoE
models, the per-step expert load (max/mean), dropped fraction and balancing losses per layer.
"""
from __future__ import annotations

import dataclasses
import math
import resource
import time

import numpy as np

from . import metrics, optim, threads
from .algorithms import get_method
from .data.text import TEXT_DATASETS, TextBatches, evaluation_windows, load_text
from .nn import build_model
from .nn.functional import sequence_cross_entropy
from .nn.moe import MoE
from .nn.transformer import Embedding, GPT, LayerNorm
from .tensor import no_grad

EVAL_CHARACTERS = 32768            # validation characters scored during training
EVALUATIONS = 10
WARMUP_FRACTION = 0.05


def is_language_model(config) -> bool:
    """True for a run on a text dataset or with a transformer spec; both or neither."""
    text, gpt = config.dataset in TEXT_DATASETS, config.model.startswith("gpt:")
    if text and not gpt:
        raise ValueError(f"dataset {config.dataset!r} is character-level text: it needs a "
                         f"'gpt:...' model (e.g. gpt:L4-D128-H4-T64), got {config.model!r}")
    if gpt and not text:
        raise ValueError(f"model {config.model!r} is a language model: train it with "
                         f"--dataset {TEXT_DATASETS[0]}, not {config.dataset!r}")
    return text


def total_steps(config, batches) -> int:
    from .train import fast_mode
    steps = config.steps or config.epochs * len(batches)
    return min(steps, 8) if fast_mode() else steps


def param_groups(model, weight_decay):
    """Weight decay on weight matrices (Linear weights, sparse values, experts) only."""
    no_decay = set()
    for module in model.modules():
        if isinstance(module, (Embedding, LayerNorm)):
            no_decay.update(id(p) for p in module._parameters.values())
        if isinstance(module, MoE):
            no_decay.update(id(p) for name, p in module._parameters.items()
                            if name in ("w_gate", "w_noise", "b1", "b2"))
        if getattr(module, "bias", None) is not None:
            no_decay.add(id(module.bias))
    params = model.parameters()
    return [{"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]


def evaluate_bpc(model, tokens, context, max_characters=None, batch_size=64, loads=None):
    """Bits per character of `model` on consecutive windows of `tokens`, without a graph.
    `loads`: a dict that collects, per MoE layer, the tokens routed to each expert in every
    batch (evaluation routing: no noise)."""
    x, y = evaluation_windows(tokens, context, max_characters)
    was_training = model.training
    model.eval()
    nats = 0.0
    with no_grad():
        for i in range(0, len(x), batch_size):
            loss = sequence_cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size])
            nats += loss.item() * y[i:i + batch_size].size
            if loads is not None and isinstance(model, GPT):
                for name, layer in model.moe_layers():
                    loads.setdefault(name, []).append(layer.stats["load"])
    model.train(was_training)
    return nats / y.size / math.log(2)


def validation_load(loads) -> dict:
    """Expert load on evaluation text: per layer the summed counts, their max/mean, and the
    mean over batches of each batch's max/mean (comparable to the training steps')."""
    out = {}
    for name, batches in loads.items():
        counts = np.asarray(batches, dtype=np.float64)                    # (batches, experts)
        total = counts.sum(axis=0)
        out[name] = {"load": total.astype(int).tolist(),
                     "load_max_mean": float(total.max() / total.mean()),
                     "batch_load_max_mean": float((counts.max(axis=1) /
                                                   counts.mean(axis=1)).mean())}
    return out


def flops_per_token(model) -> tuple:
    """(forward FLOPs of one token's weight products now, the same for the dense model):
    2 per multiply-add, as `metrics` counts them; a MoE layer counts its router and k experts."""
    sparse = dense = 0
    for _, module in model.named_modules():
        if isinstance(module, MoE):
            sparse += 2 * module.active_weights()
            dense += 2 * module.active_weights()
            continue
        counts = None if isinstance(module, Embedding) else metrics.weight_counts(module)
        if counts is not None:
            sparse, dense = sparse + 2 * counts[0], dense + 2 * counts[1]
    return sparse, dense


def weight_table(model) -> list:
    """metrics.layer_table's rows for the weight products (embeddings are lookups, left out),
    and one row per MoE layer: its router and experts, all stored, shape (experts, weights
    per expert + router weights per expert)."""
    rows = [r for r in metrics.layer_table(model) if r["type"] != "Embedding"]
    for name, m in model.named_modules():
        if isinstance(m, MoE):
            weights = m.w1.size + m.w2.size + m.w_gate.size + \
                (m.w_noise.size if m.router == "noisy_topk" else 0)
            rows.append({"name": name, "type": "MoE", "shape": [m.n_experts,
                         weights // m.n_experts], "density": 1.0, "format": "dense",
                         "nnz": weights})
    return rows


def moe_log(model):
    layers = model.moe_layers() if isinstance(model, GPT) else []
    return {"layers": [name for name, _ in layers], "per_step": {}} if layers else None


def _log_moe(log, model):
    for name, layer in model.moe_layers():
        for key, value in layer.stats.items():
            if key in ("load", "capacity"):
                continue
            log["per_step"].setdefault(key, []).append(round(value, 6))
        log.setdefault("last_step_load", {})[name] = layer.stats["load"]


def moe_summary(log) -> dict:
    """Mean of each per-step statistic over all steps and over the last tenth, all layers."""
    n_layers = len(log["layers"])
    out = {"last_step_load": log.get("last_step_load")}
    for key, flat in log["per_step"].items():
        per_step = np.asarray(flat).reshape(-1, n_layers)                  # (steps, layers)
        tail = per_step[-max(1, len(per_step) // 10):]
        out[key] = {"mean": float(per_step.mean()), "last_tenth": float(tail.mean()),
                    "last_tenth_per_layer": tail.mean(axis=0).round(4).tolist()}
    return out


def train_language_model(config, log=print, model=None, corpus=None):
    """Train a transformer on a text corpus; returns (model, record)."""
    from .train import fast_mode, make_optimizer, make_scheduler, versions
    if config.device != "cpu":
        raise ValueError(f"language models train on the CPU (the MoE kernels have no GPU twin "
                         f"yet), got device {config.device!r}")
    corpus = corpus or load_text(config.dataset, config.data)
    model = model or build_model(config.model, num_classes=len(corpus.vocabulary))
    context = model.config.context
    batches = TextBatches(corpus.train, config.batch_size, context, seed=config.seed)
    steps = total_steps(config, batches)
    options = dict(config.method_options)
    if config.method != "dense":
        options.setdefault("sparsity", config.sparsity)
    method = get_method(config.method, **options)
    if hasattr(method, "train_model"):
        raise ValueError(f"method {config.method!r} trains in several phases, which the language-"
                         "model loop does not run; use a one-phase method (dense, rigl, set, "
                         "static, sr_ste, ...)")
    method.setup(model, None, batches, steps)
    thread_policy = threads.apply_policy(model, config.threads)   # after setup: sparse layers count
    # --max-steps probes a long run: the schedule is the whole run's, the loop stops early
    run_steps = min(steps, config.max_steps) if config.max_steps is not None else steps
    optimizer = make_optimizer(config, param_groups(model, config.weight_decay))
    method.optimizer = optimizer
    warmup = max(1, int(WARMUP_FRACTION * steps)) if steps > 1 else 0
    scheduler = (optim.CosineLR(optimizer, steps, warmup=warmup) if config.schedule == "cosine"
                 else make_scheduler(dataclasses.replace(config, epochs=1), optimizer, steps))
    eval_chars = 2048 if fast_mode() else EVAL_CHARACTERS
    eval_every = max(1, steps // EVALUATIONS)
    fwd_sparse, fwd_dense = flops_per_token(model)
    train_flops = dense_flops = 0.0
    history, losses, moe, window = [], [], moe_log(model), []
    start = t0 = time.perf_counter()
    eval_seconds = 0.0                        # evaluations during training, not training time
    for step in range(run_steps):
        x, y = batches.batch(step)
        loss = sequence_cross_entropy(model(x), y)
        aux = model.aux_loss() if isinstance(model, GPT) else None
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"training diverged: the loss is {loss.item()} at step "
                                     f"{step + 1} with lr {scheduler.get_lr():g}; lower --lr")
        optimizer.zero_grad()
        (loss if aux is None else loss + aux).backward()
        method.after_backward(step)
        optimizer.step()
        method.after_step(step)
        scheduler.step()
        if method.topology_changed():
            fwd_sparse, _ = flops_per_token(model)
        train_flops += 3 * fwd_sparse * y.size + method.extra_flops()
        dense_flops += 3 * fwd_dense * y.size
        losses.append(round(loss.item(), 5))
        window.append(loss.item())
        if moe:
            _log_moe(moe, model)
        if (step + 1) % eval_every == 0 or step + 1 == run_steps:
            seconds = time.perf_counter() - t0
            bpc = evaluate_bpc(model, corpus.valid, context, eval_chars)
            eval_seconds += time.perf_counter() - t0 - seconds
            history.append({"step": step + 1, "loss": float(np.mean(window)),
                            "val_bpc_subset": bpc, "seconds": seconds,
                            "lr": scheduler.get_lr()})
            if log:
                log(f"step {step + 1:6d}  loss {np.mean(window):.4f}  val {bpc:.4f} bpc "
                    f"(first {eval_chars:,} characters)  {seconds:.1f} s")
            window, t0 = [], time.perf_counter()
    train_seconds = time.perf_counter() - start - eval_seconds
    final_chars = eval_chars if fast_mode() else None
    t_eval = time.perf_counter()
    loads = {}
    val_bpc = evaluate_bpc(model, corpus.valid, context, final_chars, loads=loads)
    test_bpc = evaluate_bpc(model, corpus.test, context, final_chars)
    eval_seconds += time.perf_counter() - t_eval
    fwd_sparse, fwd_dense = flops_per_token(model)
    prunable = weight_table(model)
    stored, full = sum(r["nnz"] for r in prunable), sum(int(np.prod(r["shape"])) for r in prunable)
    record = {
        "method": config.method, "model": config.model, "dataset": config.dataset,
        "sparsity": 1 - stored / full, "density": stored / full,
        "target_sparsity": config.sparsity,
        "val_bpc": val_bpc, "test_bpc": test_bpc, "evaluated_on": "validation and test splits",
        "steps": run_steps, "planned_steps": steps, "stopped_early": run_steps < steps,
        "tokens_per_step": config.batch_size * context,
        "epochs": run_steps * config.batch_size * context / len(corpus.train),
        "seed": config.seed, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "seconds_per_step": train_seconds / run_steps, "threads": thread_policy,
        "history": history, "train_loss": losses,
        "layers": prunable, "parameters": model.num_parameters(),
        "weights_stored": stored, "weights_dense": full,
        "active_weights_per_token": fwd_sparse // 2,
        "bytes": metrics.parameter_bytes(model, optimizer),
        "flops": {"inference_per_token": fwd_sparse, "dense_inference_per_token": fwd_dense,
                  "inference_relative": fwd_sparse / fwd_dense,
                  "training_relative": train_flops / dense_flops, "training_total": train_flops},
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "data": {"origin": corpus.origin, "train": int(len(corpus.train)),
                 "valid": int(len(corpus.valid)), "test": int(len(corpus.test)),
                 "vocabulary": len(corpus.vocabulary), "fast_mode": fast_mode()},
        "hyperparameters": {k: v for k, v in dataclasses.asdict(config).items()
                            if k != "progress"},
        "warmup_steps": warmup, "method_details": method.describe(), "versions": versions(),
    }
    if moe:
        record["moe"] = dict(moe, summary=moe_summary(moe), validation_load=validation_load(loads))
    return model, record


def summary_line(record) -> str:
    return (f"{record['method']:>10s} {record['model']}  validation {record['val_bpc']:.4f} "
            f"bits/char  test {record['test_bpc']:.4f}  density {record['density']:.4f}  "
            f"params {record['parameters']:,}  active/token {record['active_weights_per_token']:,}"
            f"  {record['steps']} steps  {record['train_seconds']:.1f} s")


__all__ = ["is_language_model", "train_language_model", "evaluate_bpc", "flops_per_token",
           "summary_line"]
