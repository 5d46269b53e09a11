"""The stage clock partitions a process's wall time: shares are exclusive and sum to 100 %, whatever its lanes do."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import pytest

from speedy.stages import STAGES, StageClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _clock() -> tuple[StageClock, FakeTime, dict[str, float]]:
    totals: dict[str, float] = defaultdict(float)
    now = FakeTime()
    return StageClock(lambda stage, s: totals.__setitem__(stage, totals[stage] + s), now), now, totals


def _stage_sum(totals: dict[str, float]) -> float:
    return sum(totals[s] for s in STAGES)


def test_nested_and_unclaimed_time_partition_exactly():
    clock, now, totals = _clock()
    now.t = 1.0  # nothing claimed yet: other
    with clock.timed("wait_input"):
        now.t = 3.0
        with clock.timed("busy_env"):
            now.t = 3.5
        now.t = 4.0
    now.t = 5.0
    clock.flush()
    assert totals["other"] == pytest.approx(2.0)
    assert totals["wait_input"] == pytest.approx(2.5)
    assert totals["busy_env"] == pytest.approx(0.5)
    assert _stage_sum(totals) == pytest.approx(5.0)


def test_work_beats_waiting_and_concurrent_work_is_split_and_counted():
    clock, now, totals = _clock()
    waiter, worker_a = clock.timed("wait_output", lane="a"), clock.timed("busy_train", lane="b")
    worker_b = clock.timed("transport", lane="c")
    waiter.__enter__()
    now.t = 1.0  # only waiting
    worker_a.__enter__()
    now.t = 3.0  # train alone (the waiting lane does not count)
    worker_b.__enter__()
    now.t = 5.0  # train and transport at once: split, 2 lanes
    worker_b.__exit__(None, None, None)
    worker_a.__exit__(None, None, None)
    waiter.__exit__(None, None, None)
    assert totals["wait_output"] == pytest.approx(1.0)
    assert totals["busy_train"] == pytest.approx(3.0)
    assert totals["transport"] == pytest.approx(1.0)
    assert totals["busy_lanes"] == pytest.approx(2.0 + 4.0)
    assert _stage_sum(totals) == pytest.approx(5.0)


def test_split_moves_the_measured_parts_and_counts_overlap():
    clock, now, totals = _clock()
    with clock.timed("busy_targets") as span:
        now.t = 4.0
    span.split({"busy_tree": 2.0, "busy_inference": 1.0})  # 1 s left for the targets
    assert (totals["busy_tree"], totals["busy_inference"], totals["busy_targets"]) == pytest.approx((2, 1, 1))
    with clock.timed("busy_tree") as span:
        now.t = 6.0
    span.split({"busy_tree": 1.5, "busy_inference": 1.5})  # pipelined: 3 s of work in 2 s of wall time
    assert totals["overlap"] == pytest.approx(1.0)
    assert (totals["busy_tree"], totals["busy_inference"]) == pytest.approx((3, 2))
    assert _stage_sum(totals) == pytest.approx(6.0)


def test_a_long_block_split_while_it_runs_reads_right_before_it_ends():
    """An evaluation of many searched steps is one long block: splits during it move what was measured so far, so a
    reader mid-block sees tree and inference time, not one stage; the final split takes only the rest."""
    clock, now, totals = _clock()
    with clock.timed("busy_env") as span:
        now.t = 10.0
        span.split({"busy_inference": 6.0, "busy_tree": 1.0})  # mid-block: the first 10 s
        assert (totals["busy_inference"], totals["busy_tree"], totals["busy_env"]) == pytest.approx((6, 1, 3))
        now.t = 20.0
        span.split({"busy_inference": 8.0, "busy_tree": 0.0})  # the next 10 s only
    now.t = 21.0  # after the block: other
    clock.flush()
    span.split({})  # a split after the last one and the block's end moves nothing
    assert (totals["busy_inference"], totals["busy_tree"], totals["busy_env"]) == pytest.approx((14, 1, 5))
    assert totals["overlap"] == 0.0 and _stage_sum(totals) == pytest.approx(21.0)


def test_unknown_stage_is_refused():
    clock, _, _ = _clock()
    with pytest.raises(ValueError, match="unknown stage"), clock.timed("busy_trees"):
        pass


def test_asyncio_lanes_and_a_worker_thread_with_real_time():
    """One coroutine blocks the loop (busy_env 30 %), one waits (wait_input), a thread trains 40 % of the time."""
    totals: dict[str, float] = defaultdict(float)
    lock = threading.Lock()

    def add(stage: str, seconds: float) -> None:
        with lock:
            totals[stage] += seconds

    clock = StageClock(add)

    async def env_lane() -> None:
        for _ in range(10):
            with clock.timed("busy_env"):
                time.sleep(0.03)  # blocks the loop: nothing else runs
            await asyncio.sleep(0.07)

    async def waiting_lane() -> None:
        with clock.timed("wait_input"):
            await asyncio.sleep(1.0)

    def train_lane() -> None:
        time.sleep(0.02)
        with clock.timed("busy_train"):
            time.sleep(0.4)

    async def main() -> None:
        thread = threading.Thread(target=train_lane)
        thread.start()
        await asyncio.gather(env_lane(), waiting_lane())
        thread.join()

    start = time.perf_counter()
    clock.flush()
    base = _stage_sum(totals)
    asyncio.run(main())
    clock.flush()
    wall = time.perf_counter() - start
    assert _stage_sum(totals) - base == pytest.approx(wall, rel=0.01)
    env, train = totals["busy_env"] / wall, totals["busy_train"] / wall
    # while env and train overlap the interval is split, so each loses half the overlap (~0.06 s)
    assert env == pytest.approx(0.3 - 0.06, abs=0.05)
    assert train == pytest.approx(0.4 - 0.06, abs=0.05)
    assert totals["wait_input"] / wall == pytest.approx(1 - env - train - totals["other"] / wall, abs=1e-3)
