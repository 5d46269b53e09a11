"""Pipeline profile of a single-box run or a torchrun cluster, from its metrics files: where each process's time goes,
what each role kind delivers, how full the rings are, how stale the weights are, which role limits training and what
to change. A cluster's other nodes write into `RUN_DIR/node<k>/` (copy them there from other machines): their
processes join the profile as `node<k>/<role>` and count in their role kind (rings and cores: node 0's).

One implementation for `tools/profile_pipeline.py` (offline and live) and the node agent's end-of-run table.
Inputs: `metrics/<process>.jsonl` (cumulative board rows written every `run.log_interval_s`; stage fields are
seconds, see speedy/stages.py), `metrics/agent.jsonl` (ring fill and, where a GPU exists, its utilization per
interval; a cluster node's GPUs come in its `link.jsonl`) and `config.json`.
Window bounds are seconds since the run's first record; shares are fractions of a process's wall time (0–1).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from speedy.config import RolesConfig
from speedy.metrics import read_metrics
from speedy.stages import STAGES, WAIT_STAGES, WORK_STAGES

STARVED = 0.10  # a trainer waiting this share of its time for batches is starved
BUSY = 0.60  # a role kind working this share of its time has little to spare
TARGET_WAIT = 0.05  # the trainer wait that advice aims for
PUSHED_BACK = 0.20  # producers blocked on a full ring this share of their time have output to spare
STAGE_LABELS = {
    "busy_tree": "tree work", "busy_inference": "inference", "busy_env": "env steps", "busy_targets": "targets",
    "busy_train": "training", "busy_replay": "replay work", "transport": "transport", "weights": "weights",
    "wait_input": "waiting for input", "wait_output": "waiting on output", "other": "other",
}
# counter → (throughput name, unit) per role kind
THROUGHPUT = {
    "actor": ("env_steps", "env steps/s"), "reanalyzer": ("items", "batches/s"), "trainer": ("train_steps",
    "train steps/s"), "refresher": ("items", "positions refreshed/s"), "evaluator": ("evals", "evaluations/s"),
}


@dataclass
class ProcessProfile:
    """One process over the window."""

    name: str
    kind: str
    seconds: float  # wall seconds accounted in the window (sum of its stage seconds)
    shares: dict[str, float]  # stage → fraction of wall time; sums to 1
    work: float  # fraction of wall time in work stages (not waiting, not `other`)
    lanes: float  # mean number of lanes working at once while it works (concurrency, e.g. batches in flight)
    cores: float  # CPU seconds per wall second (all its threads)
    rate: float  # its THROUGHPUT counter per second
    staleness: float | None  # mean training steps its weights were behind the trainer (None: holds no weights)


@dataclass
class KindProfile:
    """All processes of one role kind: sums of rates and cores, means of shares."""

    kind: str
    instances: int
    throughput: dict[str, float]  # unit → rate (e.g. "batches/s", "positions reanalyzed/s")
    shares: dict[str, float]
    work: float
    lanes: float
    cores: float
    staleness: float | None


@dataclass
class RingProfile:
    """Fill of one ring (or many-to-one channel) as a fraction of its bytes, sampled by the node agent."""

    name: str
    mean: float
    max: float
    timeline: list[tuple[float, float]]  # (seconds since start, mean fill over the interval)


@dataclass
class Interference:
    """How the trainer's rate changes while another role kind works (CPU it takes from training on a small box)."""

    kind: str
    busy_fraction: float  # fraction of the window's intervals in which it worked at least half the time
    rate_while_busy: float  # trainer steps/s in those intervals
    rate_otherwise: float  # trainer steps/s in the intervals in which it worked less than a fifth of the time


@dataclass
class Diagnosis:
    bottleneck: str  # the role kind that limits training, or "none" when balanced
    stage: str  # its dominant stage
    evidence: str
    advice: str
    predicted: dict[str, float] = field(default_factory=dict)  # e.g. {"reanalyzers": 3, "trainer_wait": 0.05}


LINK = "link"  # a cluster node's traffic metrics (speedy/roles/cluster_agent.py)
LINK_KINDS = ("frames_in", "weights_in", "counters_in", "samples_in", "batches_out",  # a reanalysis node's
              "samples_out", "priorities_in",  # a data node's (it serves frames: pulled by the others, counted there)
              "batches_in", "priorities_out")  # a trainer node's (node 0 writes no link metrics today)


@dataclass
class LinkProfile:
    """One cluster node's link to node 0 over the window: payload bytes by kind per training step, and in all."""

    node: str
    peer: str
    train_steps: int
    bytes_per_step: dict[str, float]  # kind (LINK_KINDS) → bytes per training step ({} if no step in the window)
    bytes_per_s: float


@dataclass
class DeviceProfile:
    """One GPU of one node over the window, from the node's device samples (speedy/device_monitor.py)."""

    node: str  # "node0" (this box, or a cluster's node 0), "node1", ...
    device: str  # "gpu<index>", nvidia-smi's index
    name: str
    busy_mean: float | None  # fraction of the time a kernel ran (0–1); None: the driver did not report it
    busy_max: float | None  # the busiest reporting interval's mean
    memory_used_gib: float  # the most seen
    memory_total_gib: float
    timeline: list[tuple[float, float]]  # (seconds since start, mean busy over the interval)


@dataclass
class PipelineProfile:
    run_dir: str
    window: tuple[float, float]  # seconds since the run's first record
    cores: int  # cores the run could use
    cores_busy: float  # CPU seconds per wall second, all processes
    host_load: float | None  # the host's mean 1-minute load average (runnable threads, this run's and others')
    processes: list[ProcessProfile]
    kinds: dict[str, KindProfile]
    rings: list[RingProfile]
    train_rate_trend: list[tuple[float, float]]  # (seconds since start, trainer steps/s) per tenth of the window
    interference: list[Interference]  # kinds whose work slows training by ≥ 20 %, worst first
    diagnosis: Diagnosis
    links: list[LinkProfile] = field(default_factory=list)  # a cluster's node links (empty on one box)
    devices: list[DeviceProfile] = field(default_factory=list)  # GPUs of every node (empty without one)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- reading -------------------------------------------------------------------------------------------------------


def role_kind(name: str) -> str:
    """'reanalyzer3' → 'reanalyzer'; 'node2/reanalyzer3' (a cluster node's process) → 'reanalyzer'."""
    return re.sub(r"\d+$", "", name.rsplit("/", 1)[-1])


def load_records(run_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every metrics file of the run: source → records (board rows only for role processes). The files of a
    cluster's other nodes (`node<k>/metrics/`) come as 'node<k>/<process>' (their agents' files left out)."""
    records = {}
    run_dir = Path(run_dir)
    node_dirs = sorted(run_dir.glob("node*/metrics"), key=lambda d: int(re.sub(r"\D", "", d.parent.name) or 0))
    for metrics, prefix in [(run_dir / "metrics", ""), *((d, f"{d.parent.name}/") for d in node_dirs)]:
        for path in sorted(metrics.glob("*.jsonl")):
            if prefix and path.stem == "agent":
                continue
            rows = read_metrics(path)
            if path.stem not in ("agent", LINK):
                rows = [r for r in rows if "other" in r]  # the evaluator also writes result records
            records[prefix + path.stem] = rows
    return records


def board_rows(records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Each process's board row over time: from the node agent's snapshots of the whole board (one time base, every
    process, also those that rarely write), else from the processes' own files (`step` = the trainer's steps)."""
    series: dict[str, list[dict[str, Any]]] = {}
    for record in records.get("agent", []):
        for name, row in record.get("roles", {}).items():
            if name != "agent" and "other" in row:
                series.setdefault(name, []).append({"time": record["time"], "step": record["step"], **row})
    if not series:
        return {name: rows for name, rows in records.items() if name != "agent"}
    # other nodes' processes from their own files (node 0's board holds idle rows for them, which drop out)
    return series | {name: rows for name, rows in records.items() if "/" in name and not name.endswith("/" + LINK)}


def link_profiles(records: dict[str, list[dict[str, Any]]], start: float, end: float) -> list[LinkProfile]:
    """Bytes per training step on each cluster node's link to node 0 between unix times `start` and `end`, from
    the node's `link` metrics (cumulative payload bytes by kind and node 0's training steps)."""
    links = []
    for name, rows in sorted(records.items()):
        if not name.endswith("/" + LINK) or (pair := _pair(rows, start, end)) is None:
            continue
        first, last = pair
        steps = last["step"] - first["step"]
        kinds = {k: float(last[k]) - float(first.get(k, 0)) for k in last if k in LINK_KINDS}
        wall = max(last["time"] - first["time"], 1e-9)
        links.append(LinkProfile(
            node=name.split("/", 1)[0], peer=str(last.get("peer", "node0")), train_steps=steps,
            bytes_per_step={k: v / steps for k, v in kinds.items()} if steps > 0 else {},
            bytes_per_s=sum(kinds.values()) / wall))
    return links


def run_start(records: dict[str, list[dict[str, Any]]]) -> float:
    """Unix time of the run's first record."""
    return min((rows[0]["time"] for rows in records.values() if rows), default=0.0)


def training_span(records: dict[str, list[dict[str, Any]]]) -> tuple[float | None, float | None]:
    """Unix times of the trainer's first reading after a training step (the one before if that is already its
    last step) and of its first reading at the last step it reached (None, None: it has not trained yet)."""
    rows = records.get("trainer", [])
    first = next((i for i, r in enumerate(rows) if r["step"] >= 1), None)
    if first is None:
        return None, None
    last = next(r for r in rows if r["step"] == rows[-1]["step"])
    start = rows[first] if rows[first] is not last else rows[max(0, first - 1)]  # all steps in one interval
    return start["time"], last["time"] if last is not start else None


def _pair(rows: Sequence[dict[str, Any]], start: float, end: float) -> tuple[dict, dict] | None:
    """The readings that bound the window: the last at or before `start` (else the first after it) and the last at
    or before `end` (unix s)."""
    before = [r for r in rows if r["time"] <= start]
    inside = [r for r in rows if start < r["time"] <= end]
    first = before[-1] if before else (inside[0] if inside else None)
    last = inside[-1] if inside else None
    if first is None or last is None or last is first:
        return None
    return first, last


# --- per process ---------------------------------------------------------------------------------------------------


def process_profile(name: str, rows: Sequence[dict[str, Any]], start: float, end: float) -> ProcessProfile | None:
    """Shares, concurrency, CPU and throughput of one process between unix times `start` and `end`."""
    pair = _pair(rows, start, end)
    if pair is None:
        return None
    first, last = pair
    span = [r for r in rows if first["time"] <= r["time"] <= last["time"]]

    def delta(key: str) -> float:  # from the readings that carry `key` (a role's extras skip its start/stop rows)
        have = [r for r in span if key in r]
        return float(have[-1][key]) - float(have[0][key]) if len(have) > 1 else 0.0

    stages = {s: max(0.0, delta(s)) for s in STAGES}
    seconds = sum(stages.values())
    if seconds <= 0:
        return None
    shares = {s: v / seconds for s, v in stages.items()}
    work_s = sum(stages[s] for s in WORK_STAGES)
    kind = role_kind(name)
    wall = max(last["time"] - first["time"], 1e-9)
    return ProcessProfile(
        name=name, kind=kind, seconds=seconds, shares=shares, work=work_s / seconds,
        lanes=delta("busy_lanes") / work_s if work_s > 0 else 0.0, cores=max(0.0, delta("cpu")) / wall,
        rate=delta(THROUGHPUT[kind][0]) / wall if kind in THROUGHPUT else 0.0,
        staleness=_staleness(span, kind))


def _staleness(rows: Sequence[dict[str, Any]], kind: str) -> float | None:
    """Mean of (trainer's steps − this process's weights version) over readings once it pulled trained weights."""
    if kind not in ("actor", "reanalyzer", "refresher"):
        return None
    behind = [r["step"] - r["weights_version"] for r in rows if r.get("weights_version", 0) > 0]
    return sum(behind) / len(behind) if behind else None


def kind_profile(kind: str, processes: Sequence[ProcessProfile], batch_size: int) -> KindProfile:
    """Sum rates and cores over the instances of `kind`; average their shares."""
    n = len(processes)
    rate = sum(p.rate for p in processes)
    throughput = {THROUGHPUT[kind][1]: rate} if kind in THROUGHPUT else {}
    if kind == "reanalyzer":
        throughput["positions reanalyzed/s"] = rate * batch_size
    stale = [p.staleness for p in processes if p.staleness is not None]
    return KindProfile(
        kind=kind, instances=n, throughput=throughput, shares={s: sum(p.shares[s] for p in processes) / n
                                                               for s in STAGES},
        work=sum(p.work for p in processes) / n, lanes=sum(p.lanes for p in processes) / n,
        cores=sum(p.cores for p in processes), staleness=sum(stale) / len(stale) if stale else None)


# --- rings and trends ----------------------------------------------------------------------------------------------


class RingLike(Protocol):
    name: str
    capacity: int

    def used_bytes(self) -> int: ...


class RingMonitor:
    """The node agent's sampler of ring fill: call `sample()` often (every loop turn), `report()` per interval →
    {channel: {"mean": fill, "max": fill}} with fill in 0–1 of the channel's bytes (muxes summed over producers)."""

    def __init__(self, rings: Iterable[RingLike], run_id: str) -> None:
        self.channels: dict[str, list[RingLike]] = {}
        for ring in rings:
            channel = ring.name.split(f"{run_id}_", 1)[-1].split(".")[0]
            self.channels.setdefault(channel, []).append(ring)
        self._sums = {c: 0.0 for c in self.channels}
        self._max = {c: 0.0 for c in self.channels}
        self._n = 0

    def sample(self) -> None:
        self._n += 1
        for channel, rings in self.channels.items():
            fill = sum(r.used_bytes() for r in rings) / sum(r.capacity for r in rings)
            self._sums[channel] += fill
            self._max[channel] = max(self._max[channel], fill)

    def report(self) -> dict[str, dict[str, float]]:
        n = max(self._n, 1)
        out = {c: {"mean": self._sums[c] / n, "max": self._max[c]} for c in self.channels}
        self._sums = dict.fromkeys(self.channels, 0.0)
        self._max = dict.fromkeys(self.channels, 0.0)
        self._n = 0
        return out


def ring_profiles(agent_rows: Sequence[dict[str, Any]], t0: float, start: float, end: float) -> list[RingProfile]:
    """Fill timeline of every channel from the agent's interval reports inside [start, end] (unix s)."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for row in agent_rows:
        if start <= row["time"] <= end:
            for name, fill in row.get("rings", {}).items():
                series.setdefault(name, []).append((row["time"] - t0, fill["mean"], fill["max"]))
    return [RingProfile(name, sum(m for _, m, _ in pts) / len(pts), max(x for _, _, x in pts),
                        [(t, m) for t, m, _ in pts]) for name, pts in sorted(series.items())]


def device_profiles(records: dict[str, list[dict[str, Any]]], t0: float, start: float,
                    end: float) -> list[DeviceProfile]:
    """Every node's GPUs inside [start, end] (unix s): node 0's from its agent records, another node's from its link
    records (both carry "devices": {gpu: interval summary}, see speedy/device_monitor.py)."""
    sources = [("node0", records.get("agent", []))]
    sources += [(name.split("/", 1)[0], rows) for name, rows in sorted(records.items())
                if name.endswith("/" + LINK)]
    out = []
    for node, rows in sources:
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if start < row["time"] <= end:  # a row sums up the interval that ends at its time
                for gpu, summary in row.get("devices", {}).items():
                    series.setdefault(gpu, []).append({"t": row["time"] - t0, **summary})
        for gpu, points in sorted(series.items(), key=lambda kv: int(re.sub(r"\D", "", kv[0]) or 0)):
            weighted = [(p["busy_mean"], p["samples"]) for p in points if p.get("busy_mean") is not None]
            samples = sum(n for _, n in weighted)
            out.append(DeviceProfile(
                node=node, device=gpu, name=points[-1]["name"],
                busy_mean=sum(b * n for b, n in weighted) / samples if samples else None,
                busy_max=max((b for b, _ in weighted), default=None),
                memory_used_gib=max(p["memory_used_gib"] for p in points),
                memory_total_gib=points[-1]["memory_total_gib"],
                timeline=[(p["t"], p["busy_mean"]) for p in points if p.get("busy_mean") is not None]))
    return out


def _bottleneck_gpu(diagnosis: Diagnosis, config: dict[str, Any],
                    devices: Sequence[DeviceProfile]) -> DeviceProfile | None:
    """For a bottleneck in training or inference: the node-0 GPU that work runs on (None: a CPU run, or no
    utilization figures)."""
    if diagnosis.stage not in ("busy_train", "busy_inference"):
        return None
    wanted = str(config.get("train", {}).get("device", "auto"))
    if wanted == "cpu":
        return None
    local = [d for d in devices if d.node == "node0" and d.busy_mean is not None]
    if wanted.startswith("cuda:"):
        position = int(wanted.split(":", 1)[1])  # the CUDA position among the visible GPUs, which `local` lists
        local = local[position:position + 1]
    return local[0] if local else None


def _device_note(gpu: DeviceProfile | None) -> str:
    """How busy the bottleneck's GPU was, and what it means (empty without one)."""
    if gpu is None or gpu.busy_mean is None:
        return ""
    if gpu.busy_mean >= BUSY:
        return f"; {gpu.device} ({gpu.name}) runs kernels {_pct(gpu.busy_mean)} of the time: the GPU is the limit"
    return (f"; {gpu.device} ({gpu.name}) runs kernels only {_pct(gpu.busy_mean)} of the time: the work is bound by "
            f"the CPU side (Python, kernel launches, copies), not by the GPU")


def _gpu_bound_advice(gpu: DeviceProfile, kinds: dict[str, KindProfile], rings: Sequence[RingProfile]) -> str:
    """Advice for a trainer whose GPU is saturated: CPU threads cannot help; the inference processes that share the
    GPU (named with their counts) and the batches ring's fill say what to take off it."""
    sharing = {k: v.instances for k, v in kinds.items() if k in ("actor", "reanalyzer", "refresher", "evaluator")}
    others = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(sharing.items()))
    batches = next((r for r in rings if r.name == "batches"), None)
    full = (f"; the batches ring is {_pct(batches.mean)} full, so fewer reanalyzers would still keep the trainer fed"
            if batches is not None and batches.mean >= 0.5 else "")
    return (f"not roles.trainer_threads: {gpu.device} is busy {_pct(gpu.busy_mean or 0.0)} of the time, shared by "
            f"the trainer and {sum(sharing.values())} inference processes ({others}){full}. Give the trainer more "
            f"of the GPU (fewer inference processes on it, train.mixed_precision) or a GPU of its own")


def _interval_work(by_time: dict[float, dict[str, Any]], lo: float, hi: float) -> float | None:
    """Work share of one process between its readings at unix times lo and hi (None: no readings there)."""
    a, b = by_time.get(lo), by_time.get(hi)
    if a is None or b is None:
        return None
    total = sum(b.get(s, 0) - a.get(s, 0) for s in STAGES)
    return sum(b.get(s, 0) - a.get(s, 0) for s in WORK_STAGES) / total if total > 0 else None


def interference(rows: dict[str, list[dict[str, Any]]], start: float, end: float) -> list[Interference]:
    """Per role kind: the trainer's rate in the intervals between board snapshots where the kind mostly works,
    against those where it mostly does not; kinds that cut it by ≥ 20 %, worst first."""
    trainer = [r for r in rows.get("trainer", []) if start <= r["time"] <= end]
    by_time = {name: {r["time"]: r for r in series} for name, series in rows.items()}
    found = []
    for kind in sorted({role_kind(n) for n in rows} - {"trainer"}):
        busy, idle = [], []
        for a, b in zip(trainer[:-1], trainer[1:], strict=True):
            shares = [w for name, series in by_time.items() if role_kind(name) == kind
                      if (w := _interval_work(series, a["time"], b["time"])) is not None]
            if not shares:
                continue
            rate = (b["train_steps"] - a["train_steps"]) / max(b["time"] - a["time"], 1e-9)
            work = sum(shares) / len(shares)
            (busy if work >= 0.5 else idle if work < 0.2 else []).append(rate)
        if busy and idle and sum(busy) / len(busy) < 0.8 * sum(idle) / len(idle):
            found.append(Interference(kind, len(busy) / (len(busy) + len(idle)), sum(busy) / len(busy),
                                      sum(idle) / len(idle)))
    return sorted(found, key=lambda i: i.rate_while_busy / max(i.rate_otherwise, 1e-9))


def rate_trend(rows: Sequence[dict[str, Any]], key: str, t0: float, start: float, end: float,
               bins: int = 10) -> list[tuple[float, float]]:
    """`key` per second in each of `bins` equal parts of [start, end] (unix s); times relative to t0."""
    edges = [start + (end - start) * i / bins for i in range(bins + 1)]
    trend = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        pair = _pair(rows, lo, hi)
        if pair is not None:
            first, last = pair
            dt = max(last["time"] - first["time"], 1e-9)
            trend.append(((lo + hi) / 2 - t0, (last.get(key, 0) - first.get(key, 0)) / dt))
    return trend


# --- the whole pipeline --------------------------------------------------------------------------------------------


def analyze(run_dir: str | Path, window: tuple[float | None, float | None] = (None, None),
            records: dict[str, list[dict[str, Any]]] | None = None) -> PipelineProfile:
    """Profile the run in `run_dir` over `window` (seconds since its first record). By default (None) it spans the
    training steps: from the first to the last step reached, so start-up, the random-play warm-up and the final
    evaluation do not hide the steady state (a running run: to its newest reading)."""
    records = load_records(run_dir) if records is None else records
    t0 = run_start(records)
    last_time = max((rows[-1]["time"] for rows in records.values() if rows), default=t0)
    rows = board_rows(records)
    first_step, last_step = training_span(rows)
    start = t0 + window[0] if window[0] is not None else (first_step or t0)
    end = t0 + window[1] if window[1] is not None else (last_step or last_time)
    config = _config(run_dir, records.get("agent", []))
    processes = [p for name, series in sorted(rows.items())
                 if (p := process_profile(name, series, start, end)) is not None]
    by_kind: dict[str, list[ProcessProfile]] = {}
    for p in processes:
        by_kind.setdefault(p.kind, []).append(p)
    batch = int(config.get("train", {}).get("batch_size", 1))
    kinds = {k: kind_profile(k, ps, batch) for k, ps in by_kind.items()}
    agent = records.get("agent", [])
    cores = next((int(r["cores"]) for r in reversed(agent) if "cores" in r), os.cpu_count() or 1)
    loads = [r["load"] for r in agent if "load" in r and start <= r["time"] <= end]
    busy = sum(p.cores for p in processes)
    rings = ring_profiles(agent, t0, start, end)
    diagnosis = diagnose(kinds, cores, busy, config, rings)
    note = ""  # a handoff that waits is not slowed by the CPU it lacks
    if diagnosis.stage not in WAIT_STAGES:
        note = _contention_note([p for p in processes if p.kind == diagnosis.bottleneck], cores, loads)
    diagnosis.evidence += note
    devices = device_profiles(records, t0, start, end)
    gpu = _bottleneck_gpu(diagnosis, config, devices)
    diagnosis.evidence += _device_note(gpu)
    found = interference(rows, start, end)
    if diagnosis.bottleneck == "trainer" and gpu is not None and (gpu.busy_mean or 0.0) >= BUSY:
        diagnosis.advice = _gpu_bound_advice(gpu, kinds, rings)
    elif diagnosis.bottleneck == "trainer" and found:
        diagnosis.advice = _interference_advice(found[0], diagnosis)
    elif diagnosis.bottleneck == "trainer":
        plan = next((r["plan"] for r in agent if "plan" in r), {})
        threads = plan.get("threads", {}).get("trainer")
        diagnosis.advice = _trainer_advice(kinds["trainer"], bool(note), threads, cores, busy) or diagnosis.advice
    trend = rate_trend(rows.get("trainer", []), "train_steps", t0, start, end)
    return PipelineProfile(
        run_dir=str(run_dir), window=(start - t0, end - t0), cores=cores, cores_busy=busy,
        host_load=sum(loads) / len(loads) if loads else None, processes=processes, kinds=kinds,
        rings=rings, train_rate_trend=trend,
        interference=found, diagnosis=diagnosis, links=link_profiles(records, start, end), devices=devices)


def _contention_note(bottleneck: Sequence[ProcessProfile], cores: int, loads: Sequence[float]) -> str:
    """Said when the limiting processes got much less CPU than their working time (one thread each) asks for, on a
    host whose load exceeds its cores: other processes take the CPU they wait for."""
    work = sum(p.work for p in bottleneck)
    got = sum(p.cores for p in bottleneck)
    load = sum(loads) / len(loads) if loads else 0.0
    if not bottleneck or work <= 0 or got >= 0.6 * work or load <= cores:
        return ""
    return (f" — but while working {_pct(work / len(bottleneck))} it got only {got:.2f} cores: the host is "
            f"oversubscribed (load {load:.1f} on {cores} cores), so its work runs {work / max(got, 1e-9):.1f}× "
            f"slower than on an idle host")


def _trainer_advice(trainer: KindProfile, oversubscribed: bool, threads: int | None, cores: int,
                    busy: float) -> str:
    """Advice for a trainer that paces the run: on an oversubscribed host, free cores (more threads would stall);
    with idle cores, more trainer threads (predicted: the rate scaled by the cores it could use)."""
    if oversubscribed:
        return ("the trainer waits for the CPU, not for data: run where cores are free; do not raise "
                "roles.trainer_threads on this host, its threads would wait for each other without a free core")
    idle = cores - busy
    if threads is None or threads >= cores or idle < 0.5:
        return ""
    more = min(cores, threads + int(idle + 0.5))
    rate = _rate(trainer)
    return (f"roles.trainer_threads={more} (now {threads}): the run leaves {idle:.1f} of {cores} cores idle → up "
            f"to ≈ {rate * more / threads:.1f} train steps/s if a step scales with threads (it is {rate:.1f})")


def _interference_advice(worst: Interference, diagnosis: Diagnosis) -> str:
    """Advice for a trainer that shares its cores with another role: halve that role's work; predicted overall
    rate = the rate with it working for half as much of the time."""
    f = worst.busy_fraction
    now = f * worst.rate_while_busy + (1 - f) * worst.rate_otherwise
    halved = f / 2 * worst.rate_while_busy + (1 - f / 2) * worst.rate_otherwise
    change = {"evaluator": "evaluate half as often (eval.interval ×2) or with half the episodes (eval.episodes)",
              "actor": "collect with fewer actor envs or simulations",
              }.get(worst.kind, f"give the {worst.kind} less work")
    diagnosis.predicted["train_steps_per_s"] = halved
    return (f"the {worst.kind} takes the trainer's CPU (training {worst.rate_while_busy:.1f} steps/s while it works, "
            f"{worst.rate_otherwise:.1f} otherwise): {change} → ≈ {halved:.1f} steps/s instead of {now:.1f}")


def _config(run_dir: str | Path, agent_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's resolved configuration: from the node agent's start record, else config.json."""
    for row in agent_rows:
        if "config" in row:
            return row["config"]
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


# --- the diagnosis -------------------------------------------------------------------------------------------------


def _top_work(kind: KindProfile) -> str:
    return max(WORK_STAGES, key=lambda s: kind.shares[s])


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _busy_text(kind: KindProfile, plural: str) -> str:
    """'reanalyzers 97 % busy, 73 % of it tree work'."""
    top = _top_work(kind)
    part = kind.shares[top] / kind.work if kind.work > 0 else 0.0
    return f"{plural} {_pct(kind.work)} busy, {_pct(part)} of it {STAGE_LABELS[top]}"


def _rate(kind: KindProfile) -> float:
    return next(iter(kind.throughput.values()), 0.0)


def _capacity(kind: KindProfile) -> float:
    """Throughput of one instance if it never waited (its rate / its work share)."""
    return _rate(kind) / kind.instances / max(kind.work, 0.05)


def _cpu_note(extra_cores: float, cores: int, busy: float) -> str:
    free = cores - busy
    if extra_cores <= free + 0.1:
        return ""
    return (f" (needs ≈ {extra_cores:.1f} more cores; {cores} cores are {_pct(min(1.0, busy / cores))} busy, so "
            f"on this machine expect less unless others give up cores)")


def _reanalyzer_advice(trainer: KindProfile, reanalyzer: KindProfile, cores: int, busy: float) -> tuple[str, dict]:
    """Reanalyzers needed so the trainer waits ≈ TARGET_WAIT, from the trainer's demand and one reanalyzer's
    capacity (batches/s when never waiting)."""
    demand = _rate(trainer) / max(1 - trainer.shares["wait_input"], 0.05)  # train steps/s if never starved
    per = _capacity(reanalyzer)
    n0 = reanalyzer.instances
    n = max(n0 + 1, math.ceil(demand * (1 - TARGET_WAIT) / max(per, 1e-9)))
    n = min(n, n0 + 32)
    wait = max(0.0, 1 - n * per / demand)
    cpu_per_batch = reanalyzer.cores / max(_rate(reanalyzer), 1e-9)
    note = _cpu_note((n - n0) * per * cpu_per_batch, cores, busy)
    advice = (f"+{n - n0} reanalyzer{'s' if n - n0 > 1 else ''} (roles.reanalyzers={n}) → trainer wait ≈ "
              f"{_pct(wait)}, train ≈ {min(demand, n * per):.1f} steps/s{note}")
    return advice, {"reanalyzers": n, "trainer_wait": wait, "train_steps_per_s": min(demand, n * per)}


def _starved(kinds: dict[str, KindProfile], cores: int, busy: float) -> Diagnosis | None:
    trainer, reanalyzer = kinds["trainer"], kinds.get("reanalyzer")
    wait = trainer.shares["wait_input"]
    if wait < STARVED or reanalyzer is None:
        return None
    head = f"trainer waits {_pct(wait)} for batches; "
    if reanalyzer.work >= BUSY:
        advice, predicted = _reanalyzer_advice(trainer, reanalyzer, cores, busy)
        return Diagnosis("reanalyzer", _top_work(reanalyzer), head + _busy_text(reanalyzer, "reanalyzers"),
                         advice, predicted)
    replay = kinds.get("replay")
    if reanalyzer.shares["wait_input"] >= 0.3 and replay is not None:
        text = head + f"reanalyzers wait {_pct(reanalyzer.shares['wait_input'])} for samples; "
        if replay.work >= BUSY:
            return Diagnosis("replay", _top_work(replay), text + _busy_text(replay, "replay"),
                             "fewer, larger batches per reanalyzer or a lighter replay (it samples for every "
                             "reanalyzer in one process)")
        return Diagnosis("replay", "wait_input", text + f"replay {_pct(replay.work)} busy, "
                         f"waiting {_pct(replay.shares['wait_input'])} for data", "replay has too little data to "
                         "sample yet (replay.start_env_steps) or its sample rings are too small")
    return None


def ring_depth(messages: int, batches_in_flight: int) -> int:
    """Messages a reanalyzer's ring holds (from replay: `roles.sample_ring_messages`; to the trainer:
    `roles.batch_ring_messages`), or (0 = auto) one more than it works on at once, so it can finish its batches in
    flight while the trainer takes the one before."""
    return messages or batches_in_flight + 1


def _small_ring(kinds: dict[str, KindProfile], config: dict[str, Any],
                rings: Sequence[RingProfile]) -> Diagnosis | None:
    """A starved trainer whose reanalyzers are pushed back by a full batches ring much of their time: they make
    batches faster than the trainer takes them but cannot bank enough to cover their pauses (or the trainer's
    bursts), so the trainer starves through each one. Suggested depth: the trainer's wait taken to shrink in
    proportion to the ring's depth; predicted: what the reanalyzers' rate when never pushed back leaves of the
    trainer's demand."""
    trainer, reanalyzer = kinds["trainer"], kinds.get("reanalyzer")
    if reanalyzer is None:
        return None
    wait, pushed = trainer.shares["wait_input"], reanalyzer.shares["wait_output"]
    if wait < STARVED or pushed < PUSHED_BACK:
        return None
    roles = asdict(RolesConfig()) | config.get("roles", {})
    depth = ring_depth(int(roles["batch_ring_messages"]), int(roles["batches_in_flight"]))
    deeper = min(depth + 64, max(2 * depth, math.ceil(depth * wait / TARGET_WAIT)))
    demand = _rate(trainer) / max(1 - wait, 0.05)  # train steps/s if never starved
    supply = _capacity(reanalyzer) * reanalyzer.instances  # batches/s if never pushed back
    rate = min(demand, supply)
    after = max(0.0, 1 - supply / max(demand, 1e-9))
    fill = next((f", {_pct(r.mean)} full on average" for r in rings if r.name == "batches"), "")
    evidence = (f"trainer waits {_pct(wait)} for batches while reanalyzers wait {_pct(pushed)} on output: the "
                f"batches ring holds {depth} batch{'es' if depth > 1 else ''} per reanalyzer{fill}")
    advice = (f"a deeper batches ring: roles.batch_ring_messages={deeper} (now {depth}); reanalyzers deliver up to "
              f"{supply:.1f} batches/s when not pushed back, the trainer asks {demand:.1f} → trainer wait ≈ "
              f"{_pct(after)}, train ≈ {rate:.1f} steps/s")
    return Diagnosis("reanalyzer", "wait_output", evidence, advice,
                     {"batch_ring_messages": deeper, "trainer_wait": after, "train_steps_per_s": rate})


def _slow_handoff(kinds: dict[str, KindProfile]) -> Diagnosis | None:
    """A starved trainer whose reanalyzers are neither busy nor starved (checked after the other rules)."""
    trainer, reanalyzer = kinds["trainer"], kinds.get("reanalyzer")
    if reanalyzer is None or trainer.shares["wait_input"] < STARVED:
        return None
    return Diagnosis("reanalyzer", "wait_output", f"trainer waits {_pct(trainer.shares['wait_input'])} for batches; "
                     f"reanalyzers {_pct(reanalyzer.work)} busy, waiting {_pct(reanalyzer.shares['wait_output'])} on "
                     "output", "batches are slow to reach the trainer: a deeper batches ring "
                     "(roles.batch_ring_messages) or more batches in flight (roles.batches_in_flight)")


def _actor_bound(kinds: dict[str, KindProfile], ratio: float, cores: int, busy: float) -> Diagnosis | None:
    actor, trainer = kinds.get("actor"), kinds["trainer"]
    if actor is None or ratio <= 0 or actor.work < BUSY:
        return None
    target = ratio * _rate(trainer)  # env steps/s the data/update bound allows
    if _rate(actor) >= 0.9 * target:
        return None
    per = _capacity(actor)
    n = min(actor.instances + 32, max(actor.instances + 1, math.ceil(target / max(per, 1e-9))))
    cpu_per_step = actor.cores / max(_rate(actor), 1e-9)
    note = _cpu_note((n - actor.instances) * per * cpu_per_step, cores, busy)
    evidence = (f"env steps per train step {_rate(actor) / max(_rate(trainer), 1e-9):.2f} (bound {ratio:g}); "
                + _busy_text(actor, "actors"))
    advice = (f"+{n - actor.instances} actor{'s' if n - actor.instances > 1 else ''} (roles.actors={n}) → "
              f"≈ {min(target, n * per):.0f} env steps/s, {min(target, n * per) / max(_rate(trainer), 1e-9):.2f} "
              f"per train step{note}")
    return Diagnosis("actor", _top_work(actor), evidence, advice,
                     {"actors": n, "env_steps_per_s": min(target, n * per)})


def _trainer_bound(kinds: dict[str, KindProfile]) -> Diagnosis | None:
    trainer, reanalyzer = kinds["trainer"], kinds.get("reanalyzer")
    if trainer.work < BUSY:
        return None
    evidence = _busy_text(trainer, "trainer")
    if reanalyzer is not None and reanalyzer.shares["wait_output"] >= 0.2:
        demand = _rate(trainer) / max(1 - trainer.shares["wait_input"], 0.05)
        n = max(1, math.ceil(demand / (1 - TARGET_WAIT) / max(_capacity(reanalyzer), 1e-9)))
        evidence += f"; reanalyzers wait {_pct(reanalyzer.shares['wait_output'])} on output (batches queue up)"
        if n < reanalyzer.instances:
            freed = reanalyzer.cores * (reanalyzer.instances - n) / reanalyzer.instances
            return Diagnosis("trainer", _top_work(trainer), evidence,
                             f"−{reanalyzer.instances - n} reanalyzer(s) (roles.reanalyzers={n}) keeps the trainer "
                             f"fed and frees ≈ {freed:.1f} cores for it; or a faster trainer (GPU, more threads)",
                             {"reanalyzers": n})
    return Diagnosis("trainer", _top_work(trainer), evidence,
                     "training is the limit: a GPU, more trainer threads, or a smaller batch")


def diagnose(kinds: dict[str, KindProfile], cores: int, busy: float, config: dict[str, Any],
             rings: Sequence[RingProfile] = ()) -> Diagnosis:
    """Name the role kind that limits training (with its evidence) and the change that helps, or 'balanced'.
    `rings`: the channels' fill, quoted as evidence."""
    if "trainer" not in kinds:
        return Diagnosis("none", "", "no trainer readings in the window", "profile a longer window")
    ratio = float(config.get("train", {}).get("env_steps_per_train_step", 0.0))
    found = (_small_ring(kinds, config, rings) or _starved(kinds, cores, busy)
             or _actor_bound(kinds, ratio, cores, busy) or _trainer_bound(kinds) or _slow_handoff(kinds))
    if found is not None:
        return found
    parts = [f"trainer {_pct(kinds['trainer'].work)} busy, waits {_pct(kinds['trainer'].shares['wait_input'])}"]
    parts += [f"{k}s {_pct(v.work)} busy" for k, v in kinds.items() if k in ("actor", "reanalyzer")]
    return Diagnosis("none", "", "; ".join(parts), "balanced: no role starves the trainer")


# --- text ----------------------------------------------------------------------------------------------------------

SHORT = {"busy_tree": "tree", "busy_inference": "infer", "busy_env": "env", "busy_targets": "targets",
         "busy_train": "train", "busy_replay": "replay", "transport": "transp", "weights": "weights",
         "wait_input": "w_in", "wait_output": "w_out", "other": "other"}


def stage_table(processes: Sequence[ProcessProfile] | Sequence[KindProfile], label: str = "process") -> str:
    """Per row: stage shares of wall time (%, they sum to 100), concurrency (lanes) and CPU cores used."""
    head = f"{label:<13}" + "".join(f"{SHORT[s]:>8}" for s in STAGES) + f"{'lanes':>7}{'cores':>7}"
    rows = [head]
    for p in processes:
        name = p.name if isinstance(p, ProcessProfile) else f"{p.kind} ×{p.instances}"
        rows.append(f"{name:<13}" + "".join(f"{100 * p.shares[s]:7.0f}%" for s in STAGES)
                    + f"{p.lanes:7.2f}{p.cores:7.2f}")
    return "\n".join(rows)


def format_report(profile: PipelineProfile, per_process: bool = False) -> str:
    """The human-readable profile: kinds (or processes), throughput, rings, trend, bottleneck and advice."""
    lo, hi = profile.window
    load = f", host load {profile.host_load:.1f}" if profile.host_load is not None else ""
    lines = [f"pipeline profile of {profile.run_dir}: {lo:.0f}–{hi:.0f} s, {profile.cores} cores, "
             f"{profile.cores_busy:.2f} busy in this run{load}", ""]
    kinds = sorted(profile.kinds.values(), key=lambda k: k.kind)
    lines.append(stage_table(profile.processes if per_process else kinds, "process" if per_process else "kind"))
    lines.append("")
    for k in kinds:
        rates = ", ".join(f"{v:.1f} {unit}" for unit, v in k.throughput.items())
        stale = f", weights {k.staleness:.1f} steps behind" if k.staleness is not None else ""
        if rates or stale:
            lines.append(f"{k.kind:<11} ×{k.instances}: {rates}{stale}")
    if profile.rings:
        lines.append("rings (fill mean/max): " + ", ".join(f"{r.name} {_pct(r.mean)}/{_pct(r.max)}"
                                                            for r in profile.rings))
    if profile.train_rate_trend:
        lines.append("train steps/s over the window: " + " ".join(f"{r:.1f}" for _, r in profile.train_rate_trend))
    for link in profile.links:
        parts = ", ".join(f"{k} {v / 1024:.1f}" for k, v in link.bytes_per_step.items())
        total = sum(link.bytes_per_step.values()) / 1024
        lines.append(f"link {link.node}–{link.peer}: {total:.1f} KiB per training step ({parts}), "
                     f"{link.bytes_per_s / 2**20:.2f} MiB/s")
    for d in profile.devices:
        where = f"{d.node}/" if any(x.node != "node0" for x in profile.devices) else ""
        busy = (f"kernels running {_pct(d.busy_mean)} of the time (busiest interval {_pct(d.busy_max)})"
                if d.busy_mean is not None and d.busy_max is not None else "utilization not reported")
        lines.append(f"{where}{d.device} ({d.name}): {busy}, memory up to {d.memory_used_gib:.1f} of "
                     f"{d.memory_total_gib:.1f} GiB")
    for i in profile.interference:
        lines.append(f"training runs at {i.rate_while_busy:.1f} steps/s while the {i.kind} works "
                     f"({_pct(i.busy_fraction)} of the time), {i.rate_otherwise:.1f} otherwise")
    d = profile.diagnosis
    lines.append("")
    lines.append(f"bottleneck: {d.bottleneck}" + (f" ({STAGE_LABELS.get(d.stage, d.stage)})" if d.stage else "")
                 + f": {d.evidence}")
    lines.append(f"advice: {d.advice}")
    return "\n".join(lines)
