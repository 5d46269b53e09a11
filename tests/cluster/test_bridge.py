"""Real torchrun on loopback: node agents bridge ring records over torch.distributed.rpc, and a killed node does
not stop the others (../shared/DESIGN.md §2's recipe: one torchrun per node, static rendezvous, --max-restarts=0)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from speedy.cluster.ddp import free_port
from speedy.cluster.loopback import kill_node, torchrun_command
from speedy.shm import cleanup_stale

SCRIPT = Path(__file__).with_name("bridge_node.py")
REPO = Path(__file__).resolve().parents[2]


def start_nodes(world: int, out: Path, messages: int) -> list[subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "TP_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "SPEEDY_TEST_OUT": str(out), "SPEEDY_TEST_MESSAGES": str(messages),
           "SPEEDY_TEST_RUN": f"b{uuid.uuid4().hex[:6]}", "PYTHONPATH": str(REPO)}
    return [subprocess.Popen(torchrun_command(world, rank, port, SCRIPT, []), env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            for rank in range(world)]


def finish(nodes: list[subprocess.Popen], timeout: float) -> list[str]:
    """Outputs of the nodes once they exit (killed after `timeout` s)."""
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            kill_node(node)
            outputs.append(node.communicate()[0])
    return outputs


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.2)


@pytest.mark.timeout(240)
def test_records_cross_nodes_intact_and_in_order(tmp_path):
    nodes = start_nodes(2, tmp_path, 600)
    outputs = finish(nodes, 180)
    assert all(n.returncode == 0 for n in nodes), outputs
    sender = json.loads((tmp_path / "rank0.json").read_text())
    receiver = json.loads((tmp_path / "rank1.json").read_text())
    assert receiver == {"messages": 600, "clean": True, "mismatches": 0, "out_of_order": 0, "errors": []}
    assert sender["lost"] == {} and sender["finished"] == {"node1": True} and sender["delivered"] == {"node1": 600}


@pytest.mark.timeout(240)
def test_a_killed_node_is_detected_and_the_others_carry_on(tmp_path):
    """Node 2 is SIGKILLed mid-stream: node 0 notices within seconds and finishes its stream to node 1, which gets
    every message intact. (The surviving torchrun launchers then sit in torchrun's 300 s exit barrier, waiting for
    the dead node; their workers are done, so the test stops them once the results are written.)"""
    nodes = start_nodes(3, tmp_path, 1500)
    try:
        for rank in range(3):
            wait_for(tmp_path / f"rank{rank}.up", 120)
        time.sleep(1.0)
        killed_at = time.time()
        kill_node(nodes[2])
        for rank in (0, 1):
            wait_for(tmp_path / f"rank{rank}.json", 150)
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
            node.communicate()
        cleanup_stale()  # the killed node's shared memory (a dead machine takes its own with it)
    sender = json.loads((tmp_path / "rank0.json").read_text())
    assert set(sender["lost"]) == {"node2"} and sender["lost"]["node2"] - killed_at < 35  # deadline 30 s
    assert sender["finished"]["node1"] and sender["delivered"]["node1"] == 1500
    assert 0 < sender["delivered"]["node2"] < 1500
    receiver = json.loads((tmp_path / "rank1.json").read_text())
    assert receiver["messages"] == 1500 and receiver["clean"]
    assert not (tmp_path / "rank2.json").exists()
