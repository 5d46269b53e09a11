"""tools/profile_pipeline.py on real short single-box runs with an injected bottleneck: it names the right role and
stage, its stage shares add up, and (for the slowed reanalyzer and the too small batches ring) its advice moves the
trainer's wait as predicted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speedy.config import build_config
from speedy.profile import PipelineProfile, analyze, format_report
from speedy.roles.launch import run_single_box
from speedy.stages import STAGES

from .conftest import TINY_MODEL

REPO = Path(__file__).resolve().parents[2]


def _run(run_dir: Path, extra: list[str]) -> PipelineProfile:
    config = build_config("cartpole", overrides=[
        *TINY_MODEL, "replay.start_env_steps=64", "replay.block_length=16", "train.batch_size=16",
        "mcts.num_simulations=4", "eval.interval=100000", "roles.actors=1", "roles.reanalyzers=1",
        "roles.refreshers=-1", "run.log_interval_s=0.5", "roles.batches_in_flight=1", *extra,
    ])
    run_dir.mkdir()
    run_single_box(config, run_dir, log=False)
    profile = analyze(run_dir)
    for p in profile.processes:
        assert sum(p.shares[s] for s in STAGES) == pytest.approx(1.0)
    return profile


@pytest.mark.timeout(240)
def test_slow_reanalyzer_is_named_and_its_advice_lowers_the_trainer_wait(tmp_path, no_leftovers):
    slowed = _run(tmp_path / "slowed", ["train.training_steps=30", "roles.slow_reanalyzer_s=0.25"])
    d = slowed.diagnosis
    assert (d.bottleneck, d.stage) == ("reanalyzer", "busy_targets"), d
    assert slowed.kinds["trainer"].shares["wait_input"] > 0.5
    # apply the advice, up to 3 reanalyzers on this small machine (only reanalyzer 0 is slowed)
    count = min(3, int(d.predicted["reanalyzers"]))
    assert count > 1
    fixed = _run(tmp_path / "fixed", ["train.training_steps=30", "roles.slow_reanalyzer_s=0.25",
                                      f"roles.reanalyzers={count}"])
    assert fixed.kinds["trainer"].shares["wait_input"] < slowed.kinds["trainer"].shares["wait_input"] - 0.1


@pytest.mark.timeout(180)
def test_slow_trainer_is_named_by_the_tool_offline_live_json_and_png(tmp_path, no_leftovers, monkeypatch):
    """With an executable on PATH that answers as nvidia-smi does (a GPU half busy), the node agent samples it, and
    the profile carries the GPU's figures and says what they mean for the trainer-bound run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, GPU-aa, Fake GPU, 50, 2048, 8192'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run_dir = tmp_path / "run"
    profile = _run(run_dir, ["train.training_steps=25", "roles.slow_trainer_s=0.3"])
    d = profile.diagnosis
    assert (d.bottleneck, d.stage) == ("trainer", "busy_train"), d
    [gpu] = profile.devices
    assert (gpu.node, gpu.device, gpu.name, gpu.busy_mean, gpu.memory_used_gib) == ("node0", "gpu0", "Fake GPU",
                                                                                    0.5, 2.0)
    assert "gpu0 (Fake GPU) runs kernels only 50 % of the time" in d.evidence
    assert profile.kinds["trainer"].shares["busy_train"] > 0.7
    assert profile.kinds["reanalyzer"].shares["wait_output"] > 0.5
    tool = [sys.executable, str(REPO / "tools" / "profile_pipeline.py"), str(run_dir)]
    report = json.loads(subprocess.run([*tool, "--json"], capture_output=True, text=True, check=True).stdout)
    assert report["diagnosis"]["bottleneck"] == "trainer"  # the tool prints what analyze() found
    assert {"trainer", "reanalyzer", "replay", "actor"} <= set(report["kinds"]) and report["rings"]
    # --live on a finished run: a report per period, then it stops once the metrics stay quiet
    live = subprocess.run([*tool, "--live", "--every", "0.3", "--last", "5"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    assert live.count("bottleneck:") >= 3
    pytest.importorskip("matplotlib")
    png = tmp_path / "profile.png"
    subprocess.run([*tool, "--window", "0:", "--processes", "--png", str(png)], check=True, capture_output=True)
    assert png.stat().st_size > 10_000


@pytest.mark.timeout(180)
def test_slow_actor_env_is_named(tmp_path, no_leftovers):
    profile = _run(tmp_path / "run", ["train.training_steps=120", "roles.slow_actor_env_s=0.2",
                                      "train.env_steps_per_train_step=4"])
    d = profile.diagnosis
    assert (d.bottleneck, d.stage) == ("actor", "busy_env"), d
    assert d.predicted["actors"] > 1


# A reanalyzer faster than the trainer that pauses 1 s every 15 batches (as for a weight pull or a shared device): a
# batches ring of one batch cannot bank enough for the pause (the trainer's prefetch holds three more), so the trainer
# starves through each pause and the reanalyzer is pushed back between them.
PAUSING = ["train.training_steps=60", "roles.slow_reanalyzer_s=1.0", "roles.slow_reanalyzer_every=15",
           "roles.slow_trainer_s=0.1"]


@pytest.mark.timeout(240)
def test_too_small_batches_ring_is_named_and_a_deeper_one_lowers_the_trainer_wait(tmp_path, no_leftovers):
    small = _run(tmp_path / "small", [*PAUSING, "roles.batch_ring_messages=1"])
    d = small.diagnosis
    assert (d.bottleneck, d.stage) == ("reanalyzer", "wait_output"), d
    assert "batches ring holds 1 batch per reanalyzer" in d.evidence
    assert "bottleneck: reanalyzer (waiting on output)" in format_report(small)
    # apply the advice, up to 8 batches
    deeper = min(8, int(d.predicted["batch_ring_messages"]))
    assert deeper > 1 and f"roles.batch_ring_messages={d.predicted['batch_ring_messages']}" in d.advice
    fixed = _run(tmp_path / "deeper", [*PAUSING, f"roles.batch_ring_messages={deeper}"])
    assert fixed.kinds["trainer"].shares["wait_input"] < small.kinds["trainer"].shares["wait_input"] - 0.05
