"""Exclusive stage accounting of one process: every second of its wall time lands in exactly one stage.

A process runs several lanes at once (asyncio tasks, worker threads). Each lane says what it is doing with
`clock.timed(stage)`; the clock keeps the process's time partitioned:
- while one or more lanes *work* (a WORK stage), the interval is split equally among the working lanes' stages;
- else, while lanes *wait* (wait_input: starved by an empty input; wait_output: pushed back by a full output or a
  throttle), it is split equally among the waiting lanes' stages;
- else (no lane claims anything: loop glue, housekeeping) it is `other`.
So the stage seconds of a process sum to its wall time. Concurrency is reported apart from the stages:
`busy_lanes` integrates the number of lanes working at once (mean concurrency = busy_lanes / working seconds), and
`overlap` counts the seconds of tree and inference work that overlapped inside a split span (pipelined search).

Stages: busy_tree (MCTS tree kernels and the loop that drives them), busy_inference (network forward passes),
busy_env (emulator steps), busy_targets (value/prefix target arithmetic), busy_train (optimizer steps),
busy_replay (replay buffer work: add, sample, priority updates), transport (decoding, gathering frames for a batch),
weights (pulling or publishing weights), wait_input, wait_output, other. All values are seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

WORK_STAGES = ("busy_tree", "busy_inference", "busy_env", "busy_targets", "busy_train", "busy_replay",
               "transport", "weights")
WAIT_STAGES = ("wait_input", "wait_output")
STAGES = (*WORK_STAGES, *WAIT_STAGES, "other")
CONCURRENCY = ("busy_lanes", "overlap")


@dataclass
class Span:
    """One `timed` block of one lane: its stage, start (perf_counter s) and the wall seconds it was credited."""

    clock: StageClock
    stage: str
    start: float
    credited: float = 0.0
    elapsed: float = 0.0
    closed: bool = False
    split_credited: float = 0.0  # `credited` and elapsed seconds up to the last split (later splits take the rest)
    split_elapsed: float = 0.0

    def split(self, parts: dict[str, float]) -> None:
        """Move the share `seconds / max(elapsed, Σ seconds)` of the time credited since the last split from the
        block's stage to each named stage (e.g. the tree and inference seconds a search measured in that time).
        Parts that sum to more than the elapsed time ran concurrently; the excess goes to `overlap`. Called after
        the block, or during it with the seconds measured so far (a long block then reads right while it runs)."""
        self.clock.reattribute(self, parts)


def _lane_key() -> Hashable:
    """The running asyncio task, or the thread when none runs here."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return task if task is not None else threading.get_ident()


class StageClock:
    """Partitions a process's wall time into STAGES and adds the seconds to `add(stage, seconds)` as they pass."""

    def __init__(self, add: Callable[[str, float], None], now: Callable[[], float] = time.perf_counter) -> None:
        self._add = add
        self._now = now
        self._lock = threading.Lock()
        self._lanes: dict[Hashable, list[Span]] = {}
        self._last = now()

    def _advance(self) -> None:
        """Credit the time since the last event to the current stage(s) (caller holds the lock)."""
        now = self._now()
        dt, self._last = now - self._last, now
        if dt <= 0:
            return
        tops = [stack[-1] for stack in self._lanes.values() if stack]
        working = [s for s in tops if s.stage in WORK_STAGES]
        active = working or [s for s in tops if s.stage in WAIT_STAGES]
        if not active:
            self._add("other", dt)
            return
        share = dt / len(active)
        for span in active:
            span.credited += share
            self._add(span.stage, share)
        if working:
            self._add("busy_lanes", dt * len(working))

    def flush(self) -> None:
        """Bring the stage totals up to now (call before reading them)."""
        with self._lock:
            self._advance()

    @contextlib.contextmanager
    def timed(self, stage: str, lane: Hashable | None = None) -> Iterator[Span]:
        """The calling lane (by default its asyncio task or thread) is in `stage` for the block; nested blocks of
        one lane override the outer one while they run."""
        if stage not in STAGES or stage == "other":
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES[:-1]}")
        key = _lane_key() if lane is None else lane
        with self._lock:
            self._advance()
            span = Span(self, stage, self._last)
            self._lanes.setdefault(key, []).append(span)
        try:
            yield span
        finally:
            with self._lock:
                self._advance()
                span.elapsed, span.closed = self._last - span.start, True
                stack = self._lanes[key]
                stack.remove(span)
                if not stack:
                    del self._lanes[key]

    def reattribute(self, span: Span, parts: dict[str, float]) -> None:
        """See `Span.split`."""
        with self._lock:
            if not span.closed:
                self._advance()
            elapsed = span.elapsed if span.closed else self._last - span.start
            credited = span.credited - span.split_credited
            window = elapsed - span.split_elapsed
            span.split_credited, span.split_elapsed = span.credited, elapsed
            total = sum(parts.values())
            scale = max(window, total)
            if scale <= 0:
                return
            for stage, seconds in parts.items():
                moved = credited * max(0.0, seconds) / scale
                self._add(span.stage, -moved)
                self._add(stage, moved)
            self._add("overlap", max(0.0, total - window))
