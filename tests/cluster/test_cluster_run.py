"""A real training run over torchrun on loopback: node 0 combined, the other nodes reanalysis nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speedy.metrics import read_metrics
from speedy.profile import analyze
from speedy.shm import cleanup_stale

from .test_bridge import free_port, kill_node

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
        "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.mlp_latent=16",
        "model.mlp_hidden=[16]", "model.support_size=20", "replay.start_env_steps=64", "replay.block_length=16",
        "train.batch_size=16", "mcts.num_simulations=4", "eval.interval=100000", "eval.episodes=1",
        "roles.refreshers=-1", "run.log_interval_s=1", "train.training_steps=100000"]


def run_file(tmp_path: Path, reanalysis_nodes: int, trainers: int = 1) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(f"""preset = "cartpole"
[cluster]
interface = "lo"
rpc_timeout_s = 10.0
[[cluster.nodes]]
kind = "combined"
trainers = {trainers}
actors = 1
reanalyzers = 1
[[cluster.nodes]]
kind = "reanalysis"
count = {reanalysis_nodes}
reanalyzers = 1
""")
    return path


def start_cluster(tmp_path: Path, world: int, train_steps: int, trainers: int = 1) -> list[subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    config = run_file(tmp_path, world - 1, trainers)
    nodes = []
    for rank in range(world):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={world}", "--nproc-per-node=1",
               "--max-restarts=0", "--rdzv-backend=static", "--master-addr=127.0.0.1", f"--master-port={port}",
               f"--node-rank={rank}", str(REPO / "run.py"), "--config", str(config), "--run-dir",
               str(tmp_path / "run"), "--max-train-steps", str(train_steps), "--set", "roles.actors=1"]
        for item in TINY:
            cmd += ["--set", item]
        log = (tmp_path / f"node{rank}.log").open("w")
        nodes.append(subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return nodes


def log_of(tmp_path: Path, rank: int) -> str:
    return (tmp_path / f"node{rank}.log").read_text(errors="replace")


def wait_for_line(tmp_path: Path, rank: int, text: str, deadline: float) -> None:
    """Poll node `rank`'s log until it contains `text` (AssertionError with the log's tail at `deadline`)."""
    while text not in log_of(tmp_path, rank):
        assert time.monotonic() < deadline, log_of(tmp_path, rank)[-3000:]
        time.sleep(1.0)


def batches_made(path: Path) -> int:
    records = read_metrics(path) if path.exists() else []
    return int(max((r.get("items", 0) for r in records), default=0))


@pytest.mark.timeout(400)
def test_reanalysis_node_feeds_two_ddp_trainers_and_everything_stops_at_the_end(tmp_path):
    nodes = start_cluster(tmp_path, 2, 60, trainers=2)
    try:
        for node in nodes:
            node.wait(timeout=360)
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
                node.wait()
        cleanup_stale()
    outputs = [log_of(tmp_path, rank) for rank in range(2)]
    assert [n.returncode for n in nodes] == [0, 0], "\n=====\n".join(o[-3000:] for o in outputs)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_steps"] == 60
    assert batches_made(tmp_path / "run" / "node1" / "metrics" / "reanalyzer1.jsonl") > 0
    assert "2 DDP trainers" in outputs[0]
    roles = read_metrics(tmp_path / "run" / "metrics" / "agent.jsonl")[-1]["roles"]
    assert roles["trainer1"]["train_steps"] == 60 and roles["trainer1"]["busy_train"] > 0
    assert "lost nodes: none" in outputs[0]
    assert "exited with code" not in outputs[1], outputs[1][-3000:]  # no remote reanalyzer crashed (e.g. frames late)
    profile = analyze(tmp_path / "run", window=(0, None))  # one profile over both nodes, the whole run
    names = {p.name for p in profile.processes}
    assert {"trainer", "trainer1", "reanalyzer0", "node1/reanalyzer1"} <= names, names
    assert profile.kinds["reanalyzer"].instances == 2
    [link] = profile.links  # node 1's traffic with node 0, per training step
    assert link.node == "node1" and link.train_steps > 0
    assert all(link.bytes_per_step[k] > 0 for k in ("frames_in", "weights_in", "samples_in", "batches_out")), link
    assert "[node1] link to node0:" in outputs[1] and "KiB per training step" in outputs[1]


@pytest.mark.timeout(400)
def test_a_lost_reanalysis_node_does_not_stop_training(tmp_path):
    """Node 2 is SIGKILLed once it has fed the trainer: node 0 reports it lost and trains to the end, node 1 stops
    when told. (The surviving torchrun launchers then wait in torchrun's exit barrier for the dead node: their workers
    have finished and written everything, so the test stops the launchers once the workers say so.)"""
    nodes = start_cluster(tmp_path, 3, 120)
    try:
        deadline = time.monotonic() + 240
        metrics = tmp_path / "run" / "node2" / "metrics" / "reanalyzer2.jsonl"
        while batches_made(metrics) == 0:
            assert time.monotonic() < deadline, "node 2 never produced a batch"
            time.sleep(1.0)
        kill_node(nodes[2])
        deadline = time.monotonic() + 300
        wait_for_line(tmp_path, 0, "lost nodes:", deadline)
        wait_for_line(tmp_path, 1, "[node1] stopped: node0 ended the run", deadline)
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
            node.wait()
        cleanup_stale()
    head = log_of(tmp_path, 0)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["train_steps"] == 120
    assert "lost node2" in head and "lost nodes: ['node2']" in head
