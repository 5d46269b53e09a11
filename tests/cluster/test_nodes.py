"""The node map: cluster.toml's [cluster] against a torchrun world, and every refusal naming its key."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from speedy.cluster.bootstrap import torchrun_world
from speedy.cluster.nodes import ClusterError, parse_cluster

PAPER = {"interface": "eth0", "nodes": [
    {"kind": "trainer", "devices": 8, "trainers": 8},
    {"kind": "data", "devices": 8, "actors": 16, "refreshers": 4},
    {"kind": "reanalysis", "count": 9, "devices": 4, "reanalyzers": 16},
]}


def test_speedyzero_layout_maps_ranks_in_file_order():
    spec = parse_cluster(PAPER, 11)
    assert [n.kind for n in spec.nodes] == ["trainer", "data"] + ["reanalysis"] * 9
    assert spec.trainer_node.rank == 0 and spec.replay_node.rank == 1 and spec.node(10).name == "node10"
    assert spec.total("reanalyzers") == 144 and spec.total("trainers") == 8 and spec.interface == "eth0"


def test_explicit_ranks_and_a_combined_single_node():
    spec = parse_cluster({"nodes": [{"kind": "reanalysis", "reanalyzers": 2, "rank": 0},
                                    {"kind": "combined", "actors": 1, "reanalyzers": 1}]}, 2)
    assert spec.node(0).kind == "reanalysis" and spec.node(1).kind == "combined" and spec.node(1).trainers == 1


@pytest.mark.parametrize("table, world, message", [
    (PAPER, 3, "describes 11 nodes (counts included) but torchrun started 3"),
    ({"nodes": [{"kind": "trainer"}, {"kind": "reanalysis", "reanalyzers": 1}]}, 2, "0 nodes host replay"),
    ({"nodes": [{"kind": "combined", "actors": 1, "reanalyzers": 1}, {"kind": "data", "actors": 1}]}, 2,
     "2 nodes host replay (ranks [0, 1])"),
    ({"nodes": [{"kind": "trainer"}, {"kind": "data", "actors": 1}]}, 2, "no node runs reanalyzers"),
    ({"nodes": [{"kind": "trainer", "devices": 2, "trainers": 4}, {"kind": "combined"}]}, 2,
     "cluster.nodes[0].trainers = 4: the node has 2 devices"),
    ({"nodes": [{"kind": "reanalyser"}]}, 1, "cluster.nodes[0].kind = 'reanalyser': expected one of"),
    ({"nodes": [{"kind": "data", "reanalyzers": 3}]}, 1, "cluster.nodes[0].reanalyzers = 3: a data node runs no"),
    ({"nodes": [{"kind": "data", "actor": 3}]}, 1, "cluster.nodes[0]: unknown key 'actor'"),
    ({"nodes": [{"kind": "combined", "rank": 4}]}, 1, "cluster.nodes[0].rank = 4: the torchrun world has ranks 0..0"),
    ({"nodes": [{"kind": "reanalysis", "count": 0}]}, 1, "cluster.nodes[0].count = 0: expected an integer >= 1"),
    ({"nodes": []}, 1, "cluster.nodes is missing"),
    ({"nodes": [{"kind": "combined", "actors": 1, "reanalyzers": 1}], "timeout": 3}, 1, "unknown key cluster.timeout"),
])
def test_impossible_layouts_are_refused_naming_the_key(table, world, message):
    with pytest.raises(ClusterError, match=re.escape(message)):
        parse_cluster(table, world)


def test_torchrun_world_from_its_variables():
    assert torchrun_world({}) is None
    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": "2", "WORLD_SIZE": "3", "MASTER_ADDR": "h", "MASTER_PORT": "29500",
           "LOCAL_WORLD_SIZE": "1"}
    world = torchrun_world(env)
    assert (world.rank, world.world_size, world.master_addr, world.master_port) == (2, 3, "h", 29500)
    with pytest.raises(ClusterError, match="--nproc-per-node=1"):
        torchrun_world({**env, "LOCAL_WORLD_SIZE": "8"})
    with pytest.raises(ClusterError, match="--max-restarts=0"):
        torchrun_world({**env, "TORCHELASTIC_RESTART_COUNT": "1"})


def test_pack_unpack_and_deliver_take_what_fits(tmp_path):
    import uuid

    from speedy.cluster.bridge import BridgeError, deliver, pack, register_inbound, unpack, unregister_inbound
    from speedy.shm import Ring, unlink_owned

    records = [b"", b"abc", bytes(range(200))]
    data, lengths = pack(records)
    assert [bytes(r) for r in unpack(data, lengths)] == records
    with pytest.raises(BridgeError, match="does not split"):
        unpack(data, lengths + 1)
    ring = Ring.create(f"c{uuid.uuid4().hex[:6]}", "in", 256)
    try:
        register_inbound("in", ring.writer())
        with pytest.raises(BridgeError, match="already registered"):
            register_inbound("in", ring.writer())
        big = [bytes([k]) * 100 for k in range(4)]  # 112 ring bytes each: two fit in 256
        assert deliver("in", *pack(big), 0.05) == 2
        reader = ring.reader()
        assert reader.get_bytes() == big[0] and reader.get_bytes() == big[1]
        assert deliver("in", *pack(big[2:]), 0.05) == 2
        assert deliver("out", *pack(big), 0.05) == -1  # no such channel (yet): the sender retries
    finally:
        unregister_inbound("in")
        ring.close()
        unlink_owned()


def test_run_py_under_torchrun_checks_the_node_map_before_starting(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "t", "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "1", "LOCAL_WORLD_SIZE": "1"}
    run_file = tmp_path / "cluster.toml"
    run_file.write_text("preset = 'cartpole'\n[[cluster.nodes]]\nkind = 'combined'\nactors = 1\nreanalyzers = 1\n")
    out = subprocess.run([sys.executable, str(repo / "run.py"), "--config", str(run_file)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "describes 1 nodes (counts included) but torchrun started 2" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()


def test_a_combined_node_may_leave_all_reanalysis_to_the_reanalysis_nodes():
    spec = parse_cluster({"nodes": [{"kind": "combined", "actors": 1, "reanalyzers": -1},
                                    {"kind": "reanalysis", "count": 2, "reanalyzers": 1}]}, 3)
    assert spec.node(0).reanalyzers == -1 and spec.total("reanalyzers") == 2
    with pytest.raises(ClusterError, match="no node runs reanalyzers"):
        parse_cluster({"nodes": [{"kind": "combined", "actors": 1, "reanalyzers": -1}]}, 1)
    with pytest.raises(ClusterError, match=r"cluster.nodes\[1\].reanalyzers = -1: expected an integer >= 0"):
        parse_cluster({"nodes": [{"kind": "combined", "actors": 1}, {"kind": "reanalysis", "reanalyzers": -1}]}, 2)


def test_nodes_are_placed_by_host_when_every_node_names_one():
    from speedy.cluster.bootstrap import TorchrunWorld, place_node

    table = {"nodes": [{"kind": "trainer", "host": "gpu-a"}, {"kind": "data", "actors": 1, "host": "cpu-b"},
                       {"kind": "reanalysis", "reanalyzers": 1, "host": "cpu-c.example.org"}]}
    spec = parse_cluster(table, 3)
    assert spec.hosts == {0: "gpu-a", 1: "cpu-b", 2: "cpu-c.example.org"}
    world = TorchrunWorld(rank=0, world_size=3, master_addr="x", master_port=1, restart_count=0)
    placed = place_node(world, spec.hosts, "cpu-b.example.org")  # the c10d rendezvous made it torchrun rank 0
    assert (placed.rank, placed.rpc_rank) == (1, 0)
    assert place_node(world, {}, "anything") == world  # no hosts: torchrun's (static) rank
    with pytest.raises(ClusterError, match="host 'gpu-z' is named by 0 cluster.nodes tables"):
        place_node(world, spec.hosts, "gpu-z")
    with pytest.raises(ClusterError, match="1 of 2 nodes name a host"):
        parse_cluster({"nodes": [{"kind": "combined", "actors": 1, "host": "a"}, {"kind": "reanalysis"}]}, 2)


LEAVE = """
import os, sys, time
from speedy.cluster.bootstrap import TorchrunWorld, init_rpc, leave_rpc_and_exit
from speedy.cluster.ddp import free_port
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), TP_SOCKET_IFNAME="lo")
init_rpc(TorchrunWorld(0, 1, "127.0.0.1", int(os.environ["MASTER_PORT"]), 0), timeout_s=5.0)
if sys.argv[1] == "stuck":  # a shutdown that never returns, as one waiting on a request from a hung peer
    from torch.distributed import rpc
    rpc.shutdown = lambda graceful=True: time.sleep(600)
leave_rpc_and_exit(int(sys.argv[2]), timeout_s=1.0)
print("not reached")
"""


@pytest.mark.parametrize("how", ["clean", "stuck"])
def test_leaving_rpc_ends_the_process_with_its_code_even_if_shutdown_hangs(how):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", LEAVE, how, "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr[-2000:]
    assert "not reached" not in out.stdout
    assert ("exiting without it" in out.stdout) == (how == "stuck"), out.stdout
    assert time.monotonic() - started < 30
