"""The host a figure came from: CPU model, caches, logical CPUs, load average, library versions.

Benchmarks print this next to their figures (and put it in their --json), so figures from
different machines are never compared blind.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from speedy.runinfo import cpu_model


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _caches() -> dict[str, str]:
    """CPU 0's caches from sysfs: {'L1d': '48K', 'L1i': '64K', 'L2': '2048K', 'L3': '491520K'} (Linux only).

    A size is per instance; '(shared by CPUs 0-1)' is appended where an instance serves several CPUs.
    """
    root = "/sys/devices/system/cpu/cpu0/cache"
    caches: dict[str, str] = {}
    try:
        entries = sorted(e for e in os.listdir(root) if e.startswith("index"))
    except OSError:
        return caches
    for entry in entries:
        try:
            level, kind, size, shared = (
                _read_text(os.path.join(root, entry, name)) for name in ("level", "type", "size", "shared_cpu_list")
            )
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[f"L{level}{suffix}"] = size + (f" (shared by CPUs {shared})" if shared not in ("0", "") else "")
    return caches


def host_info() -> dict:
    """Where the figures came from: CPU, caches, logical CPUs, 1/5/15-min load average, library versions."""
    import llvmlite
    import numba

    return {
        "cpu": cpu_model(),
        "caches": _caches(),
        "logical_cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": np.__version__,
    }


def host_line(host: dict) -> str:
    """One human line: CPU, logical CPUs, caches, load average."""
    caches = ", ".join(f"{k} {v}" for k, v in host["caches"].items()) or "unknown"
    return (f"host: {host['cpu']}, {host['logical_cpus']} logical CPUs; caches: {caches}; "
            f"load average {host['load_average'][0]:.2f}")
