"""tools/cluster_scaling.py on real torchrun clusters over loopback: with reanalysis the bottleneck (a fixed cost
per batch), a second reanalysis node raises the training rate in step with the batches it adds (2.0x alone,
docs/benchmarks.md; 1.46x in a CI run on 2 cores, where the two-node cluster's processes contend), and the tool
reports it with the link bytes.

The cost per batch is set so that reanalysis stays the bottleneck even with two reanalysis nodes on the slowest
2-core host seen (AMD EPYC, L2 512 KiB per core): there the tiny trainer, contending with the cluster's other
processes, managed about 4.4 steps/s, so 0.4 s per batch (up to 5 batches/s per node) made the trainer the bottleneck
already with one node and the second node could add nothing (CI, stop 40). At COST_S = 1.5 s two nodes offer at most
2.7 batches/s."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.tools.conftest import REPO

COST_S = 1.5  # reanalysis sleep per batch (seconds)
IN_FLIGHT = 2  # batches each reanalyzer works on at once (roles.batches_in_flight, its default)


@pytest.mark.timeout(400)
def test_two_reanalysis_nodes_train_about_twice_as_fast_as_one(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "tools" / "cluster_scaling.py"), "--nodes", "1", "2",
                          "--cost-s", str(COST_S), "--train-steps", "50", "--timeout-s", "150", "--json",
                          "--png", str(tmp_path / "s.png"),
                          "--keep", str(tmp_path / "runs")], capture_output=True, text=True, cwd=REPO, timeout=380)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    one, two = report["points"]
    assert one["reanalysis_nodes"] == 1 and two["reanalysis_nodes"] == 2
    # each reanalyzer: IN_FLIGHT batches at once, each taking >= COST_S: at most IN_FLIGHT / COST_S batches/s per node
    most = IN_FLIGHT / COST_S
    assert 0.4 * most < one["reanalyzer_batches_per_s"] <= 1.1 * most, one
    # the second node's reanalyzer adds its batches (the cost is a sleep, so this holds on a busy 2-core host) ...
    batch_gain = two["reanalyzer_batches_per_s"] / one["reanalyzer_batches_per_s"]
    train_gain = two["train_steps_per_s"] / one["train_steps_per_s"]
    assert batch_gain > 1.4, (one, two)
    # ... and the trainer turns them into steps: a real gain, and most of what the extra batches allow (on 2 cores
    # the four processes of the two-node cluster contend, so a fixed 1.5x bound flaked at 1.46x with batches 1.66x)
    assert train_gain > 1.3, (one, two)
    assert train_gain > 0.8 * batch_gain, (one, two)
    assert two["ideal_train_steps_per_s"] == pytest.approx(2 * one["train_steps_per_s"])
    assert set(two["link_kib_per_step"]) == {"node1", "node2"} and all(v > 0 for v in two["link_kib_per_step"].values())
    assert one["trainer_wait"] > 0.5  # the trainer waits for batches: reanalysis is the bottleneck
    assert (tmp_path / "s.png").stat().st_size > 10_000
