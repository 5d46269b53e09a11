"""Where a cluster's roles, channels and replicas live (speedy/roles/cluster_agent.Placement): pure, no processes."""

from __future__ import annotations

from collections import Counter

import pytest

from speedy.cluster.nodes import ClusterError, parse_cluster
from speedy.config import Config
from speedy.roles.cluster_agent import Placement, channel_kind, check_supported, cluster_config
from speedy.roles.context import RolePlan

PAPER = {"nodes": [
    {"kind": "trainer", "devices": 8, "trainers": 8},
    {"kind": "data", "actors": 16, "refreshers": 4},
    {"kind": "reanalysis", "count": 9, "reanalyzers": 16},
]}


def plan_of(config: Config, placement: Placement) -> RolePlan:
    roles = config.roles
    return RolePlan(actors=roles.actors, reanalyzers=len(placement.homes), refreshers=max(0, roles.refreshers),
                    trainers=roles.trainers)


def every_channel(placement: Placement) -> tuple[list[tuple[int, str, int]], list[tuple[int, str]]]:
    sent = [(r, ch, dest) for r in placement.ranks for ch, dest in placement.outbound(r)]
    received = [(r, ch) for r in placement.ranks for ch in placement.inbound(r)]
    return sent, received


def test_the_paper_layout_places_every_role_once_and_bridges_each_channel_once():
    spec = parse_cluster(PAPER, 11)
    config = cluster_config(Config(), spec)
    placement = Placement.of(spec, config)
    plan = plan_of(config, placement)
    assert (config.roles.trainers, config.roles.actors, config.roles.refreshers) == (8, 16, 4)
    assert len(placement.homes) == 144 and placement.data == 1
    assert sorted(Counter(placement.homes.values()).items()) == [(r, 16) for r in range(2, 11)]
    roles = {r: placement.roles_on(r, plan) for r in placement.ranks}
    assert roles[0] == [("evaluator", 0)] + [("trainer", t) for t in range(8)]
    assert roles[1] == [("replay", 0)] + [("refresher", j) for j in range(4)] + [("actor", i) for i in range(16)]
    assert roles[2] == [("reanalyzer", j) for j in range(16)]
    every = [name for r in placement.ranks for name in placement.rows_on(r, plan)]
    assert sorted(every) == sorted(n for n in plan.row_names() if n != "agent")  # each process on one node
    sent, received = every_channel(placement)
    assert sorted((dest, ch) for _, ch, dest in sent) == sorted(received)  # each sent channel is taken once
    kinds = Counter((channel_kind(ch), r, dest) for r, ch, dest in sent)
    assert kinds[("samples", 1, 2)] == 16 and kinds[("batches", 2, 0)] == 16 * 8
    assert kinds[("priorities", 0, 1)] == 8
    assert len(sent) == 144 + 144 * 8 + 8


def test_a_combined_node_zero_keeps_its_own_channels_local():
    spec = parse_cluster({"nodes": [{"kind": "combined", "actors": 1, "reanalyzers": 2},
                                    {"kind": "reanalysis", "count": 2, "reanalyzers": 1}]}, 3)
    placement = Placement.of(spec, cluster_config(Config(), spec))
    assert placement.homes == {0: 0, 1: 0, 2: 1, 3: 2} and placement.data == 0
    sent, _ = every_channel(placement)
    assert sorted(sent) == [(0, "samples2", 1), (0, "samples3", 2), (1, "batches.2", 0), (2, "batches.3", 0)]


def test_node_zero_must_host_the_trainers():
    spec = parse_cluster({"nodes": [{"kind": "data", "actors": 1, "rank": 0}, {"kind": "trainer"},
                                    {"kind": "reanalysis", "reanalyzers": 1}]}, 3)
    with pytest.raises(ClusterError, match="node 0 is a 'data' node: the trainer .* must be rank 0"):
        check_supported(spec)
