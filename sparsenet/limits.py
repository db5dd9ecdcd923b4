"""How much memory this process may take, checked before a large allocation is attempted.

A model spec such as `mlp:784-100000000-10`, or a file asking for one, would otherwise try to
allocate hundreds of GiB and die (or, under a memory cap, raise from deep inside NumPy or
safetensors). `check_bytes(n, what)` refuses with an estimate first.
"""
from __future__ import annotations

import os
import resource


class TooLarge(ValueError):
    """An allocation that could not fit in this machine's memory."""


def memory_limit() -> int:
    """Bytes this process may use: physical memory, lowered by an address-space limit
    (ulimit -v) or a cgroup memory limit when one is set."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        limits.append(soft)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:
            limits.append(int(text))
    return min(limits) if limits else 2 ** 63


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def check_bytes(nbytes: int, what: str) -> None:
    """Raise TooLarge if `nbytes` could not fit in memory."""
    limit = memory_limit()
    if nbytes > limit:
        raise TooLarge(f"{what} needs about {human_bytes(nbytes)}, more than the "
                       f"{human_bytes(limit)} of memory this process may use")
