"""What a run records so that its wall-clock is a result: the hardware it ran on and the time at each env-step
milestone (metrics/agent.jsonl, read by tools/atari100k.py).

Records written to the "agent" metrics source (each also carries `time`, unix seconds, and `step`):
    {"event": "start", "host": host_summary(), "config": ..., ...}     once, when the run starts
    {"event": "milestone", "env_steps": E, "minutes": M}                the first time env steps reach each
                                                                        multiple of the milestone interval
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from typing import Any

import torch

from speedy.metrics import MetricsWriter


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """Names of the machine's NVIDIA GPUs from nvidia-smi (without creating a CUDA context here); [] if none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def host_summary() -> dict[str, Any]:
    """The hardware a run used: CPU model, logical and usable CPUs, GPU names, torch and CUDA versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"hostname": platform.node(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "gpus": gpu_names(), "torch": torch.__version__, "cuda": torch.version.cuda}


def milestone_interval(max_env_steps: int) -> int:
    """Env steps between milestones: 1,000 for runs of 20k env steps or more (100 points for Atari 100k), else a
    twentieth of the run (at least 10), so short runs still get a curve."""
    return 1000 if max_env_steps >= 20_000 else max(10, max_env_steps // 20)


class Milestones:
    """Writes a milestone record the first time env steps reach each multiple of `every` (minutes since `start`,
    a unix time in seconds). Several milestones crossed at once are each recorded with the same time."""

    def __init__(self, writer: MetricsWriter, start: float, every: int, env_steps: int = 0) -> None:
        self.writer, self.start, self.every = writer, start, every
        self.next = (env_steps // every + 1) * every

    def update(self, env_steps: int, train_steps: int = 0) -> None:
        """Record every milestone up to `env_steps` not yet recorded."""
        while env_steps >= self.next:
            self.writer.write(train_steps, {"event": "milestone", "env_steps": self.next,
                                            "minutes": (time.time() - self.start) / 60})
            self.next += self.every
