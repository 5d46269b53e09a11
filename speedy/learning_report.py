"""Learning benchmark figures from run directories: per seed, when a full evaluation first reached a threshold and
how well the later evaluations held it; over seeds, how many reached it and the medians (tools/learning_benchmark.py).

A run directory holds its evaluations in `metrics/eval.jsonl` (inline) or `metrics/evaluator.jsonl` (multi-process):
one record per evaluation with `time` (unix s), `env_steps` and `mean_return`. Minutes are counted from the time of
the first `{"event": "start"}` record in `metrics/agent.jsonl` (speedy/runinfo.py), which both modes write just
before their clock starts; final env steps, train steps and minutes come from `summary.json` (else the last records).
`benchmark.json`, written by the tool before a run, keeps the preset and threshold (runs are forced not to stop
early, so the config no longer holds the threshold).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speedy.metrics import read_metrics

HOLD = 0.8  # a seed "holds" the threshold when at least this share of its later evaluations stay at or above it
MODES = {"eval.jsonl": "inline", "evaluator.jsonl": "multi-process"}
BENCHMARK_FILE = "benchmark.json"


@dataclass
class EvalPoint:
    """One full evaluation: env steps when it was taken, minutes since the run started, mean return."""

    env_steps: int
    minutes: float
    mean_return: float


@dataclass
class SeedRow:
    """One seed's line of the table."""

    seed: int
    mode: str  # "inline" or "multi-process"
    first_env_steps: int | None  # env steps of the first evaluation with mean return ≥ threshold (None: never)
    first_minutes: float | None  # minutes since the run started at that evaluation
    later_evals: int  # evaluations after the first reach (that one excluded)
    later_hits: int  # ... of them with mean return ≥ threshold
    best_eval: float | None
    last_eval: float | None
    env_steps: int  # at the end of the run
    train_steps: int
    minutes: float  # the whole run
    run_dir: str = ""
    curve: list[EvalPoint] = field(default_factory=list)

    @property
    def later_share(self) -> float | None:
        """Share of the evaluations after the first reach that stayed ≥ threshold (None: not reached, or none
        came after it)."""
        return self.later_hits / self.later_evals if self.later_evals else None


def eval_curve(records: Sequence[dict[str, Any]], start_time: float) -> list[EvalPoint]:
    """Evaluation records (metrics JSONL dicts with time, env_steps, mean_return) as points, minutes counted from
    `start_time` (unix s); records without a mean return are skipped, and so is a record of the same training step
    (`step`: the weights evaluated) as the one before it: inline runs before 2026-11-27 wrote their final evaluation
    twice when the last interval's evaluation was at the last step, and counting it twice skews the later-share."""
    points: list[EvalPoint] = []
    previous_step = None
    for r in records:
        if "mean_return" not in r or (r.get("step") is not None and r.get("step") == previous_step):
            continue
        previous_step = r.get("step")
        points.append(EvalPoint(int(r["env_steps"]), (r["time"] - start_time) / 60, float(r["mean_return"])))
    return points


def seed_row(curve: Sequence[EvalPoint], threshold: float, *, seed: int, mode: str, env_steps: int,
             train_steps: int, minutes: float, run_dir: str = "") -> SeedRow:
    """The table line of one seed from its evaluations in the order they were made."""
    first = next((i for i, p in enumerate(curve) if p.mean_return >= threshold), None)
    later = list(curve[first + 1:]) if first is not None else []
    returns = [p.mean_return for p in curve]
    return SeedRow(
        seed=seed, mode=mode,
        first_env_steps=curve[first].env_steps if first is not None else None,
        first_minutes=curve[first].minutes if first is not None else None,
        later_evals=len(later), later_hits=sum(p.mean_return >= threshold for p in later),
        best_eval=max(returns, default=None), last_eval=returns[-1] if returns else None,
        env_steps=env_steps, train_steps=train_steps, minutes=minutes, run_dir=run_dir, curve=list(curve))


def summarize(rows: Sequence[SeedRow], hold: float = HOLD) -> dict[str, Any]:
    """Over seeds: how many reached the threshold, median env steps and minutes to the first reach (over those that
    reached), median later-share (over seeds that have one) and how many seeds held it (later-share ≥ `hold`)."""
    reached = [r for r in rows if r.first_env_steps is not None]
    shares = [r.later_share for r in rows if r.later_share is not None]
    return {
        "seeds": len(rows),
        "reached": len(reached),
        "median_first_env_steps": statistics.median(r.first_env_steps for r in reached) if reached else None,
        "median_first_minutes": statistics.median(r.first_minutes for r in reached) if reached else None,
        "median_later_share": statistics.median(shares) if shares else None,
        "hold": hold,
        "held": sum(s >= hold for s in shares),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: Sequence[SeedRow], threshold: float) -> str:
    """The per-seed table (markdown)."""
    t = f"{threshold:g}"
    lines = [f"| seed | mode | first ≥ {t} (env steps) | minutes then | later evals ≥ {t} | best eval | last eval "
             "| env steps | train steps | minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        later = f"{r.later_share:.2f} ({r.later_hits}/{r.later_evals})" if r.later_evals else "-"
        lines.append(f"| {r.seed} | {r.mode} | {_fmt(r.first_env_steps, ',')} | {_fmt(r.first_minutes, '.2f')} | "
                     f"{later} | {_fmt(r.best_eval, '.1f')} | {_fmt(r.last_eval, '.1f')} | {r.env_steps:,} | "
                     f"{r.train_steps:,} | {r.minutes:.2f} |")
    return "\n".join(lines)


def summary_line(summary: dict[str, Any]) -> str:
    """One line: seeds reached / N, medians to the first reach, median later-share, seeds that held."""
    n = summary["seeds"]
    text = f"reached {summary['reached']}/{n}"
    if summary["reached"]:
        text += (f"; median to first reach {summary['median_first_env_steps']:,.0f} env steps, "
                 f"{summary['median_first_minutes']:.2f} min")
    text += f"; median later-share {_fmt(summary['median_later_share'], '.2f')}"
    return text + f"; later-share ≥ {summary['hold']:g}: {summary['held']}/{n} seeds"


# --- run directories ----------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """What the benchmark reads from one run directory."""

    run_dir: Path
    seed: int
    mode: str
    records: list[dict[str, Any]]  # evaluation records
    start_time: float
    env_steps: int
    train_steps: int
    minutes: float
    config: dict[str, Any]
    host: dict[str, Any]  # the start record's hardware (speedy.runinfo.host_summary)
    benchmark: dict[str, Any]  # benchmark.json ({} for a run the tool did not start)

    def threshold(self) -> float | None:
        """The threshold the tool ran it with, else the run's own stop_eval_return if set."""
        if "threshold" in self.benchmark:
            return float(self.benchmark["threshold"])
        stop = self.config.get("run", {}).get("stop_eval_return", 0)
        return float(stop) if stop else None

    def row(self, threshold: float) -> SeedRow:
        """Its table line."""
        return seed_row(eval_curve(self.records, self.start_time), threshold, seed=self.seed, mode=self.mode,
                        env_steps=self.env_steps, train_steps=self.train_steps, minutes=self.minutes,
                        run_dir=str(self.run_dir))


def is_run_dir(path: Path) -> bool:
    """A directory with evaluations of either mode."""
    return any((path / "metrics" / name).exists() for name in MODES)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Each path that is a run directory, and the run directories right below each one that is not (a run root)."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += [path] if is_run_dir(path) else sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
    return found


def read_run(run_dir: str | Path) -> RunData:
    """Evaluations, start time, final counters, config and host of a finished (or stopped) run directory."""
    run_dir = Path(run_dir)
    name = next((n for n in MODES if (run_dir / "metrics" / n).exists()), None)
    if name is None:
        raise FileNotFoundError(f"{run_dir}: no metrics/eval.jsonl or metrics/evaluator.jsonl (no evaluation ran)")
    records = read_metrics(run_dir / "metrics" / name)
    agent_path = run_dir / "metrics" / "agent.jsonl"
    agent = read_metrics(agent_path) if agent_path.exists() else []
    start = next((r for r in agent if r.get("event") == "start"), None)
    start_time = start["time"] if start else (records[0]["time"] if records else 0.0)
    config = (start or {}).get("config") or _json(run_dir / "config.json")
    summary = _json(run_dir / "summary.json")
    last = records[-1] if records else {}
    end_time = max([r["time"] for r in agent + records] or [start_time])
    seed = config.get("run", {}).get("seed")
    if seed is None:
        match = re.search(r"-s(\d+)$", run_dir.name)
        seed = int(match.group(1)) if match else -1
    return RunData(
        run_dir=run_dir, seed=int(seed), mode=MODES[name], records=records, start_time=start_time,
        env_steps=int(summary.get("env_steps", last.get("env_steps", 0))),
        train_steps=int(summary.get("train_steps", last.get("step", 0))),
        minutes=float(summary.get("minutes", (end_time - start_time) / 60)),
        config=config, host=(start or {}).get("host", {}), benchmark=_json(run_dir / BENCHMARK_FILE))


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
