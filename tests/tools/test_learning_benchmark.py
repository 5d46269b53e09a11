"""tools/learning_benchmark.py: core sets for --pin, pinning seen by the multi-process plan, and the tool end to end
on two tiny inline CartPole seeds (table, PNG, then JSON rebuilt with --from-runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speedy.config import build_config
from speedy.learning_report import seed_row
from speedy.roles.launch import plan_roles
from tests.tools.conftest import REPO, load_tool

lb = load_tool("learning_benchmark")

TINY = ["run.max_env_steps=600", "train.training_steps=100", "replay.start_env_steps=200", "eval.interval=50",
        "eval.episodes=2", "train.batch_size=64"]


def test_core_sets():
    assert lb.core_sets([3, 0, 1, 2], 2, inline=True) == [[0], [1]]
    assert lb.core_sets(range(8), 2, inline=False) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert lb.core_sets(range(7), 3, inline=False) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="3 jobs need at least 3 cores"):
        lb.core_sets([0, 1], 3, inline=True)


def test_curves_of_a_repeated_seed_are_told_apart_by_their_run_root():
    def row(seed: int, run_dir: str):
        return seed_row([], 8.0, seed=seed, mode="inline", env_steps=0, train_steps=0, minutes=0.0, run_dir=run_dir)

    assert lb.curve_labels([row(0, "runs/a/x-s0"), row(1, "runs/a/x-s1")]) == ["seed 0", "seed 1"]
    assert lb.curve_labels([row(0, "runs/plane/x-s0"), row(0, "runs/one-hot/x-s0"), row(1, "runs/b/x-s1")]) == [
        "seed 0 (plane)", "seed 0 (one-hot)", "seed 1"]


def test_pin_narrows_the_plan():
    before = os.sched_getaffinity(0)
    try:
        lb.pin([min(before)])
        # on one core the trainer gets one thread (the plan sizes itself from the affinity mask)
        assert plan_roles(build_config("cartpole")).threads["trainer"] == 1
    finally:
        os.sched_setaffinity(0, before)
        lb._PINNED = None


def _tool(*args: str) -> str:
    out = subprocess.run([sys.executable, str(REPO / "tools" / "learning_benchmark.py"), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.timeout(300)
def test_two_tiny_seeds_end_to_end(tmp_path: Path):
    root, png = tmp_path / "runs", tmp_path / "curves.png"
    sets = [a for s in TINY for a in ("--set", s)]
    text = _tool("--inline", "--seeds", "0", "1", "--jobs", "1", "--threshold", "15", *sets, "--run-root", str(root),
                 "--png", str(png))
    assert text.startswith("host: ") and "cartpole (gym:CartPole-v1), threshold 15" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 0 | inline", "| 1 | inline"))]
    assert len(rows) == 2 and all(" | 600 | 100 | " in r for r in rows)  # full budget: 600 env, 100 train steps
    assert "reached " in text and "/2" in text
    assert png.stat().st_size > 10_000
    for seed in (0, 1):
        run = root / f"cartpole-inline-s{seed}"
        assert json.loads((run / "config.json").read_text())["run"]["stop_eval_return"] == 0.0
        assert json.loads((run / "benchmark.json").read_text())["threshold"] == 15.0
    report = json.loads(_tool("--from-runs", str(root), "--json"))  # threshold from benchmark.json
    assert report["threshold"] == 15.0 and report["host"]["logical_cpus"] >= 1
    assert [s["seed"] for s in report["seeds"]] == [0, 1] and report["summary"]["seeds"] == 2
    for seed in report["seeds"]:
        assert seed["mode"] == "inline" and seed["env_steps"] == 600 and seed["train_steps"] == 100
        assert len(seed["curve"]) == 2  # at train steps 50 and 100 (the final weights: not evaluated twice)
        assert seed["best_eval"] == max(p["mean_return"] for p in seed["curve"])
    for seed in (0, 1):
        evals = [json.loads(line) for line in (root / f"cartpole-inline-s{seed}" / "metrics" / "eval.jsonl").open()]
        assert [r["step"] for r in evals if "mean_return" in r] == [50, 100]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [["--inline"], []], ids=["inline", "multi-process"])
def test_sigterm_stops_the_benchmark_not_just_its_current_run(tmp_path: Path, mode: list[str]):
    """SIGTERM while seed 0 runs: that run stops cleanly, no further seed starts, the table covers the run."""
    import signal
    import time

    root = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "tools" / "learning_benchmark.py"), "--preset", "cartpole", *mode,
           "--seeds", "0", "1", "2", "--threshold", "475", "--run-root", str(root),
           "--set", "run.max_env_steps=100000", "--set", "replay.start_env_steps=200",
           "--set", "eval.interval=50", "--set", "eval.episodes=2"]  # a first evaluation within seconds
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    def evaluated() -> bool:
        return any("mean_return" in p.read_text() for p in root.glob("*-s0/metrics/eval*.jsonl"))

    while not evaluated() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped: 1 of 3 seed(s) run" in out and "| 0 |" in out, out[-3000:]
    assert sorted(p.name for p in root.iterdir()) == [f"cartpole-{'inline' if mode else 'multi-process'}-s0"]


def _segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("speedy_")}


def _two_runs_training(proc: subprocess.Popen, root: Path) -> list:
    """Wait (up to 60 s) until two of the benchmark's runs train; returns its worker processes (psutil)."""
    import time

    import psutil

    deadline = time.time() + 60
    while len(list(root.glob("*/metrics/train.jsonl"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(list(root.glob("*/metrics/train.jsonl"))) == 2 and workers
    return workers


@pytest.mark.timeout(120)
def test_killing_the_benchmark_ends_its_parallel_runs(tmp_path: Path):
    """SIGKILL of a `--jobs 2` benchmark: both seeds' runs stop within seconds and leave no shared memory."""
    import signal

    import psutil

    before = _segments()
    root = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "tools" / "learning_benchmark.py"), "--preset", "cartpole", "--inline",
           "--seeds", "0", "1", "--jobs", "2", "--run-root", str(root),
           "--set", "run.max_env_steps=100000", "--set", "replay.start_env_steps=200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = _two_runs_training(proc, root)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    assert not _segments() - before


@pytest.mark.timeout(120)
def test_sigterm_of_parallel_runs_starts_no_queued_seed(tmp_path: Path):
    """SIGTERM of a `--jobs 2` benchmark with 4 seeds: both running seeds stop, and the workers exit instead of
    taking the seeds the pool had already queued (they used to run seeds 2 and 3 after the stop)."""
    import signal

    import psutil

    before = _segments()
    root = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "tools" / "learning_benchmark.py"), "--preset", "cartpole", "--inline",
           "--seeds", "0", "1", "2", "3", "--jobs", "2", "--run-root", str(root),
           "--set", "run.max_env_steps=100000", "--set", "replay.start_env_steps=200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = _two_runs_training(proc, root)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopped: the runs in progress were told to stop" in out, out[-3000:]
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    assert sorted(p.name for p in root.iterdir()) == ["cartpole-inline-s0", "cartpole-inline-s1"]
    assert not _segments() - before
