"""speedy.profile: synthetic role processes with a known busy/wait pattern are profiled to within ±5 points of the
truth with shares that sum to 100 %, and the diagnosis names the limiting role with a prediction from the rates."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from speedy.metrics import MetricsWriter
from speedy.profile import KindProfile, RingMonitor, RingProfile, analyze, diagnose, format_report, interference
from speedy.stages import STAGES, StageClock

PERIOD_S = 0.1
RUN_S = 3.0
# role → its pattern per period: (stage or None, fraction of the period, where it runs)
PATTERNS = {
    "actor0": [("busy_env", 0.4, "loop"), ("wait_output", 0.4, "await"), (None, 0.2, "await")],
    "trainer": [("busy_train", 0.5, "thread"), ("wait_input", 0.5, "await")],
    "reanalyzer0": [("busy_tree", 0.3, "thread"), ("busy_inference", 0.3, "loop"), ("wait_input", 0.4, "await")],
}
TRUTH = {role: {stage: share for stage, share, _ in steps if stage} | {"other": sum(
    share for stage, share, _ in steps if stage is None)} for role, steps in PATTERNS.items()}


async def _play(role: str, run_dir: str) -> None:
    totals: dict[str, float] = defaultdict(float)
    clock = StageClock(lambda stage, s: totals.__setitem__(stage, totals[stage] + s))
    metrics = MetricsWriter(run_dir, role, tensorboard=False)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1)
    end = time.monotonic() + RUN_S
    metrics.write(0, {**totals, "other": 0.0, "train_steps": 0})
    step = 0
    while time.monotonic() < end:
        for stage, share, where in PATTERNS[role]:
            seconds = share * PERIOD_S
            if stage is None:
                await asyncio.sleep(seconds)
                continue
            with clock.timed(stage):
                if where == "loop":
                    time.sleep(seconds)
                elif where == "thread":
                    await loop.run_in_executor(pool, time.sleep, seconds)
                else:
                    await asyncio.sleep(seconds)
        step += 1
        clock.flush()
        metrics.write(step, {**totals, "train_steps": step})
    metrics.close()


def _role_process(role: str, run_dir: str) -> None:
    asyncio.run(_play(role, run_dir))


@pytest.mark.timeout(120)
def test_synthetic_roles_are_profiled_within_five_points(tmp_path: Path):
    ctx = mp.get_context("spawn")
    processes = [ctx.Process(target=_role_process, args=(role, str(tmp_path))) for role in PATTERNS]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    profile = analyze(tmp_path, (0.0, None))
    assert {p.name for p in profile.processes} == set(PATTERNS)
    for p in profile.processes:
        assert sum(p.shares.values()) == pytest.approx(1.0)
        for stage in STAGES:
            assert p.shares[stage] == pytest.approx(TRUTH[p.name].get(stage, 0.0), abs=0.05), (p.name, stage)
    assert "bottleneck:" in format_report(profile)


def _kind(kind: str, n: int, rate: float, unit: str, cores: float = 0.5, **shares: float) -> KindProfile:
    full = dict.fromkeys(STAGES, 0.0) | shares
    full["other"] = 1 - sum(full.values())
    work = sum(v for s, v in full.items() if not s.startswith("wait") and s != "other")
    return KindProfile(kind, n, {unit: rate}, full, work, 1.0, cores, None)


def test_starved_trainer_names_busy_reanalyzers_and_predicts_the_count():
    kinds = {
        # trainer: 4 steps/s while waiting 60 % → 10 steps/s if fed
        "trainer": _kind("trainer", 1, 4.0, "train steps/s", busy_train=0.4, wait_input=0.6),
        # 2 reanalyzers deliver 4 batches/s at 95 % busy → 2.1 batches/s each when never waiting
        "reanalyzer": _kind("reanalyzer", 2, 4.0, "batches/s", busy_tree=0.7, busy_inference=0.25),
    }
    d = diagnose(kinds, cores=16, busy=2.0, config={"train": {"env_steps_per_train_step": 0}})
    assert (d.bottleneck, d.stage) == ("reanalyzer", "busy_tree")
    assert "trainer waits 60 %" in d.evidence and "reanalyzers 95 % busy, 74 % of it tree work" in d.evidence
    per = 4.0 / 2 / 0.95
    assert d.predicted["reanalyzers"] == 5  # ceil(10 · 0.95 / 2.1)
    assert d.predicted["trainer_wait"] == pytest.approx(max(0.0, 1 - 5 * per / 10.0))
    assert d.advice.startswith("+3 reanalyzers")


def test_saturated_cores_are_said_with_the_advice():
    kinds = {"trainer": _kind("trainer", 1, 4.0, "train steps/s", busy_train=0.4, wait_input=0.6),
             "reanalyzer": _kind("reanalyzer", 1, 2.0, "batches/s", cores=1.0, busy_tree=0.95)}
    d = diagnose(kinds, cores=2, busy=1.95, config={})
    assert d.bottleneck == "reanalyzer" and "more cores" in d.advice


def test_trainer_bound_with_idle_reanalyzers_suggests_fewer():
    kinds = {"trainer": _kind("trainer", 1, 10.0, "train steps/s", busy_train=0.9, wait_input=0.02),
             "reanalyzer": _kind("reanalyzer", 4, 10.0, "batches/s", busy_tree=0.2, wait_output=0.75)}
    d = diagnose(kinds, cores=8, busy=3.0, config={})
    assert (d.bottleneck, d.stage) == ("trainer", "busy_train")
    assert d.predicted["reanalyzers"] < 4 and d.advice.startswith("−")


def test_slow_actors_under_the_data_bound_are_named():
    kinds = {"trainer": _kind("trainer", 1, 10.0, "train steps/s", busy_train=0.5, wait_input=0.05),
             "reanalyzer": _kind("reanalyzer", 1, 10.0, "batches/s", busy_tree=0.5),
             "actor": _kind("actor", 1, 20.0, "env steps/s", busy_env=0.9)}
    d = diagnose(kinds, cores=8, busy=2.0, config={"train": {"env_steps_per_train_step": 4}})
    assert (d.bottleneck, d.stage) == ("actor", "busy_env")
    assert d.predicted["actors"] == 2  # 40 env steps/s needed, 22 per actor


def test_pushed_back_reanalyzers_and_a_starved_trainer_name_the_batches_ring():
    kinds = {
        # trainer: 6 steps/s while waiting 25 % → 8 steps/s if fed
        "trainer": _kind("trainer", 1, 6.0, "train steps/s", busy_train=0.75, wait_input=0.25),
        # the reanalyzer delivers 6 batches/s while working 40 % (pauses included) → 15 batches/s if never pushed back
        "reanalyzer": _kind("reanalyzer", 1, 6.0, "batches/s", busy_targets=0.4, wait_output=0.6),
    }
    rings = [RingProfile("batches", 0.9, 0.94, [])]
    config = {"roles": {"batch_ring_messages": 1, "batches_in_flight": 1}}
    d = diagnose(kinds, cores=2, busy=0.5, config=config, rings=rings)
    assert (d.bottleneck, d.stage) == ("reanalyzer", "wait_output"), d
    assert "trainer waits 25 % for batches while reanalyzers wait 60 % on output" in d.evidence
    assert "batches ring holds 1 batch per reanalyzer, 90 % full on average" in d.evidence
    assert d.predicted["batch_ring_messages"] == 5  # ceil(1 · 25 % / 5 %)
    assert d.predicted["trainer_wait"] == 0.0 and d.predicted["train_steps_per_s"] == pytest.approx(8.0)
    assert "roles.batch_ring_messages=5 (now 1)" in d.advice
    # the same pattern with the auto depth (batches in flight + 1) and no ring readings
    auto = diagnose(kinds, cores=2, busy=0.5, config={"roles": {"batches_in_flight": 2}})
    assert "holds 3 batches per reanalyzer" in auto.evidence and auto.predicted["batch_ring_messages"] == 15
    # reanalyzers that are rarely pushed back are not held up by the ring: they are too few
    kinds["reanalyzer"] = _kind("reanalyzer", 1, 6.0, "batches/s", busy_targets=0.9, wait_output=0.05)
    assert diagnose(kinds, cores=2, busy=0.5, config=config, rings=rings).stage == "busy_targets"


def test_balanced_pipeline():
    kinds = {"trainer": _kind("trainer", 1, 10.0, "train steps/s", busy_train=0.5, wait_input=0.05),
             "reanalyzer": _kind("reanalyzer", 1, 10.0, "batches/s", busy_tree=0.5, wait_output=0.1)}
    assert diagnose(kinds, cores=8, busy=2.0, config={}).bottleneck == "none"


def test_interference_compares_the_training_rate_while_a_role_works_and_while_it_does_not():
    trainer, evaluator, steps, work = [], [], 0, 0.0
    for t in range(11):
        trainer.append({"time": float(t), "train_steps": steps, "busy_train": float(t), "other": 0.0})
        evaluator.append({"time": float(t), "busy_inference": work, "wait_input": t - work, "other": 0.0})
        busy = t % 2 == 0  # the evaluator works through every other interval
        steps += 2 if busy else 8
        work += 1.0 if busy else 0.0
    found = interference({"trainer": trainer, "evaluator": evaluator}, 0.0, 10.0)
    assert len(found) == 1
    (i,) = found
    assert (i.kind, i.busy_fraction, i.rate_while_busy, i.rate_otherwise) == ("evaluator", 0.5, 2.0, 8.0)


class _FakeRing:
    def __init__(self, name: str, capacity: int) -> None:
        self.name, self.capacity, self.used = name, capacity, 0

    def used_bytes(self) -> int:
        return self.used


def test_ring_monitor_reports_mean_and_max_fill_per_channel():
    samples, mux0, mux1 = _FakeRing("speedy_r1_samples0", 100), _FakeRing("speedy_r1_batches.0", 100), \
        _FakeRing("speedy_r1_batches.1", 300)
    monitor = RingMonitor([samples, mux0, mux1], "r1")
    for used in (0, 50, 100):
        samples.used, mux1.used = used, 2 * used
        monitor.sample()
    report = monitor.report()
    assert report["samples0"] == {"mean": pytest.approx(0.5), "max": 1.0}
    assert report["batches"] == {"mean": pytest.approx(0.25), "max": pytest.approx(0.5)}  # 200 of 400 bytes at most
    monitor.sample()
    assert monitor.report()["samples0"]["mean"] == 1.0  # each report covers the samples since the last one
