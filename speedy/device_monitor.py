"""How busy this machine's NVIDIA GPUs are: sampled by the node agent for the pipeline profile (speedy/profile.py).

The source is `nvidia-smi --query-gpu`, which every NVIDIA driver installs, so no Python binding is needed. Its
`utilization.gpu` is the percentage of the driver's last sample period (1/6 s to 1 s) during which at least one
kernel ran; sampling about once a second therefore covers the run's time. A machine without `nvidia-smi` (no NVIDIA
GPU) has no monitor, and the profile shows no GPU figures there.

Only the GPUs this run can see are reported: those named by CUDA_VISIBLE_DEVICES (by index or UUID), all when it is
unset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

QUERY_FIELDS = ("index", "uuid", "name", "utilization.gpu", "memory.used", "memory.total")
QUERY_TIMEOUT_S = 5.0
MIB_PER_GIB = 1024.0


class DeviceQueryError(RuntimeError):
    """nvidia-smi failed or printed something that is not its CSV answer."""


@dataclass(frozen=True)
class DeviceReading:
    """One GPU at one moment."""

    index: int  # nvidia-smi's index (the physical one, not the CUDA_VISIBLE_DEVICES position)
    uuid: str
    name: str
    busy: float | None  # fraction (0–1) of the driver's last sample period with a kernel running; None: not reported
    memory_used_gib: float
    memory_total_gib: float


def query_command(nvidia_smi: str = "nvidia-smi") -> list[str]:
    return [nvidia_smi, f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]


def parse_query(text: str) -> list[DeviceReading]:
    """nvidia-smi's CSV answer (one line per GPU, fields as QUERY_FIELDS, no units) → readings. A field the driver
    does not report ('[N/A]', e.g. utilization under MIG) becomes None (busy) or 0 (memory)."""
    readings = []
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(QUERY_FIELDS):
            raise DeviceQueryError(f"nvidia-smi printed {line!r}: expected {len(QUERY_FIELDS)} comma-separated "
                                   f"fields ({', '.join(QUERY_FIELDS)})")
        index, uuid, name, util, used, total = fields
        try:
            readings.append(DeviceReading(index=int(index), uuid=uuid, name=name, busy=_number(util, 100.0),
                                          memory_used_gib=_number(used, MIB_PER_GIB) or 0.0,
                                          memory_total_gib=_number(total, MIB_PER_GIB) or 0.0))
        except ValueError as e:
            raise DeviceQueryError(f"nvidia-smi printed {line!r}: {e}") from e
    return readings


def _number(field: str, scale: float) -> float | None:
    """'35' → 35 / scale; '[N/A]' or '[Not Supported]' → None."""
    if field.startswith("["):
        return None
    return float(field) / scale


def visible(readings: Sequence[DeviceReading], cuda_visible_devices: str | None) -> list[DeviceReading]:
    """The readings of the GPUs a process with this CUDA_VISIBLE_DEVICES sees (None: unset → all; '': none, as for
    CUDA). Entries are indices or UUIDs (a UUID may be given by a unique prefix, as CUDA allows). Indices are
    nvidia-smi's (PCI bus order); CUDA numbers them the same way under CUDA_DEVICE_ORDER=PCI_BUS_ID, and on a
    machine of one GPU model its default order agrees in practice. The result keeps CUDA_VISIBLE_DEVICES' order."""
    if cuda_visible_devices is None:
        return list(readings)
    wanted = [w.strip() for w in cuda_visible_devices.split(",") if w.strip()]
    seen = []
    for w in wanted:
        match = [r for r in readings if (w.isdigit() and r.index == int(w)) or (not w.isdigit()
                                                                                 and r.uuid.startswith(w))]
        seen += [r for r in match if r not in seen]
    return seen


def query_devices(nvidia_smi: str = "nvidia-smi") -> list[DeviceReading]:
    """The visible GPUs now (DeviceQueryError if nvidia-smi fails or answers nonsense)."""
    try:
        done = subprocess.run(query_command(nvidia_smi), capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DeviceQueryError(f"{nvidia_smi} could not be run: {e}") from e
    if done.returncode != 0:
        raise DeviceQueryError(f"{nvidia_smi} exited with {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return visible(parse_query(done.stdout), os.environ.get("CUDA_VISIBLE_DEVICES"))


class DeviceMonitor:
    """Samples the visible GPUs every `interval_s` in a daemon thread; `report()` summarizes the samples since the
    previous report: {"gpu<index>": {"name", "busy_mean", "busy_max" (0–1, None if never reported),
    "memory_used_gib" (the most seen), "memory_total_gib", "samples"}}. Build it with `start()`."""

    def __init__(self, nvidia_smi: str, interval_s: float, say: Callable[..., Any]) -> None:
        self.nvidia_smi = nvidia_smi
        self.interval_s = interval_s
        self.say = say
        self.error: str | None = None
        self._samples: list[list[DeviceReading]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="device-monitor", daemon=True)

    @classmethod
    def start(cls, interval_s: float = 1.0, say: Callable[..., Any] = print,
              nvidia_smi: str | None = None) -> DeviceMonitor | None:
        """A running monitor, or None where there is no nvidia-smi (no NVIDIA GPU: nothing to report) or it fails
        at once (said, and the run goes on without GPU figures)."""
        path = nvidia_smi or shutil.which("nvidia-smi")
        if path is None:
            return None
        try:
            first = query_devices(path)
        except DeviceQueryError as e:
            say(f"[agent] no GPU utilization in the profile: {e}", flush=True)
            return None
        if not first:
            return None
        monitor = cls(path, interval_s, say)
        monitor._samples.append(first)
        monitor._thread.start()
        return monitor

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                readings = query_devices(self.nvidia_smi)
            except DeviceQueryError as e:
                self.error = str(e)
                self.say(f"[agent] GPU sampling stopped: {e}", flush=True)
                return
            with self._lock:
                self._samples.append(readings)

    def report(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            samples, self._samples = self._samples, []
        return summarize(samples)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=QUERY_TIMEOUT_S + self.interval_s)


def device_report(monitor: DeviceMonitor | None) -> dict[str, Any]:
    """The fields a metrics record gets from a monitor: {"devices": report} (nothing without one)."""
    return {"devices": monitor.report()} if monitor is not None else {}


def summarize(samples: Sequence[Sequence[DeviceReading]]) -> dict[str, dict[str, Any]]:
    """Samples (each: every visible GPU at one moment) → per GPU: mean and max busy, the most memory used."""
    by_gpu: dict[int, list[DeviceReading]] = {}
    for readings in samples:
        for r in readings:
            by_gpu.setdefault(r.index, []).append(r)
    out = {}
    for index, rows in sorted(by_gpu.items()):
        busy = [r.busy for r in rows if r.busy is not None]
        out[f"gpu{index}"] = {
            "name": rows[-1].name, "busy_mean": sum(busy) / len(busy) if busy else None,
            "busy_max": max(busy) if busy else None, "memory_used_gib": max(r.memory_used_gib for r in rows),
            "memory_total_gib": rows[-1].memory_total_gib, "samples": len(rows)}
    return out
