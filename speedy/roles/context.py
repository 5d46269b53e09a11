"""What every role process starts from: its `RoleSpec` (picklable, sent by the node agent) and the `RoleContext`
built from it inside the process (config, task spec, device, board row, metrics, weight pulls)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from speedy.cluster.ddp import trainer_device
from speedy.components import block_layout, build_model, resolve_device, task_spec
from speedy.config import Config, config_from_dict
from speedy.metrics import MetricsWriter
from speedy.model import EfficientZeroNet
from speedy.replay.frames import FrameSource
from speedy.roles.board import Board, RoleRow
from speedy.search import ModelSearch
from speedy.shm.frames import FrameStore
from speedy.shm.weights import WeightSlot

T = TypeVar("T")
LATEST_WEIGHTS = "weights"
TARGET_WEIGHTS = "target"
ACTING_WEIGHTS = "acting"  # the Polyak average self-play, evaluation and refresh act with (train.acting_ema_decay > 0)
EVAL_WEIGHTS = "eval"  # the Polyak average only the evaluator plays (eval.ema_decay > 0)


def acting_slot(config: Config) -> str:
    """The weight slot the acting roles pull: the average's own slot, or the latest weights when it is off."""
    return ACTING_WEIGHTS if config.train.acting_ema_decay > 0 else LATEST_WEIGHTS


def eval_slot(config: Config) -> str:
    """The weight slot the evaluator pulls: its own average's (eval.ema_decay), else the acting roles' slot."""
    return EVAL_WEIGHTS if config.eval.ema_decay > 0 else acting_slot(config)
# longest wait for a message's frames to reach this node's replicas (a cluster node) before dropping the message
FRAME_WAIT_S = 10.0


@dataclass(frozen=True)
class RolePlan:
    """How many processes of each kind a node runs."""

    actors: int
    reanalyzers: int
    refreshers: int
    threads: dict[str, int] = field(default_factory=dict)  # torch threads per role kind
    trainers: int = 1  # DDP trainers: "trainer" (rank 0), "trainer1", …
    ddp_port: int = 0  # TCP port on 127.0.0.1 of the trainers' process-group store (trainers > 1)

    def row_names(self) -> list[str]:
        names = ["agent", "replay", "trainer", "evaluator"]
        names += [f"trainer{t}" for t in range(1, self.trainers)]
        names += [f"actor{i}" for i in range(self.actors)]
        names += [f"reanalyzer{i}" for i in range(self.reanalyzers)]
        names += [f"refresher{i}" for i in range(self.refreshers)]
        return names


@dataclass(frozen=True)
class RoleSpec:
    role: str  # "actor" | "replay" | "reanalyzer" | "refresher" | "trainer" | "evaluator"
    index: int
    run_id: str
    run_dir: str
    config: dict[str, Any]
    plan: RolePlan
    threads: int

    @property
    def name(self) -> str:
        return role_name(self.role, self.index)


async def cancel_until_done(task: asyncio.Future, retry_s: float = 0.1) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every `retry_s` seconds: a cancel that lands
    while an awaited result is being delivered can be swallowed (asyncio.wait_for on Python 3.11, or any code that
    catches CancelledError), and a task that then blocks again (a full queue) would otherwise be waited on forever.
    Its exception, if any, is not raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def role_name(role: str, index: int) -> str:
    """Process and board-row name: 'replay', 'evaluator', 'trainer' (DDP rank 0), 'trainer1', 'actor0', …"""
    if role in ("replay", "evaluator") or (role == "trainer" and index == 0):
        return role
    return f"{role}{index}"


def batch_mux(trainer: int) -> str:
    """Name of the many-to-one channel reanalyzers → DDP trainer `trainer` ('batches' for trainer 0)."""
    return "batches" if trainer == 0 else f"batches{trainer}"


def inference_memory_fraction(plan: RolePlan, share: float) -> float:
    """Part of the GPU's memory one inference process (actor, reanalyzer, refresher, evaluator) may hold: the
    processes split `share`, the trainer keeps the rest."""
    return share / (plan.actors + plan.reanalyzers + plan.refreshers + 1)


def cap_inference_memory(spec: RoleSpec, share: float, device: torch.device) -> None:
    """On CUDA, cap an inference process's caching allocator at its part of `share` (the allocator frees its cache
    when it reaches the cap, instead of keeping every batch's peak). The trainer and CPU runs are not capped."""
    if device.type == "cuda" and spec.role != "trainer":
        index = device.index if device.index is not None else torch.cuda.current_device()  # 'cuda' has no index
        torch.cuda.set_per_process_memory_fraction(inference_memory_fraction(spec.plan, share), index)


class RoleContext:
    def __init__(self, spec: RoleSpec) -> None:
        self.spec = spec
        self.config: Config = config_from_dict(spec.config)
        self.task = task_spec(self.config)
        self.layout = block_layout(self.config, self.task)
        self.device = resolve_device(self.config.train.device)
        if spec.role == "trainer" and spec.plan.trainers > 1:
            self.device = trainer_device(self.device, spec.index)
        cap_inference_memory(spec, self.config.roles.inference_gpu_share, self.device)
        self.board = Board.attach(spec.run_id)
        self.row: RoleRow = self.board.row(spec.name)
        self.row.keep_fresh()
        self.metrics = MetricsWriter(Path(spec.run_dir), spec.name)
        self._slots: dict[str, WeightSlot] = {}
        self._buffers: dict[str, np.ndarray] = {}

    @property
    def stopping(self) -> bool:
        return self.board.stopping

    @property
    def paused(self) -> bool:
        return self.board.paused

    async def wait_while_paused(self, stage: str = "wait_input") -> bool:
        """Sleep (not spin) while the agent has paused the run; True if it was paused."""
        if not self.board.paused:
            return False
        with self.row.timed(stage):
            while self.board.paused and not self.stopping:
                self.row.beat()
                await asyncio.sleep(0.1)
        return True

    def new_model(self) -> EfficientZeroNet:
        return build_model(self.config, self.task, self.device).eval()

    def frame_source(self) -> FrameSource:
        stores = [FrameStore.attach(self.spec.run_id, f"frames{i}") for i in range(self.spec.plan.actors)]
        return FrameSource(stores)

    def weights_version(self, slot: str = LATEST_WEIGHTS) -> int:
        return self._slot(slot).latest_version()

    def _slot(self, name: str) -> WeightSlot:
        if name not in self._slots:
            self._slots[name] = WeightSlot.attach(self.spec.run_id, name)
            self._buffers[name] = np.empty(self._slots[name].nbytes, np.uint8)
        return self._slots[name]

    def pull_weights(self, model: torch.nn.Module, slot: str = LATEST_WEIGHTS) -> int:
        """Load the newest published weights of `slot` into `model`; returns their version (-1: none yet)."""
        from speedy.shm.weights import unflatten_state_dict

        weight_slot = self._slot(slot)
        with self.row.timed("weights"):
            version = weight_slot.read_into(self._buffers[slot])
            if version >= 0:
                assert weight_slot.layout is not None
                model.load_state_dict(unflatten_state_dict(self._buffers[slot], weight_slot.layout))
        return version

    async def wait_until(self, condition: Callable[[], bool], stage: str = "wait_input",
                         timeout_s: float | None = None, poll_s: float = 0.02) -> bool:
        """Sleep-poll until `condition()` holds, timed as `stage` (nothing is timed if it already holds); False if
        the role is stopping or `timeout_s` passed first."""
        if condition():
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.row.timed(stage):
            while not condition():
                if self.stopping or (deadline is not None and time.monotonic() > deadline):
                    return False
                self.row.beat()
                await asyncio.sleep(poll_s)
        return True

    async def wait_for_weights(self, model: torch.nn.Module, slot: str = LATEST_WEIGHTS) -> int:
        while True:
            version = self.pull_weights(model, slot)
            if version >= 0 or self.stopping:
                return version
            await asyncio.sleep(0.05)

    async def timed_search(self, search: ModelSearch, work: Awaitable[T], stage: str = "busy_tree",
                           split_every_s: float = 1.0) -> T:
        """Await search work as one span of `stage`, split by the tree and inference seconds the search measured
        (pipelined searches overlap the two; the excess is counted as `overlap`). The split is redone every
        `split_every_s` while the work runs, so a long span (a whole evaluation) reads right on the live board."""
        task = asyncio.ensure_future(work)
        tree, inference = search.tree_seconds, search.inference_seconds
        with self.row.timed(stage) as span:
            try:
                done = False
                while not done:
                    done = bool((await asyncio.wait({task}, timeout=split_every_s))[0])
                    now_tree, now_inference = search.tree_seconds, search.inference_seconds
                    span.split({"busy_tree": now_tree - tree, "busy_inference": now_inference - inference})
                    tree, inference = now_tree, now_inference
            finally:
                if not task.done():
                    task.cancel()
        return task.result()

    def train_steps(self) -> int:
        return int(self.board.get("trainer", "train_steps"))

    def total_env_steps(self) -> int:
        return int(self.board.column("env_steps", "actor").sum())

    def training_progress(self) -> float:
        return min(1.0, self.train_steps() / self.config.total_train_steps)

    def write_stats(self, values: dict[str, float]) -> None:
        """Row counters and timers to the role's JSONL/TensorBoard metrics (called every few seconds)."""
        self.row.flush()
        snapshot = self.board.snapshot()[self.spec.name]
        self.metrics.write(int(self.train_steps()), {**snapshot, **values})

    def close(self) -> None:
        self.row.stop_fresh()
        self.metrics.close()
        for slot in self._slots.values():
            slot.close()
        self.board.close()


class Periodic:
    """True every `interval_s` seconds (for metrics and heartbeats inside role loops)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            return True
        return False
