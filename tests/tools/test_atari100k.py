"""tools/atari100k.py: per-game aggregation and HNS by hand, and a report from two real short Breakout runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speedy.config import build_config
from speedy.inline import run_inline
from speedy.metrics import read_metrics
from tests.tools.conftest import load_tool

a100k = load_tool("atari100k")

TINY = [
    "model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
    "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.mlp_latent=16",
    "model.mlp_hidden=[16]", "model.support_size=20", "run.num_threads=1", "env.frame_size=48",
    "run.max_env_steps=160", "train.training_steps=4", "train.last_steps=0", "replay.block_length=10",
    "replay.start_env_steps=40", "train.batch_size=4", "eval.episodes=1", "eval.interval=2",
    "mcts.num_simulations=2", "eval.num_simulations=2", "actor.num_envs=4", "env.max_frames_eval=200",
    "replay.capacity=2000",
]


def _run(game: str, seed: int, score: float, minutes: float) -> object:
    point = a100k.EvalPoint(env_steps=100, minutes=minutes, mean_return=score)
    return a100k.RunResult(run_dir=f"r{seed}", game=game, seed=seed, curve=[point], env_steps=100, minutes=minutes)


def test_game_rows_hand_computed():
    runs = [_run("breakout", 0, 30.5, 3.0), _run("breakout", 1, 1.7, 5.0), _run("pong", 0, 14.6, 7.0)]
    breakout, pong = a100k.game_rows(runs)
    # Breakout: mean (30.5 + 1.7) / 2 = 16.1, population std 14.4, HNS (16.1 − 1.7) / (30.5 − 1.7) = 0.5
    assert (breakout.mean, breakout.std, breakout.hns) == pytest.approx((16.1, 14.4, 0.5))
    assert breakout.minutes_to_human == 3.0 and breakout.reached_human == 1  # only seed 0 reached 30.5
    assert pong.hns == pytest.approx(1.0) and pong.minutes_to_human == 7.0
    # EfficientZero: Breakout (414.1 − 1.7) / 28.8 = 14.3194, Pong (20.1 + 20.7) / 35.3 = 1.15581
    assert breakout.efficientzero_hns == pytest.approx(14.319444, rel=1e-6)
    s = a100k.summary_hns([breakout, pong])
    assert s["mean_hns"] == pytest.approx(0.75) and s["median_hns"] == pytest.approx(0.75)
    assert s["efficientzero_mean_hns"] == pytest.approx((14.319444 + 1.155807) / 2, rel=1e-6)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a100k")
    threads = torch.get_num_threads()
    try:
        for seed in (0, 1):
            config = build_config("atari100k", overrides=[*TINY, f"run.seed={seed}"])
            run_dir = root / f"Breakout-s{seed}"
            run_dir.mkdir()
            (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
            run_inline(config, run_dir, log=False)
    finally:
        torch.set_num_threads(threads)
    cartpole = root / "cartpole"  # not an Atari run: skipped with a warning
    cartpole.mkdir()
    (cartpole / "config.json").write_text(json.dumps(build_config("cartpole").to_dict()))
    return root


@pytest.mark.timeout(300)
def test_report_from_two_real_runs(two_runs: Path, tmp_path: Path):
    warnings: list[str] = []
    runs = a100k.collect([two_runs], games=["Breakout"], warn=warnings.append)
    assert [r.seed for r in runs] == [0, 1] and any("cartpole" in w for w in warnings)
    for run in runs:
        evals = read_metrics(Path(run.run_dir) / "metrics" / "eval.jsonl")
        assert run.score == evals[-1]["mean_return"] and len(run.curve) == len(evals) >= 2
        assert run.host["cpu"] and run.host["usable_cpus"] >= 1  # the start record's hardware
        assert [m[0] for m in run.milestones][:3] == [10, 20, 30]  # every max(10, 160 / 20) env steps
        assert all(b[1] >= a[1] for a, b in zip(run.milestones, run.milestones[1:], strict=False))
        last = run.milestones[-1]
        assert run.env_steps_per_minute == pytest.approx(last[0] / last[1])
    report = a100k.write_report(runs, tmp_path / "report")
    text = report.read_text()
    row = a100k.game_rows(runs)[0]
    assert f"| breakout | {row.mean:.1f} ± {row.std:.1f} | 2 | {row.hns:.3f} | 414.1 | 14.319 | 1.7 | 30.5 |" in text
    assert "mean HNS" in text and "median HNS" in text
    for name in ("curves_env_steps.png", "curves_minutes.png"):
        png = (tmp_path / "report" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert json.loads((tmp_path / "report" / "report.json").read_text())["games"][0]["seeds"] == 2
    assert a100k.main([str(two_runs), "--out", str(tmp_path / "cli")]) == 0
    assert a100k.main([str(two_runs / "cartpole"), "--out", str(tmp_path / "none")]) == 2
