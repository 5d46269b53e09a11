"""A run survives what kills runs: the node agent SIGKILLed leaves no orphan role and the next start cleans up;
SIGTERM writes a checkpoint that `--resume` continues from with the same counters, weights, optimizer and replay."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from speedy.metrics import read_metrics

from .conftest import TINY_MODEL, speedy_segments

REPO = Path(__file__).resolve().parents[2]
SMALL = [*TINY_MODEL, "replay.start_env_steps=64", "replay.block_length=16", "train.batch_size=16",
         "mcts.num_simulations=4", "eval.interval=100000", "roles.actors=1", "roles.reanalyzers=1",
         "roles.refreshers=-1", "run.log_interval_s=0.5", "train.training_steps=100000"]


def agent_rows(run_dir: Path) -> dict | None:
    path = run_dir / "metrics" / "agent.jsonl"
    records = read_metrics(path) if path.exists() else []
    return records[-1]["roles"] if records else None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def start_run(run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "run.py"), "--preset", "cartpole", "--run-dir", str(run_dir), *extra]
    for item in SMALL:
        cmd += ["--set", item]
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
