"""End-to-end inline runs on real environments (tiny networks, a few steps): everything is wired and writes files."""

import json
from pathlib import Path

import pytest
import torch

from speedy.checkpoint import load_latest
from speedy.config import build_config
from speedy.evaluate_checkpoint import load_agent
from speedy.inline import run_inline
from speedy.metrics import read_metrics

TINY_MODEL = [
    "model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
    "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.mlp_latent=16",
    "model.mlp_hidden=[16]", "model.support_size=20", "run.num_threads=1",
]


def _check_run_dir(run_dir: Path, summary) -> None:
    assert summary.train_steps > 0 and summary.env_steps > 0
    assert (run_dir / "checkpoint.pt").exists()
    assert json.loads((run_dir / "summary.json").read_text())["train_steps"] == summary.train_steps
    train = read_metrics(run_dir / "metrics" / "train.jsonl")
    assert train and all(r["total_loss"] == r["total_loss"] for r in train)  # finite, not NaN
    assert read_metrics(run_dir / "metrics" / "eval.jsonl")
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_cartpole_inline_smoke(tmp_path):
    config = build_config("cartpole", overrides=[
        *TINY_MODEL, "run.max_env_steps=400", "train.training_steps=100", "run.max_train_steps=100",
        "replay.block_length=16",
        "replay.start_env_steps=64", "train.batch_size=16", "eval.episodes=2", "eval.interval=50",
        "mcts.num_simulations=4", "eval.num_simulations=4", "train.reanalyze_ratio=0.5",
        "train.target_update_interval=20", "run.stop_eval_return=0", "replay.refresh_interval=25",
        "eval.keep_weights=true",
    ])
    summary = run_inline(config, tmp_path, log=False)
    assert summary.train_steps == 100
    _check_run_dir(tmp_path, summary)
    # inline, a batch is sampled at the step that trains on it; the target model is at most 19 steps old (interval 20)
    staleness = [r for r in read_metrics(tmp_path / "metrics" / "train.jsonl") if "sample_lead_steps" in r]
    assert staleness and all(r["sample_lead_steps"] == 0 and 0 <= r["target_lag_steps"] < 20 for r in staleness)
    # eval.keep_weights: one checkpoint per evaluation, named by its training step; the last is the final weights the
    # evaluator plays (the preset's eval.ema_decay: an average of the trained ones)
    kept = sorted(p.name for p in (tmp_path / "evals").iterdir())
    assert kept == ["step-0000050", "step-0000100"]
    agent = load_agent(tmp_path / "evals" / "step-0000050", torch.device("cpu"), atari_only=False)
    assert agent.train_steps == 50 and agent.env_steps > 0
    final = load_latest(tmp_path / "checkpoint.pt", "cpu")["eval_model"]
    last = load_latest(tmp_path / "evals" / "step-0000100" / "checkpoint.pt", "cpu")["model"]
    assert all(torch.equal(last[k], v) for k, v in final.items())


def test_cartpole_inline_with_greedy_envs_and_averaged_acting_weights(tmp_path):
    """actor.greedy_envs, train.acting_ema_decay, the completed-Q rules (greedy action, policy targets of
    self-play and reanalysis) and the mirror augmentation wired through inline mode: it trains, and the checkpoint
    keeps the average beside (and apart from) the trained weights."""
    config = build_config("cartpole", overrides=[
        *TINY_MODEL, "run.max_env_steps=300", "train.training_steps=60", "run.max_train_steps=60",
        "replay.block_length=16", "replay.start_env_steps=64", "train.batch_size=16", "eval.episodes=2",
        "eval.interval=30", "mcts.num_simulations=4", "eval.num_simulations=4", "run.stop_eval_return=0",
        "actor.num_envs=4", "actor.greedy_envs=2", "train.acting_ema_decay=0.9", "mcts.greedy_action=completed_q",
        "mcts.policy_target=completed_q", "train.reanalyze_ratio=0.5", "train.mirror_signs=[-1,-1,-1,-1]",
        "train.mirror_actions=[1,0]", "eval.ema_decay=0.5", "eval.keep_weights=true",
    ])
    summary = run_inline(config, tmp_path, log=False)
    assert summary.train_steps == 60
    _check_run_dir(tmp_path, summary)
    record = load_latest(tmp_path / "checkpoint.pt", "cpu")
    trained, acting, evaluated = record["model"], record["acting_model"], record["eval_model"]
    assert any(not torch.equal(acting[k], v) for k, v in trained.items())
    assert any(not torch.equal(evaluated[k], acting[k]) for k in trained)  # the evaluator's average is its own
    played = load_latest(tmp_path / "evals" / "step-0000060" / "checkpoint.pt", "cpu")["model"]
    assert all(torch.equal(played[k], v) for k, v in evaluated.items())  # the last evaluation played it


@pytest.mark.timeout(240)
def test_atari_inline_smoke(tmp_path):
    """Breakout on the real ALE with the EfficientZero protocol, a tiny conv network and reanalysis."""
    config = build_config("atari100k", overrides=[
        *TINY_MODEL, "env.frame_size=48", "run.max_env_steps=240", "train.training_steps=6", "train.last_steps=0",
        "replay.block_length=10",
        "replay.start_env_steps=40", "train.batch_size=4", "eval.episodes=1", "eval.interval=1000",
        "mcts.num_simulations=3", "eval.num_simulations=2", "actor.num_envs=4", "env.max_frames_eval=400",
        "replay.capacity=2000",
    ])
    summary = run_inline(config, tmp_path, log=False)
    assert summary.env_steps >= 40 and summary.train_steps == 6
    _check_run_dir(tmp_path, summary)


def test_inline_sample_lead_trains_each_batch_that_many_steps_after_it_was_drawn(tmp_path):
    """train.inline_sample_lead = 3: the first step draws 4 batches; from then on each step trains the batch drawn
    3 steps before (the lead a multi-process pipeline has), and the metrics say so."""
    config = build_config("cartpole", overrides=[
        *TINY_MODEL, "run.max_env_steps=300", "train.training_steps=40", "run.max_train_steps=40",
        "replay.block_length=16", "replay.start_env_steps=64", "train.batch_size=16", "eval.episodes=1",
        "eval.interval=40", "mcts.num_simulations=4", "eval.num_simulations=4", "run.stop_eval_return=0",
        "train.inline_sample_lead=3",
    ])
    summary = run_inline(config, tmp_path, log=False)
    assert summary.train_steps == 40
    rows = {r["step"]: r for r in read_metrics(tmp_path / "metrics" / "train.jsonl") if "sample_lead_steps" in r}
    assert rows[1]["sample_lead_steps"] == 0  # the batch trained at step 0 was drawn at step 0
    assert all(rows[step]["sample_lead_steps"] == 3 for step in (20, 30, 40))  # steps 10-39, each 3 behind
