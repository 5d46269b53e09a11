"""A run survives what kills runs: the node agent SIGKILLed leaves no orphan role and the next start cleans up;
SIGTERM writes a checkpoint that `--resume` continues from with the same counters, weights, optimizer and replay."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .conftest import TINY_MODEL, agent_rows, speedy_segments, wait_for

REPO = Path(__file__).resolve().parents[2]
SMALL = [*TINY_MODEL, "replay.start_env_steps=64", "replay.block_length=16", "train.batch_size=16",
         "mcts.num_simulations=4", "eval.interval=100000", "roles.actors=1", "roles.reanalyzers=1",
         "roles.refreshers=-1", "run.log_interval_s=0.5", "train.training_steps=100000"]


def start_run(run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "run.py"), "--preset", "cartpole", "--run-dir", str(run_dir)]
    for item in SMALL:
        cmd += ["--set", item]
    cmd += extra  # after SMALL, so that its --set items win
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


@pytest.mark.timeout(300)
def test_sigkill_of_the_agent_leaves_no_orphans_and_the_next_start_cleans_up(tmp_path, no_leftovers):
    before = speedy_segments()
    agent = start_run(tmp_path)
    try:
        rows = wait_for(lambda: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > 2 and r, 150,
                        "training to start")
        roles = [psutil.Process(int(v["pid"])) for k, v in rows.items() if k != "agent" and v.get("pid")]
        assert len(roles) >= 4 and all(p.is_running() for p in roles)
        agent.kill()
        output, _ = agent.communicate(timeout=10)
        run_id = re.search(r"shared memory speedy_(\w+)_\*", output).group(1)
        t0 = time.monotonic()
        gone, alive = psutil.wait_procs(roles, timeout=10)
        assert not alive, f"roles still running {time.monotonic() - t0:.1f} s after the agent died: {alive}"
        mine = {name for name in speedy_segments() - before if name.startswith(f"speedy_{run_id}_")}
        assert mine, "the killed agent had no chance to remove its segments"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    out = subprocess.run([sys.executable, str(REPO / "run.py"), "--cleanup"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0 and "removed" in out.stdout
    assert not {name for name in speedy_segments() if name.startswith(f"speedy_{run_id}_")}


@pytest.mark.timeout(400)
def test_sigterm_then_resume_continues_from_the_saved_state(tmp_path, no_leftovers):
    import numpy as np
    import torch

    from speedy.checkpoint import state_digest

    agent = start_run(tmp_path, "--set", "run.checkpoint_interval_steps=5")
    try:
        wait_for(lambda: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > 12, 150, "training")
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, output[-3000:]
    for name in ("checkpoint.pt", "checkpoint.pt.prev", "replay.npz", "frames.npz"):
        assert (tmp_path / name).exists(), name
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    steps, env_steps = saved["train_steps"], saved["env_steps"]
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as replay:
        positions = int(replay["num_positions"])
        replay_digest = state_digest({k: torch.from_numpy(np.asarray(v)) for k, v in replay.items()
                                      if k != "sampler_rng"})
    assert positions > 0 and steps > 12

    more = steps + 6
    resumed = subprocess.run([sys.executable, str(REPO / "run.py"), "--resume", str(tmp_path),
                              "--max-train-steps", str(more), "--set", "eval.episodes=1"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert f"resuming at train step {steps}, env step {env_steps} (with the replay buffer)" in out
    assert f"[replay] resumed with {positions} positions" in out
    weights = state_digest(saved["model"])[:16]
    optimizer = state_digest(saved["optimizer"]["state"])[:16]
    told = [line for line in out.splitlines() if "[trainer]" in line or "resuming" in line]
    expected = f"[trainer] resumed at step {steps}: weights {weights}, optimizer state of step {steps} {optimizer}"
    assert expected in out, (expected, told)
    with np.load(tmp_path / "replay.resumed.npz", allow_pickle=False) as replay:
        assert state_digest({k: torch.from_numpy(np.asarray(v)) for k, v in replay.items()
                             if k != "sampler_rng"}) == replay_digest
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_steps"] == more and summary["env_steps"] >= env_steps
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["train_steps"] == more


def test_resume_errors_are_one_line_with_exit_code_2(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True,
                              cwd=REPO, timeout=120)

    missing = run("--resume", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no config.json there" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "config.json").write_text("{}")
    no_checkpoint = run("--resume", str(tmp_path), "--set", "roles.actors=1", "--set", "roles.reanalyzers=1")
    assert no_checkpoint.returncode == 2 and "cannot resume" in no_checkpoint.stderr
    assert "checkpoint.pt does not exist" in no_checkpoint.stderr and "Traceback" not in no_checkpoint.stderr
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    broken = run("--resume", str(tmp_path))
    assert broken.returncode == 2 and "truncated or corrupt" in broken.stderr
    clash = run("--resume", str(tmp_path), "--preset", "cartpole")
    assert clash.returncode == 2 and "--resume takes the run's own config" in clash.stderr


@pytest.mark.timeout(420)
def test_kill_9_of_each_role_kind_once_and_the_run_still_finishes(tmp_path, no_leftovers):
    """SIGKILL replay, trainer, evaluator, a reanalyzer, a refresher and an actor, one after the other: each is
    restarted (and counted in the metrics and the summary), and the run trains to its limit."""
    # 100 ms a training step: at full speed the trainer (not bound by the actors) ended all 400 steps before the last
    # victim was killed (CI, 2026-11-27), and training could not "go on" after it
    agent = start_run(tmp_path, "--set", "roles.refreshers=1", "--set", "run.checkpoint_interval_steps=5",
                      "--set", "roles.slow_trainer_s=0.1", "--max-train-steps", "400")
    victims = ["replay", "trainer", "evaluator", "reanalyzer0", "refresher0", "actor0"]
    try:
        wait_for(lambda: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > 5, 150, "training")
        for name in victims:
            rows = agent_rows(tmp_path)
            pid = int(rows[name]["pid"])
            steps = rows["trainer"]["train_steps"]
            psutil.Process(pid).kill()
            wait_for(lambda n=name, p=pid: (r := agent_rows(tmp_path)) and r[n]["restarts"] >= 1
                     and int(r[n]["pid"]) not in (0, p), 90, f"{name} to be restarted")
            wait_for(lambda s=steps: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > s + 2, 120,
                     f"training to go on after killing {name}")
        output, _ = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_steps"] == 400
    assert summary["restarts"] == dict.fromkeys(victims, 1), summary["restarts"]
    assert "restarts " in output  # the progress line shows them


@pytest.mark.timeout(300)
def test_kill_9_of_the_fork_server_ends_its_roles_and_the_agent_restarts_them(tmp_path, no_leftovers):
    """Roles are forked by the agent's fork server, the only process that can report their exits. Killed on its own
    (the OOM killer's pick, say), its roles end rather than run on unseen; the agent restarts each of them from a
    new server (no two copies of a role at once) and the run trains to its limit."""
    agent = start_run(tmp_path, "--set", "roles.slow_trainer_s=0.05", "--max-train-steps", "200")
    try:
        rows = wait_for(lambda: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > 5 and r, 150,
                        "training")
        roles = {name: int(row["pid"]) for name, row in rows.items() if name != "agent" and row.get("pid")}
        [server] = [p for p in psutil.Process(agent.pid).children() if "forkserver" in " ".join(p.cmdline())]
        assert all(psutil.Process(pid).ppid() == server.pid for pid in roles.values())
        steps = rows["trainer"]["train_steps"]
        server.kill()
        gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in roles.values()], timeout=10)
        assert not alive, f"roles of the killed fork server still running: {alive}"
        wait_for(lambda: (r := agent_rows(tmp_path)) and r["trainer"]["train_steps"] > steps + 2, 120,
                 "training to go on from restarted roles")
        output, _ = agent.communicate(timeout=200)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_steps"] == 200
    assert summary["restarts"] == dict.fromkeys(roles, 1), summary["restarts"]


@pytest.mark.timeout(400)
def test_after_kill_9_resume_takes_the_periodic_replay_snapshot_and_its_journaled_frames(tmp_path, no_leftovers):
    import numpy as np
    import torch

    from speedy.checkpoint import state_digest
    from speedy.roles.resume import read_journal

    agent = start_run(tmp_path, "--set", "run.checkpoint_interval_steps=5", "--set",
                      "run.replay_snapshot_interval_min=0.05")
    try:
        def snapshotted():  # noqa: ANN202
            journal = read_journal(tmp_path)
            # the checkpoint too: under load the trainer can pass 5 steps before its first periodic one is written
            if journal is None or not (tmp_path / "replay.npz").exists() or not (tmp_path / "checkpoint.pt").exists():
                return None
            with np.load(tmp_path / "replay.npz", allow_pickle=False) as saved:
                ok = int(saved["snapshot_serial"]) == journal[0] and int(saved["num_positions"]) > 0
            rows = agent_rows(tmp_path)
            return ok and rows and rows["trainer"]["train_steps"] > 5
        wait_for(snapshotted, 200, "a replay snapshot with its frames journaled, and a checkpoint")
        agent.kill()  # no clean stop: no final replay.npz, no frames.npz
        agent.communicate(timeout=10)
        time.sleep(3)  # the roles follow their agent within about a second
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert not (tmp_path / "frames.npz").exists()
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as replay:
        positions = int(replay["num_positions"])
        digest = state_digest({k: torch.from_numpy(np.asarray(v)) for k, v in replay.items()
                               if k not in ("sampler_rng", "snapshot_serial")})
    steps = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["train_steps"]
    resumed = subprocess.run([sys.executable, str(REPO / "run.py"), "--resume", str(tmp_path),
                              "--max-train-steps", str(steps + 5), "--set", "eval.episodes=1"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "replay buffer and frames from the frame journal" in out
    assert "(with the replay buffer)" in out and f"[replay] resumed with {positions} positions" in out
    with np.load(tmp_path / "replay.resumed.npz", allow_pickle=False) as replay:
        assert state_digest({k: torch.from_numpy(np.asarray(v)) for k, v in replay.items()
                             if k not in ("sampler_rng", "snapshot_serial")}) == digest
