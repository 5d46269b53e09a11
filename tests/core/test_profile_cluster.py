"""speedy.profile over a torchrun cluster's run directory: other nodes' processes (RUN_DIR/node<k>/metrics) join the
profile under their node's name and count in their role kind; node 0's idle placeholder rows for them drop out; each
node's link traffic becomes bytes per training step."""

from __future__ import annotations

from pathlib import Path

import pytest

from speedy.profile import analyze, format_report, role_kind

from .profile_records import board_row, write_jsonl


def test_a_reanalysis_nodes_processes_join_the_profile(tmp_path: Path):
    t0 = 1000.0
    idle = board_row(t0, {})
    snapshots = []
    for i, t in enumerate((t0, t0 + 10, t0 + 20)):
        snapshots.append({"time": t, "step": 10 * i, "roles": {
            "trainer": board_row(t, {"busy_train": 6.0 * i, "wait_input": 4.0 * i}, train_steps=10 * i),
            "reanalyzer0": board_row(t, {"busy_tree": 9.0 * i, "wait_output": 1.0 * i}, items=5 * i),
            "reanalyzer1": idle,  # hosted by node 1: never active on node 0's board
        }})
    write_jsonl(tmp_path / "metrics" / "agent.jsonl", [{"time": t0, "step": 0, "config": {"train": {"batch_size": 8}}},
                                                 *snapshots])
    write_jsonl(tmp_path / "node1" / "metrics" / "reanalyzer1.jsonl",
           [board_row(t0 + 10 * i, {"busy_tree": 5.0 * i, "wait_input": 5.0 * i}, items=3 * i) for i in range(3)])
    write_jsonl(tmp_path / "node1" / "metrics" / "link.jsonl",  # cumulative bytes; node 0's steps as `step`
           [{"time": t0 + 10 * i, "step": 10 * i, "peer": "node0", "frames_in": 4000 * i, "weights_in": 1000 * i,
             "counters_in": 0, "samples_in": 500 * i, "batches_out": 2000 * i} for i in range(3)])
    profile = analyze(tmp_path)
    [link] = profile.links
    assert (link.node, link.peer, link.train_steps) == ("node1", "node0", 10)  # window: from the first step
    assert link.bytes_per_step == {"frames_in": 400.0, "weights_in": 100.0, "counters_in": 0.0,
                                   "samples_in": 50.0, "batches_out": 200.0}
    assert link.bytes_per_s == pytest.approx(7500 / 10)
    assert "link node1–node0: 0.7 KiB per training step" in format_report(profile)
    by_name = {p.name: p for p in profile.processes}
    assert set(by_name) == {"trainer", "reanalyzer0", "node1/reanalyzer1"}
    assert by_name["node1/reanalyzer1"].kind == "reanalyzer"
    assert by_name["node1/reanalyzer1"].shares["busy_tree"] == pytest.approx(0.5)
    reanalyzers = profile.kinds["reanalyzer"]
    assert reanalyzers.instances == 2
    assert reanalyzers.throughput["batches/s"] == pytest.approx(0.5 + 0.3)  # 5 and 3 batches per 10 s


def test_role_kind_strips_the_node():
    assert role_kind("reanalyzer3") == role_kind("node2/reanalyzer3") == "reanalyzer"
    assert role_kind("node10/trainer") == "trainer"
