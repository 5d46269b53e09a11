"""Frame store: ids, gather, eviction, and reading by id from another process."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speedy.shm import FrameEvictedError, FrameNotFoundError, FrameStore, Ring

from ._children import frame_reader
from .conftest import start, stop


def test_append_get_evict(run_id):
    store = FrameStore.create(run_id, "f", (2, 3), np.uint8, capacity=4)
    ids = store.append(np.stack([np.full((2, 3), i, np.uint8) for i in range(3)]))
    np.testing.assert_array_equal(ids, [0, 1, 2])
    assert store.append(np.full((2, 3), 3, np.uint8)).tolist() == [3]
    got = store.get([2, 0, 3])
    assert got.shape == (3, 2, 3) and got[:, 0, 0].tolist() == [2, 0, 3]
    store.append(np.full((1, 2, 3), 4, np.uint8))  # overwrites id 0
    with pytest.raises(FrameEvictedError, match=r"\[0\]"):
        store.get([0, 4])
    with pytest.raises(FrameNotFoundError):
        store.get([5])
    with pytest.raises(ValueError, match="shape"):
        store.append(np.zeros((1, 3, 2), np.uint8))
    assert store.view(3, 1)[0, 0, 0] == 3 and store.still_valid(3)
    with pytest.raises(ValueError, match="wrap"):
        store.view(3, 2)  # slots 3 and 0
    assert store.oldest_id() == 1
    store.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=20), st.integers(1, 8))
def test_ids_always_name_their_frame(batches, capacity):
    rid = f"hyp{np.random.randint(1 << 30)}"
    store = FrameStore.create(rid, "f", (3,), np.int64, capacity=max(capacity, 5))
    try:
        for n in batches:
            start_id = store.next_id
            ids = store.append(np.arange(start_id, start_id + n, dtype=np.int64)[:, None].repeat(3, 1))
            for i in range(store.next_id):
                if i >= store.oldest_id():
                    assert (store.get(i) == i).all()
                else:
                    with pytest.raises(FrameEvictedError):
                        store.get(i)
            assert ids.tolist() == list(range(start_id, start_id + n))
    finally:
        store.close()


def test_other_process_reads_by_id(run_id, ctx):
    store = FrameStore.create(run_id, "f", (3, 8, 8), np.uint8, capacity=16)
    out = Ring.create(run_id, "out", 4096)
    r = out.reader()
    ids = store.append(np.stack([np.full((3, 8, 8), i, np.uint8) for i in range(10)]))
    p = start(ctx, frame_reader, run_id, "f", ids[[7, 2, 9]].tolist(), "out")
    try:
        with r.get(timeout=20) as msg:
            assert msg.arrays["sums"].tolist() == [7 * 192, 2 * 192, 9 * 192]
    finally:
        stop(p)
        r.close()
        out.close()
        store.close()


def test_frame_store_snapshot_and_restore_keep_ids(run_id):
    store = FrameStore.create(run_id, "a", (2,), np.uint8, 4)
    fresh = FrameStore.create(run_id, "b", (2,), np.uint8, 4)
    try:
        store.append(np.arange(8, dtype=np.uint8).reshape(4, 2))
        store.append(np.arange(8, 12, dtype=np.uint8).reshape(2, 2))  # ids 0..5, 2..5 kept
        first, frames = store.snapshot()
        assert first == 2 and frames.tolist() == [[4, 5], [6, 7], [8, 9], [10, 11]]
        fresh.restore(first, frames)
        assert fresh.get([2, 5]).tolist() == [[4, 5], [10, 11]] and fresh.next_id == 6
        assert fresh.append(np.array([[20, 21]], np.uint8)).tolist() == [6]
        with pytest.raises(KeyError, match="evicted"):
            fresh.get([2])
        with pytest.raises(ValueError, match="already holds"):
            fresh.restore(0, frames)
    finally:
        store.close()
        fresh.close()
