"""cancel_until_done: a task that swallows a cancel and blocks again is still ended (the trainer's batch prefetch
did so once, in a CI run of the two-node scaling tool, and the trainer process never exited)."""

from __future__ import annotations

import asyncio

from speedy.roles.context import cancel_until_done


async def test_a_task_that_swallows_the_first_cancel_and_blocks_again_is_ended():
    full = asyncio.Queue(maxsize=1)
    full.put_nowait("a batch nobody takes")
    swallowed = []

    async def prefetch() -> None:
        while True:
            try:
                await asyncio.sleep(3600)  # waiting for input
            except asyncio.CancelledError:
                swallowed.append(True)  # as asyncio.wait_for on Python 3.11 can, when its result arrives at once
            await full.put("the next batch")  # blocks: the queue is full

    task = asyncio.ensure_future(prefetch())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_until_done(task, retry_s=0.05), timeout=5)
    assert task.cancelled() and swallowed == [True]


async def test_a_plain_task_is_cancelled_and_a_failed_one_is_not_raised():
    plain = asyncio.ensure_future(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_until_done(plain)
    assert plain.cancelled()

    async def fail() -> None:
        raise ValueError("already failed")

    failed = asyncio.ensure_future(fail())
    await asyncio.sleep(0)
    await cancel_until_done(failed)  # its exception is retrieved, not raised
    assert isinstance(failed.exception(), ValueError)


async def test_a_cancel_as_the_doorbell_rings_is_not_swallowed(tmp_path):
    """The race itself: the bell rings, and the waiting task is cancelled `ticks` loop iterations later, as its
    wake-up is on the way. Whatever the moment, the task ends cancelled (asyncio.wait_for returned True instead)."""
    from speedy.shm.doorbell import Doorbell

    bell = Doorbell.create(tmp_path / "bell")
    try:
        for ticks in range(6):
            bell.drain()
            task = asyncio.ensure_future(bell.wait_async(3600))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            bell.ring()
            for _ in range(ticks):
                await asyncio.sleep(0)
            cancelled = task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                got = "cancelled"
            assert got == "cancelled" or not cancelled, f"cancel {ticks} ticks after the ring was swallowed: {got}"
    finally:
        bell.close()
