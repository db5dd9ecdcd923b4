"""How much memory a model will need, estimated from its shapes before anything is allocated.

`build_model` calls `check_fits` first, so a model that cannot fit is refused with the
estimate in the message instead of failing halfway through allocating (or being killed by the
operating system). The estimate counts what training holds per weight, for every layer:

    dense weight        4 B value + 4 B gradient + 4 B optimizer state (SGD momentum)    12 B
    CSR weight          4 B value + 4 B column index + 4 B + 8 B for the transposed
                        index (row index, permutation) + 4 B gradient + 4 B state         28 B
    Block / N:M weight  12 B per value, plus a 4 B index per block / 1 B offset per value
    masked weight       the dense 12 B plus the 1 B mask, for every dense position

Activations are not counted (they depend on the batch size, known only when training starts);
Adam keeps a second state array (4 B more per weight). The total is compared with the memory
the operating system reports as available now, and with what this process may use at all
(`limits.memory_limit`: physical memory, ulimit -v, a cgroup limit).
"""
from __future__ import annotations

import os

import numpy as np

from ..limits import TooLarge, human_bytes, memory_limit

BYTES_PER_WEIGHT = {"dense": 12, "csr": 28, "block": 12, "nm": 13, "masked": 13}


def available_bytes() -> int | None:
    """Memory available to a new allocation now (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate(shapes: dict, densities: dict, format="csr", format_options=None) -> dict:
    """{layer name: estimated bytes} for training, and "total" (see the module docstring)."""
    block = (format_options or {}).get("block_size", 16)
    out = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        density = densities.get(name, 1.0)
        if density >= 1:
            out[name] = size * BYTES_PER_WEIGHT["dense"]
        elif format == "masked":
            out[name] = size * BYTES_PER_WEIGHT["masked"]
        else:
            stored = int(round(density * size))
            extra = 4 * stored // (block * block) if format == "block" else 0
            out[name] = stored * BYTES_PER_WEIGHT[format] + extra
    out["total"] = sum(out.values())
    return out


def check_fits(spec, shapes, densities, format="csr", format_options=None, available=None):
    """Raise TooLarge (a ValueError), with the estimate, when model `spec` cannot fit."""
    need = estimate(shapes, densities, format, format_options)
    if available is None:
        now = available_bytes()
        available = min(memory_limit(), now if now is not None else 2 ** 63)
    if need["total"] <= available:
        return need
    largest = max((n for n in need if n != "total"), key=lambda n: need[n])
    d = densities.get(largest, 1.0)
    kind = "dense" if d >= 1 else f"{format} at density {d:.2g}"
    raise TooLarge(
        f"model {spec!r} would need about {human_bytes(need['total'])} for its weights, "
        f"gradients and optimizer state, more than the {human_bytes(available)} of memory "
        f"available; the largest layer, {largest} {tuple(shapes[largest])} ({kind}), alone "
        f"needs {human_bytes(need[largest])}. A sparsity (--sparsity, or --opt epsilon=... for "
        f"SET) makes a wide layer small")
