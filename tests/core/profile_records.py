"""Hand-made metrics records for speedy.profile tests: cumulative board rows and JSONL files as runs write them."""

from __future__ import annotations

import json
from pathlib import Path

from speedy.stages import STAGES


def board_row(t: float, seconds: dict[str, float], **extra: float) -> dict:
    """A process's cumulative board row at unix time `t`: stage seconds (missing stages 0), its busy seconds as
    lanes and CPU, and `extra` counters (`train_steps` also as `step`)."""
    return {"time": t, "step": int(extra.get("train_steps", 0)), **{s: seconds.get(s, 0.0) for s in STAGES},
            "busy_lanes": sum(v for k, v in seconds.items() if k.startswith("busy")), "overlap": 0.0,
            "cpu": sum(v for k, v in seconds.items() if k.startswith("busy")), **extra}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
