"""speedy/learning_report.py: the benchmark's per-seed row and summary against hand-computed values, and a run
directory read back from hand-written metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speedy.learning_report import (
    EvalPoint,
    eval_curve,
    find_runs,
    markdown_table,
    read_run,
    seed_row,
    summarize,
    summary_line,
)


def _curve(*returns: float) -> list[EvalPoint]:
    """Evaluations every 500 env steps and every half minute."""
    return [EvalPoint(500 * (i + 1), 0.5 * (i + 1), r) for i, r in enumerate(returns)]


def _row(seed: int, *returns: float):  # noqa: ANN202
    return seed_row(_curve(*returns), 475.0, seed=seed, mode="inline", env_steps=10_000, train_steps=5_000,
                    minutes=6.0)


def test_seed_row_first_reach_and_later_share():
    # first ≥ 475 is the 3rd eval (1,500 env steps, 1.5 min); after it 4 evals, 3 of them ≥ 475 (475 counts)
    row = _row(0, 100.0, 300.0, 480.0, 500.0, 470.0, 475.0, 500.0)
    assert (row.first_env_steps, row.first_minutes) == (1500, 1.5)
    assert (row.later_evals, row.later_hits, row.later_share) == (4, 3, 0.75)
    assert (row.best_eval, row.last_eval) == (500.0, 500.0)
    assert (row.env_steps, row.train_steps, row.minutes) == (10_000, 5_000, 6.0)


def test_a_repeated_evaluation_of_the_same_weights_counts_once():
    """An inline run that wrote its final evaluation twice (step 10,000 at 10,000 env steps): one point, so a seed
    whose last evaluation missed is 0.5 (1/2), not 0.33 (1/3)."""
    records = [{"time": 60.0, "step": 9_500, "env_steps": 9_500, "mean_return": 480.0},
               {"time": 90.0, "step": 9_700, "env_steps": 9_700, "mean_return": 500.0},
               {"time": 120.0, "step": 10_000, "env_steps": 10_000, "mean_return": 400.0},
               {"time": 125.0, "step": 10_000, "env_steps": 10_000, "mean_return": 400.0}]
    curve = eval_curve(records, 0.0)
    assert [p.env_steps for p in curve] == [9_500, 9_700, 10_000]
    row = seed_row(curve, 475.0, seed=0, mode="inline", env_steps=10_000, train_steps=10_000, minutes=2.1)
    assert (row.later_hits, row.later_evals) == (1, 2)


def test_seed_row_never_reached_and_reached_last():
    never = _row(1, 100.0, 474.9, 200.0)
    assert never.first_env_steps is None and never.first_minutes is None
    assert never.later_evals == 0 and never.later_share is None
    assert (never.best_eval, never.last_eval) == (474.9, 200.0)
    last = _row(2, 100.0, 490.0)  # reached at the last evaluation: no later evaluations to hold it
    assert last.first_env_steps == 1000 and last.later_share is None
    empty = seed_row([], 475.0, seed=3, mode="multi-process", env_steps=0, train_steps=0, minutes=0.0)
    assert empty.best_eval is None and empty.last_eval is None and empty.first_env_steps is None


def test_summary_over_seeds():
    rows = [
        _row(0, 480.0, 500.0, 500.0, 500.0, 400.0),  # reach 500 env / 0.5 min; later 3/4 = 0.75
        _row(1, 100.0, 100.0, 476.0, 480.0, 490.0),  # reach 1,500 / 1.5; later 2/2 = 1.0
        _row(2, 100.0, 200.0, 300.0, 490.0),  # reach 2,000 / 2.0; no later evaluation
        _row(3, 100.0, 200.0),  # never
        _row(4, 100.0, 475.0, 100.0, 475.0, 475.0, 475.0, 475.0),  # reach 1,000 / 1.0; later 4/5 = 0.8 (holds)
    ]
    s = summarize(rows)
    assert s["seeds"] == 5 and s["reached"] == 4
    assert s["median_first_env_steps"] == 1250  # median of 500, 1000, 1500, 2000
    assert s["median_first_minutes"] == pytest.approx(1.25)
    assert s["median_later_share"] == pytest.approx(0.8)  # median of 0.75, 1.0, 0.8
    assert s["held"] == 2  # 1.0 and 0.8
    line = summary_line(s)
    assert line == ("reached 4/5; median to first reach 1,250 env steps, 1.25 min; median later-share 0.80; "
                    "later-share ≥ 0.8: 2/5 seeds")
    none = summarize([rows[3]])
    assert none["median_first_env_steps"] is None and none["median_later_share"] is None
    assert summary_line(none) == "reached 0/1; median later-share -; later-share ≥ 0.8: 0/1 seeds"


def test_markdown_table():
    table = markdown_table([_row(0, 480.0, 500.0, 400.0), _row(1, 100.0)], 475.0).splitlines()
    assert table[0].startswith("| seed | mode | first ≥ 475 (env steps) |") and len(table) == 4
    assert table[2] == "| 0 | inline | 500 | 0.50 | 0.50 (1/2) | 500.0 | 400.0 | 10,000 | 5,000 | 6.00 |"
    assert table[3] == "| 1 | inline | - | - | - | 100.0 | 100.0 | 10,000 | 5,000 | 6.00 |"


def _jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn')


def test_read_run_dir(tmp_path: Path):
    run = tmp_path / "root" / "cartpole-multi-process-s7"
    start = 1_000_000.0
    _jsonl(run / "metrics" / "agent.jsonl", [
        {"time": start, "step": 0, "event": "start", "config": {"run": {"seed": 7, "stop_eval_return": 0.0}},
         "host": {"cpu": "X", "usable_cpus": 2}},
        {"time": start + 30, "step": 0, "event": "milestone", "env_steps": 500, "minutes": 0.5}])
    _jsonl(run / "metrics" / "evaluator.jsonl", [
        {"time": start + 60, "step": 250, "env_steps": 900, "mean_return": 200.0},
        {"time": start + 120, "step": 500, "env_steps": 1800, "mean_return": 480.0},
        {"time": start + 180, "step": 750, "env_steps": 2700, "mean_return": 490.0}])
    (run / "summary.json").write_text(json.dumps({"env_steps": 3000, "train_steps": 800, "minutes": 3.5}))
    (run / "benchmark.json").write_text(json.dumps({"preset": "cartpole", "threshold": 475.0}))
    (tmp_path / "root" / "not-a-run").mkdir()
    assert find_runs([tmp_path / "root"]) == [run] == find_runs([run])
    data = read_run(run)
    assert (data.seed, data.mode, data.threshold(), data.host["cpu"]) == (7, "multi-process", 475.0, "X")
    row = data.row(475.0)
    assert (row.first_env_steps, row.first_minutes, row.later_share) == (1800, 2.0, 1.0)
    assert (row.env_steps, row.train_steps, row.minutes) == (3000, 800, 3.5)
    assert eval_curve(data.records, start)[0] == EvalPoint(900, 1.0, 200.0)
    # without benchmark.json or summary.json: the run's own stop_eval_return (0: none), counters from the records
    (run / "benchmark.json").unlink()
    (run / "summary.json").unlink()
    data = read_run(run)
    assert data.threshold() is None
    assert (data.env_steps, data.train_steps, data.minutes) == (2700, 750, 3.0)
