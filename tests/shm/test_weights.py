"""Weight slot: layout round trip, and a writer hammering while readers check for torn reads."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from speedy.shm import WeightLayout, WeightSlot
from speedy.shm.weights import MAX_READERS

from ._children import cpu_hog, weight_hammer
from .conftest import start, stop


def test_state_dict_round_trip(run_id):
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
          "h": torch.ones(3, dtype=torch.bfloat16)}
    layout = WeightLayout.from_state_dict(sd)
    assert [s.offset for s in layout.tensors] == [0, 64, 128] and layout.nbytes == 192
    slot = WeightSlot.create(run_id, "w", layout)
    assert slot.latest_version() == -1
    assert slot.read_state_dict()[0] == -1
    slot.publish_state_dict(sd, 3)
    other = WeightSlot.attach(run_id, "w")
    version, got = other.read_state_dict()
    assert version == 3 and other.latest_version() == 3
    for k, v in sd.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v)
    with pytest.raises(ValueError, match="does not match"):
        slot.publish_state_dict({**sd, "w": torch.zeros(3, 2)}, 4)
    other.close()
    slot.close()


@pytest.mark.parametrize("hogs", [0, 2])
def test_readers_never_starve_under_a_hammering_writer(run_id, ctx, hogs):
    """A writer publishing 1 MiB back to back, and (hogs=2) two busy processes on the 2 cores:
    every read is a consistent copy, and returns within a bounded time."""
    slot = WeightSlot.create(run_id, "w", 1 << 20)  # 1 MiB: a copy takes long enough to overlap
    busy = [start(ctx, cpu_hog, 4.0) for _ in range(hogs)]
    p = start(ctx, weight_hammer, run_id, "w", 3.0)
    out = np.empty(slot.nbytes // 8, np.int64)
    try:
        versions, slowest = [], 0.0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 and p.is_alive():
            t = time.monotonic()
            v = slot.read_into(out, timeout=2.0)
            slowest = max(slowest, time.monotonic() - t)
            if v < 0:
                continue
            assert out[0] == v and (out == v).all(), f"torn read: version {v}, values {np.unique(out)[:4]}"
            versions.append(v)
        assert len(versions) > 20 and versions == sorted(versions) and len(set(versions)) > 5
        assert slowest < 1.0, f"a read took {slowest:.2f} s"
    finally:
        stop(p)
        for b in busy:
            b.kill()
            b.join(5)
        slot.close()


def test_readers_pin_their_copy_and_the_writer_writes_elsewhere(run_id):
    slot = WeightSlot.create(run_id, "w", 64)
    reader = WeightSlot.attach(run_id, "w")
    slot.publish(np.full(8, 1, np.int64), 1)
    out = np.empty(8, np.int64)
    assert reader.read_into(out) == 1 and (out == 1).all()
    # a reader in the middle of copying the newest buffer pins it: publishes go to the others
    newest = int(slot._ctrl[0]) - 1
    row = reader._row
    reader._table[row, 0] = newest + 1
    for v in range(2, 6):
        slot.publish(np.full(8, v, np.int64), v)
    assert (slot._bufs[newest].view(np.int64) == 1).all()
    reader._table[row, 0] = 0
    assert reader.read_into(out) == 5 and (out == 5).all() and reader.latest_version() == 5
    reader.close()
    slot.close()


def test_writer_dead_mid_publish_leaves_the_last_complete_version(run_id, ctx):
    slot = WeightSlot.create(run_id, "w", 64)
    slot.publish(np.zeros(8, np.int64), 1)
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    target = slot._target()
    slot._seq[target] += 1  # a publish in progress into the other buffer ...
    slot._ver[target] = 2
    slot._bufs[target][:] = 255  # ... half written ...
    slot._ctrl[1] = dead.pid  # ... by a writer that is gone
    out = np.empty(8, np.int64)
    t0 = time.monotonic()
    assert slot.read_into(out, timeout=2) == 1 and (out == 0).all() and slot.latest_version() == 1
    assert time.monotonic() - t0 < 0.5
    slot.publish(np.ones(8, np.int64), 2)  # a new writer recovers the slot
    assert slot.read_into(out) == 2 and (out == 1).all()
    slot.close()


def test_reader_rows_are_reused_after_close_and_after_death(run_id, ctx):
    slot = WeightSlot.create(run_id, "w", 64)
    slot.publish(np.zeros(8, np.int64), 0)
    out = np.empty(8, np.int64)
    readers = [WeightSlot.attach(run_id, "w") for _ in range(MAX_READERS)]
    for r in readers:
        assert r.read_into(out) == 0
    extra = WeightSlot.attach(run_id, "w")
    with pytest.raises(RuntimeError, match="reader rows are taken"):
        extra.read_into(out)
    readers.pop().close()
    assert extra.read_into(out) == 0
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    readers[0]._table[readers[0]._row, 1] = dead.pid  # that row's process is gone
    late = WeightSlot.attach(run_id, "w")
    assert late.read_into(out) == 0 and late._row == readers[0]._row
    for r in [*readers, extra, late]:
        r.close()
    slot.close()


def test_a_first_read_works_after_the_name_was_unlinked(run_id):
    """A run stopping by Ctrl-C unlinks its segments at once; a role's first read of a slot it attached earlier
    (the trainer's final checkpoint reads the target slot) must still work."""
    slot = WeightSlot.create(run_id, "w", 64)
    slot.publish(np.full(8, 4, np.int64), 4)
    reader = WeightSlot.attach(run_id, "w")
    slot.seg.unlink()
    out = np.empty(8, np.int64)
    assert reader.read_into(out) == 4 and (out == 4).all()
    reader.close()
    slot.close()
