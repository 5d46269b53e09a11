"""RoleContext.timed_search on a real board: a long search span reads as tree and inference while it runs."""

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from speedy.roles.board import Board
from speedy.roles.context import RoleContext


class _Counters:
    """What timed_search reads from a ModelSearch: its cumulative tree and inference seconds."""

    def __init__(self) -> None:
        self.tree_seconds = 0.0
        self.inference_seconds = 0.0


def _evaluate(search: _Counters, seconds: float, stop: threading.Event) -> str:
    """A stand-in evaluation in a worker thread: 80 % of its wall time measured as inference."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        time.sleep(0.05)
        search.inference_seconds += 0.04
    return "done"


def test_a_long_evaluation_reads_as_inference_on_the_board_before_it_ends(no_leftovers):
    board = Board.create(f"r{uuid.uuid4().hex[:8]}", ["evaluator"])
    row = board.row("evaluator")
    row.keep_fresh(0.05)
    search, stop = _Counters(), threading.Event()
    ctx = SimpleNamespace(row=row)

    async def main() -> tuple[str, dict]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            work = loop.run_in_executor(executor, _evaluate, search, 3.0, stop)
            task = asyncio.ensure_future(RoleContext.timed_search(ctx, search, work, "busy_env", split_every_s=0.5))
            await asyncio.sleep(2.2)
            mid = board.snapshot()["evaluator"]  # what the node agent's live board reads mid-evaluation
            return await task, mid

    try:
        result, mid = asyncio.run(main())
        row.flush()
        end = board.snapshot()["evaluator"]
    finally:
        stop.set()
        row.stop_fresh()
        board.close()
    assert result == "done"
    # mid-evaluation: at least the first 1.5 s are split (0.8 of them inference), not one 2.2 s block of busy_env
    assert mid["busy_inference"] >= 1.0 and mid["busy_env"] < 0.8, mid
    assert end["busy_inference"] == pytest.approx(0.8 * end["busy_env"] / 0.2, rel=0.35)
    assert end["busy_env"] + end["busy_inference"] == pytest.approx(3.0, abs=0.4)
