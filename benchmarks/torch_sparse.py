"""What a PyTorch user would write for a truly sparse MLP: CSR weights with `torch.sparse`.

The comparison for `scale.py` and `train_speed.py`: the same random Erdős–Rényi topology as
sparsenet's SET network (ε densities, the output layer dense), trained with SGD and momentum
on the CPU, PyTorch's default thread count. Only the stored values are parameters:

    forward   y = W x + b           torch.sparse.mm(W_csr, x^T)
    backward  dL/dx = W^T g         torch.sparse.mm(W^T_csr, g), W^T kept as a second CSR
              dL/dW (stored only)   torch.sparse.sampled_addmm on W's pattern

The topology stays fixed (no SET rewiring), so this times the steps between topology updates,
which is what most of an epoch is. PyTorch is never a dependency: `available()` says whether
it is installed.
"""
from __future__ import annotations

import time

import numpy as np


def available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _sparse_linear_function(torch):
    class SparseLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, values, x, crow, col, crow_t, col_t, perm, shape):
            W = torch.sparse_csr_tensor(crow, col, values, shape)
            ctx.save_for_backward(values, x, crow, col, crow_t, col_t, perm)
            ctx.shape = shape
            return torch.sparse.mm(W, x.t()).t()                      # (batch, out)

        @staticmethod
        def backward(ctx, g):
            values, x, crow, col, crow_t, col_t, perm = ctx.saved_tensors
            G = g.t().contiguous()                                      # (out, batch)
            pattern = torch.sparse_csr_tensor(crow, col, torch.zeros_like(values), ctx.shape)
            gv = torch.sparse.sampled_addmm(pattern, G, x, beta=0.0).values()
            gx = None
            if ctx.needs_input_grad[1]:
                W_t = torch.sparse_csr_tensor(crow_t, col_t, values[perm],
                                              (ctx.shape[1], ctx.shape[0]))
                gx = torch.sparse.mm(W_t, G).t()
            return gv, gx, None, None, None, None, None, None
    return SparseLinear


def er_layers(sizes, epsilon, rng):
    """[(indptr, indices, shape) or None (dense)] for an MLP with SET's ε densities, the
    patterns sampled like sparsenet's (uniform, exact count)."""
    from sparsenet.sparse.distributions import er_density
    from sparsenet.sparse.topology import random_pattern
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        density = er_density((n_out, n_in), epsilon)
        if density >= 1:
            out.append(None)
        else:
            w = random_pattern("csr", (n_out, n_in), density, rng)
            out.append((w.indptr, w.indices, w.shape, w.transposed_index()))
    return out


def set_mlp_step(sizes, epsilon=20, batch=128, seed=0):
    """A closure running one PyTorch training step of the SET network `sizes`, and its
    number of stored weights."""
    import torch
    fn = _sparse_linear_function(torch)
    rng = np.random.default_rng(seed)
    params, layers, stored = [], [], 0
    for (n_in, n_out), pattern in zip(zip(sizes[:-1], sizes[1:]), er_layers(sizes, epsilon, rng)):
        bias = torch.zeros(n_out, requires_grad=True)
        if pattern is None:
            weight = torch.empty(n_out, n_in).uniform_(-(6 / n_in) ** .5, (6 / n_in) ** .5)
            weight.requires_grad_(True)
            layers.append(("dense", weight, bias))
            params += [weight, bias]
            stored += n_in * n_out
            continue
        indptr, indices, shape, (colptr, rowind, perm) = pattern
        fan_in = np.maximum(np.diff(indptr), 1)[np.repeat(np.arange(shape[0]), np.diff(indptr))]
        values = torch.from_numpy((rng.uniform(-1, 1, indices.size) * np.sqrt(6 / fan_in))
                                  .astype(np.float32)).requires_grad_(True)
        tensors = [torch.from_numpy(np.array(a, dtype=np.int64)) for a in
                   (indptr, indices, colptr, rowind, perm)]
        layers.append(("sparse", values, bias, tensors, shape))
        params += [values, bias]
        stored += indices.size
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))

    def step():
        h = x
        for i, layer in enumerate(layers):
            if layer[0] == "dense":
                h = torch.nn.functional.linear(h, layer[1], layer[2])
            else:
                _, values, bias, (crow, col, crow_t, col_t, perm), shape = layer
                h = fn.apply(values, h, crow, col, crow_t, col_t, perm, shape) + bias
            if i < len(layers) - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, stored


def time_steps(sizes, steps, epsilon=20, batch=128):
    """Median seconds per PyTorch step over `steps` steps (after two warm-up steps)."""
    step, stored = set_mlp_step(sizes, epsilon, batch)
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), stored
