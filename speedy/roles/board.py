"""The board: a shared-memory table of per-process counters and stage timers, plus a few run-wide controls.

Every role process owns one row and is its only writer (no locks); the node agent and the profiler read all rows.
Times are cumulative seconds per stage, so rates and shares come from differences between two readings. The stages
of a row are exclusive and sum to the process's wall time (speedy/stages.py says how concurrent lanes are counted);
`busy_lanes` and `overlap` measure concurrency apart from them; `cpu` is the process's CPU seconds (all threads).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import numpy as np

from speedy.shm.segment import Segment
from speedy.stages import CONCURRENCY, STAGES, Span, StageClock

FIELDS = (
    "pid", "heartbeat", "restarts", "exit_code",
    "env_steps", "train_steps", "items", "episodes", "episode_return", "weights_version",
    "eval_return", "eval_hns", "evals", "eval_train_steps", "eval_env_steps", "sweeps", "refresh_positions",
    "snapshot_serial", "priority_updates",
    *STAGES, *CONCURRENCY, "cpu",
)
# snapshot: serial of the replay snapshot the agent asks for (the replay row acks it); resumed_env_steps: the env
# steps a resumed run credited its actors with (0 for a fresh run)
CONTROLS = ("stop", "pause", "final_eval", "target_reached_env_steps", "target_reached_time", "start_time",
            "snapshot", "resumed_env_steps")
_FIELD_INDEX = {name: i for i, name in enumerate(FIELDS)}
_CONTROL_INDEX = {name: i for i, name in enumerate(CONTROLS)}


class Board:
    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.row_names: list[str] = list(seg.meta["rows"])
        self.controls = seg.ndarray(np.float64, 0, len(CONTROLS))
        self.rows = seg.ndarray(np.float64, 64 * ((len(CONTROLS) * 8 + 63) // 64),
                                (len(self.row_names), len(FIELDS)))

    @classmethod
    def create(cls, run_id: str, row_names: list[str]) -> Board:
        size = 64 * ((len(CONTROLS) * 8 + 63) // 64) + len(row_names) * len(FIELDS) * 8
        board = cls(Segment.create(run_id, "board", size, {"kind": "board", "rows": row_names}))
        board.controls[:] = 0
        board.rows[:] = 0
        return board

    @classmethod
    def attach(cls, run_id: str) -> Board:
        return cls(Segment.attach(run_id, "board"))

    def row(self, name: str) -> RoleRow:
        return RoleRow(self, self.row_names.index(name))

    def get(self, row: str, field: str) -> float:
        return float(self.rows[self.row_names.index(row), _FIELD_INDEX[field]])

    def column(self, field: str, prefix: str = "") -> np.ndarray:
        """One field for every row whose name starts with `prefix`."""
        picked = [i for i, name in enumerate(self.row_names) if name.startswith(prefix)]
        return self.rows[picked, _FIELD_INDEX[field]].copy()

    def control(self, name: str) -> float:
        return float(self.controls[_CONTROL_INDEX[name]])

    def set_control(self, name: str, value: float) -> None:
        self.controls[_CONTROL_INDEX[name]] = value

    @property
    def stopping(self) -> bool:
        return self.controls[_CONTROL_INDEX["stop"]] != 0

    @property
    def paused(self) -> bool:
        return self.controls[_CONTROL_INDEX["pause"]] != 0

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {name: dict(zip(FIELDS, self.rows[i].tolist(), strict=True)) for i, name in enumerate(self.row_names)}

    def close(self) -> None:
        del self.controls, self.rows
        self.seg.close()


class RoleRow:
    """The writer's handle on its own row."""

    def __init__(self, board: Board, index: int) -> None:
        self.board = board
        self.values = board.rows[index]
        self.clock = StageClock(self.add)
        self._cpu_base = self.get("cpu")  # a restarted process continues its row's CPU seconds

    def set(self, field: str, value: float) -> None:
        self.values[_FIELD_INDEX[field]] = value

    def add(self, field: str, value: float) -> None:
        self.values[_FIELD_INDEX[field]] += value

    def get(self, field: str) -> float:
        return float(self.values[_FIELD_INDEX[field]])

    def beat(self) -> None:
        """Heartbeat (unix s) and CPU seconds, so readers of the board see fresh CPU use."""
        self.values[_FIELD_INDEX["heartbeat"]] = time.time()
        self.values[_FIELD_INDEX["cpu"]] = self._cpu_base + time.process_time()

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[Span]:
        """The calling task or thread is in `stage` (one of STAGES) for the block; see speedy/stages.py."""
        with self.clock.timed(stage) as span:
            yield span

    def flush(self) -> None:
        """Stage seconds up to now and the CPU seconds, before the row is read or written out."""
        self.clock.flush()
        self.set("cpu", self._cpu_base + time.process_time())

    def keep_fresh(self, interval_s: float = 0.25) -> None:
        """Flush every `interval_s` seconds from a daemon thread, so that readers of the board (the node agent's
        snapshots) see stage seconds that are current even while a lane sits in one long stage. `stop_fresh()`
        before the board is closed."""
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.flush()

        self._flusher = threading.Thread(target=run, name="board-flush", daemon=True)
        self._flusher.start()

    def stop_fresh(self) -> None:
        if getattr(self, "_flusher", None) is not None:
            self._stop.set()
            self._flusher.join()
            self._flusher = None
