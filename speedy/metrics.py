"""Run directory metrics: one JSONL file per source (`metrics/<source>.jsonl`) plus TensorBoard event files."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Append-only metrics of one source (a role or the inline loop). Each record gets `time` (unix s) and `step`."""

    def __init__(self, run_dir: str | Path, source: str, tensorboard: bool = True) -> None:
        self.dir = Path(run_dir) / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{source}.jsonl"
        self.source = source
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = EventFile(Path(run_dir) / "tensorboard" / source) if tensorboard else None

    def write(self, step: int, values: dict[str, Any]) -> None:
        record = {"time": time.time(), "step": step, **values}
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.scalar(f"{self.source}/{key}", float(value), step)
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class BatchStaleness:
    """How old a trained batch's inputs were, averaged over the batches since the last `take()`, in training steps:
    `sample_lead_steps` = steps done when the batch is trained − when replay drew it (its priorities are that stale;
    0 inline), `target_lag_steps` = steps done − the step of the target weights its value targets bootstrapped from.
    Unrecorded ages (−1) are left out."""

    KEYS = ("sample_lead_steps", "target_lag_steps")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._sums = dict.fromkeys(self.KEYS, 0.0)
        self._counts = dict.fromkeys(self.KEYS, 0)

    def add(self, trained_at_step: int, sampled_at_step: int, target_version: int) -> None:
        for key, then in (("sample_lead_steps", sampled_at_step), ("target_lag_steps", target_version)):
            if then >= 0:
                self._sums[key] += trained_at_step - then
                self._counts[key] += 1

    def take(self) -> dict[str, float]:
        """The means since the last call (keys with no batch are left out), and a fresh start."""
        means = {k: self._sums[k] / self._counts[k] for k in self.KEYS if self._counts[k]}
        self._reset()
        return means


class EventFile:
    """A TensorBoard event file written synchronously (tensorboardX's record format and protos, without its
    background writer process queue, which leaks semaphores in short-lived role processes)."""

    def __init__(self, directory: Path) -> None:
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import RecordWriter

        directory.mkdir(parents=True, exist_ok=True)
        self._event = event_pb2.Event
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._writer = RecordWriter(str(directory / name))
        self._writer.write(self._event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        event = self._event(wall_time=time.time(), step=step, summary=scalar(tag, value))
        self._writer.write(event.SerializeToString())

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL metrics file (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
