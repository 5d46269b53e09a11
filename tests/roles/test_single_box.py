"""The single-box system with real processes, real shared memory and real environments (tiny networks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from speedy.checkpoint import load_latest
from speedy.config import build_config
from speedy.evaluate_checkpoint import load_agent
from speedy.metrics import read_metrics
from speedy.roles.launch import run_single_box

from .conftest import TINY_MODEL, agent_rows, speedy_segments, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_tiny_atari_run_with_every_role(tmp_path, no_leftovers):
    config = build_config("atari100k", overrides=[
        *TINY_MODEL, "env.frame_size=48", "replay.block_length=10", "replay.start_env_steps=40",
        "replay.capacity=4000", "train.batch_size=4", "train.training_steps=8", "train.last_steps=0",
        "mcts.num_simulations=3",
        "eval.num_simulations=2", "eval.episodes=1", "eval.interval=4", "env.max_frames_eval=200",
        "actor.num_envs=2", "roles.actors=2", "roles.reanalyzers=2", "roles.refreshers=1",
        "roles.refresh_chunk=32", "run.max_env_steps=2000", "run.log_interval_s=1", "train.reanalyze_ratio=0.5",
    ])
    summary = run_single_box(config, tmp_path, log=False)
    assert summary.train_steps == 8
    assert summary.env_steps >= 40
    assert (tmp_path / "checkpoint.pt").exists()
    files = {p.stem for p in (tmp_path / "metrics").glob("*.jsonl")}
    assert {"agent", "replay", "trainer", "evaluator", "actor0", "actor1", "reanalyzer0", "reanalyzer1",
            "refresher0"} <= files
    assert read_metrics(tmp_path / "metrics" / "evaluator.jsonl")[-1]["event"] == "stop"
    roles = read_metrics(tmp_path / "metrics" / "agent.jsonl")[-1]["roles"]
    assert roles["reanalyzer0"]["items"] + roles["reanalyzer1"]["items"] >= 8  # both fed the trainer
    assert roles["refresher0"]["items"] > 0  # priorities refreshed
    # actors act at random until the first training step (EfficientZero), so an 8-step run may end before they search
    assert roles["trainer"]["busy_train"] > 0 and roles["actor0"]["busy_env"] + roles["actor1"]["busy_env"] > 0


def _cartpole_config(extra: list[str]):
    return build_config("cartpole", overrides=[
        *TINY_MODEL, "replay.start_env_steps=64", "replay.block_length=16", "train.batch_size=16",
        "mcts.num_simulations=4", "eval.interval=100000", "roles.actors=1", "roles.reanalyzers=1",
        "roles.refreshers=-1", "run.log_interval_s=1", "train.env_steps_per_train_step=0", *extra,
    ])


def _timeline(run_dir: Path, names: tuple[str, ...]) -> str:
    """The roles' metric rows as seconds since the first row (a failure message: what each role did when)."""
    keys = ("step", "env_steps", "weights_version", "busy_tree", "busy_inference", "busy_train", "wait_input",
            "wait_output", "other", "event")
    rows = [(r["time"], name, {k: r[k] for k in keys if k in r})
            for name in names for r in read_metrics(run_dir / "metrics" / f"{name}.jsonl")]
    start = min((t for t, _, _ in rows), default=0.0)
    return "\n".join(f"{t - start:7.2f} s {name}: {values}" for t, name, values in sorted(rows, key=lambda r: r[0]))


def _fraction(roles: dict, role: str, stage: str, seconds: float) -> float:
    return roles[role][stage] / seconds


@pytest.mark.timeout(300)
def test_slow_reanalyzer_starves_the_trainer_and_the_board_shows_why(tmp_path, no_leftovers):
    runs = {}
    for name, slow in (("normal", 0.0), ("slowed", 0.3)):
        config = _cartpole_config(["train.training_steps=25", f"roles.slow_reanalyzer_s={slow}",
                                   "roles.batches_in_flight=1"])
        run_dir = tmp_path / name
        run_dir.mkdir()
        summary = run_single_box(config, run_dir, log=False)
        roles = read_metrics(run_dir / "metrics" / "agent.jsonl")[-1]["roles"]
        runs[name] = (roles, summary.minutes * 60)
    normal, slowed = runs["normal"], runs["slowed"]
    # the trainer waits for batches much longer per step when its only reanalyzer is slowed
    wait_normal = normal[0]["trainer"]["wait_input"] / normal[0]["trainer"]["train_steps"]
    wait_slowed = slowed[0]["trainer"]["wait_input"] / slowed[0]["trainer"]["train_steps"]
    assert wait_slowed > wait_normal + 0.15
    # ... and the reanalyzer's own figures say why: it is busy (not waiting for samples) most of the time
    assert slowed[0]["reanalyzer0"]["busy_targets"] >= 0.25 * 25 * 0.8
    assert slowed[0]["reanalyzer0"]["wait_input"] < slowed[0]["reanalyzer0"]["busy_targets"]


@pytest.mark.timeout(300)
def test_replay_paces_priority_refresh_sweeps_by_training_steps(tmp_path, no_leftovers):
    """`replay.refresh_interval` = 10: at most one whole-buffer sweep per 10 training steps (back to back, a tiny
    buffer is swept hundreds of times in such a run). The trainer's rows say how far ahead of it replay sampled."""
    config = _cartpole_config(["train.training_steps=60", "roles.refreshers=1", "roles.refresh_chunk=64",
                               "replay.refresh_interval=10"])
    summary = run_single_box(config, tmp_path, log=False)
    assert summary.train_steps == 60
    roles = read_metrics(tmp_path / "metrics" / "agent.jsonl")[-1]["roles"]
    assert 2 <= roles["replay"]["sweeps"] <= 60 // 10 + 1
    assert roles["refresher0"]["items"] > 0
    # The trainer reports how stale its batches were: replay samples ahead of it (the samples ring fills at step 0,
    # so a batch trained at step 1 or later was drawn before), and targets bootstrap from an earlier target model.
    stats = [r for r in read_metrics(tmp_path / "metrics" / "trainer.jsonl") if "sample_lead_steps" in r]
    assert stats and all(r["sample_lead_steps"] >= 0 and r["target_lag_steps"] >= 0 for r in stats)
    assert max(r["sample_lead_steps"] for r in stats) > 0


@pytest.mark.timeout(300)
def test_a_pipeline_one_message_deep_trains_to_the_end(tmp_path, no_leftovers):
    """Every ring and queue between replay and the optimizer one batch deep (the shallowest pipeline, for batches
    trained soon after their draw): the run neither deadlocks nor starves, and every step is trained."""
    config = _cartpole_config(["train.training_steps=40", "roles.sample_ring_messages=1", "roles.batches_in_flight=1",
                               "roles.batch_ring_messages=1", "roles.trainer_prefetch=1"])
    summary = run_single_box(config, tmp_path, log=False)
    assert summary.train_steps == 40
    stats = [r for r in read_metrics(tmp_path / "metrics" / "trainer.jsonl") if "sample_lead_steps" in r]
    assert stats and all(r["sample_lead_steps"] >= 0 for r in stats)


@pytest.mark.timeout(300)
def test_acting_roles_play_with_the_averaged_weights(tmp_path, no_leftovers):
    """train.acting_ema_decay > 0: the trainer publishes the Polyak average to its own slot and the actor and
    refresher pull it; eval.ema_decay > 0: the evaluator pulls an average of its own from another slot. The
    checkpoint keeps both beside the trained weights, and --evaluate plays the evaluator's."""
    config = _cartpole_config(["train.training_steps=60", "train.acting_ema_decay=0.9", "roles.refreshers=1",
                               "roles.refresh_chunk=64", "eval.interval=20", "eval.episodes=2",
                               "eval.num_simulations=2", "actor.weight_update_interval=5",
                               "actor.greedy_envs=1", "roles.search_groups=2",
                               "train.mirror_signs=[-1,-1,-1,-1]", "train.mirror_actions=[1,0]",  # trainer mirrors
                               "eval.keep_weights=true", "eval.ema_decay=0.5",  # and the evaluator its own
                               "train.env_steps_per_train_step=8",  # bounded: the actor searches and pulls
                               # the trainer is not bound by the actor: at full speed it could end all 60 steps
                               # before the actor's first pull (CI did, on hosts fast and slow); 100 ms per step
                               # gives the actor 6 s to search and pull
                               "roles.slow_trainer_s=0.1"])
    summary = run_single_box(config, tmp_path, log=False)
    assert summary.train_steps == 60
    roles = read_metrics(tmp_path / "metrics" / "agent.jsonl")[-1]["roles"]
    assert roles["actor0"]["weights_version"] >= 5, _timeline(tmp_path, ("actor0", "trainer"))
    assert roles["refresher0"]["items"] > 0
    evals = [r for r in read_metrics(tmp_path / "metrics" / "evaluator.jsonl") if "mean_return" in r]
    assert evals and max(r["step"] for r in evals) >= 20  # the versions of the average it played
    kept = {int(p.name.removeprefix("step-")) for p in (tmp_path / "evals").iterdir()}
    assert kept == {r["step"] for r in evals}  # eval.keep_weights: the weights of every evaluation
    assert load_agent(tmp_path / "evals" / f"step-{max(kept):07d}", torch.device("cpu"),
                      atari_only=False).train_steps == max(kept)
    record = load_latest(tmp_path / "checkpoint.pt", "cpu")
    acting, trained, evaluated = record["acting_model"], record["model"], record["eval_model"]
    assert acting.keys() == trained.keys() == evaluated.keys()
    assert any(not torch.equal(acting[k], trained[k]) for k in trained)  # an average lags the weights
    assert any(not torch.equal(evaluated[k], acting[k]) for k in trained)  # eval.ema_decay: another average
    played = load_agent(tmp_path, torch.device("cpu"), atari_only=False).model.state_dict()  # what --evaluate plays
    assert all(torch.equal(played[k], v) for k, v in evaluated.items())


@pytest.mark.timeout(300)
def test_two_ddp_trainers_train_in_step_on_batches_from_every_reanalyzer(tmp_path, no_leftovers):
    config = _cartpole_config(["roles.trainers=2", "roles.reanalyzers=2", "train.training_steps=30",
                               "roles.refreshers=1", "roles.refresh_chunk=64"])
    summary = run_single_box(config, tmp_path, log=False)
    assert summary.train_steps == 30 and (tmp_path / "checkpoint.pt").exists()
    roles = read_metrics(tmp_path / "metrics" / "agent.jsonl")[-1]["roles"]
    assert roles["trainer1"]["train_steps"] == 30 and roles["trainer1"]["busy_train"] > 0
    assert roles["reanalyzer0"]["items"] + roles["reanalyzer1"]["items"] >= 60  # a batch per trainer per step
    stats = [{r["step"]: r for r in read_metrics(tmp_path / "metrics" / f"{name}.jsonl") if "grad_norm" in r}
             for name in ("trainer", "trainer1")]
    common = sorted(set(stats[0]) & set(stats[1]))
    assert common, "both trainers log their step statistics"
    for step in common:  # one averaged gradient, two different batches
        assert stats[0][step]["grad_norm"] == pytest.approx(stats[1][step]["grad_norm"], rel=1e-5)
    assert any(stats[0][s]["total_loss"] != stats[1][s]["total_loss"] for s in common)


@pytest.mark.timeout(300)
def test_kill_restart_pause_and_ctrl_c(tmp_path, no_leftovers):
    """SIGKILL an actor → restarted; SIGUSR1 → paused and idle; SIGINT → stops within seconds, checkpoint kept,
    no process or shared memory left."""
    before = speedy_segments()
    overrides = [*TINY_MODEL, "replay.start_env_steps=64", "replay.block_length=16", "train.batch_size=16",
                 "mcts.num_simulations=4", "eval.interval=100000", "roles.actors=1", "roles.reanalyzers=1",
                 "roles.refreshers=-1", "run.log_interval_s=0.5", "train.training_steps=100000"]
    cmd = [sys.executable, str(REPO / "run.py"), "--preset", "cartpole", "--run-dir", str(tmp_path)]
    for item in overrides:
        cmd += ["--set", item]
    # started with SIGINT ignored, as a script's background job is (and CI's may be): `kill -INT` still stops it
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        rows = wait_for(lambda: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > 5 and r,
                         150, "training to start")
        actor_pid = int(rows["actor0"]["pid"])
        os.kill(actor_pid, signal.SIGKILL)
        rows = wait_for(lambda: (r := agent_rows(tmp_path)) and r["actor0"]["restarts"] >= 1 and
                         int(r["actor0"]["pid"]) not in (0, actor_pid) and r, 90, "actor0 to be restarted")
        steps = rows["actor0"]["env_steps"]
        wait_for(lambda: (r := agent_rows(tmp_path)) and r["actor0"]["env_steps"] > steps, 60,
                  "the restarted actor to collect")
        os.kill(agent.pid, signal.SIGUSR1)  # pause
        time.sleep(3.0)
        tree = [psutil.Process(agent.pid), *psutil.Process(agent.pid).children(recursive=True)]
        start = {p.pid: sum(p.cpu_times()[:2]) for p in tree}
        time.sleep(3.0)
        used = sum(sum(p.cpu_times()[:2]) - start[p.pid] for p in tree if p.is_running())
        assert used / 3.0 < 0.25, f"paused run used {used / 3.0:.2f} cores"
        os.kill(agent.pid, signal.SIGINT)
        t0 = time.monotonic()
        output, _ = agent.communicate(timeout=60)
        assert time.monotonic() - t0 < 30, "Ctrl-C took too long"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, output[-3000:]
    assert "interrupted" in output
    assert (tmp_path / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["train_steps"] > 5
    assert speedy_segments() - before == set()
