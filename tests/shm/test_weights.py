"""Weight slot: layout round trip, and a writer hammering while readers check for torn reads."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from speedy.shm import PeerDiedError, WeightLayout, WeightSlot

from ._children import weight_hammer
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


def test_no_torn_reads_under_a_hammering_writer(run_id, ctx):
    slot = WeightSlot.create(run_id, "w", 1 << 20)  # 1 MiB: a copy takes long enough to overlap
    p = start(ctx, weight_hammer, run_id, "w", 3.0)
    out = np.empty(slot.nbytes // 8, np.int64)
    try:
        versions = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 and p.is_alive():
            v = slot.read_into(out)
            if v < 0:
                continue
            assert out[0] == v and (out == v).all(), f"torn read: version {v}, values {np.unique(out)[:4]}"
            versions.append(v)
        assert len(versions) > 20 and versions == sorted(versions) and len(set(versions)) > 5
    finally:
        stop(p)
        slot.close()


def test_writer_dead_mid_publish_raises(run_id, ctx):
    slot = WeightSlot.create(run_id, "w", 64)
    slot.publish(np.zeros(8, np.int64), 1)
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    slot._ctrl[0] += 1  # seq odd: a publish in progress ...
    slot._ctrl[16] = dead.pid  # ... by a writer that is gone
    slot._ctrl_f[17] = 0.0
    with pytest.raises(PeerDiedError, match="died mid-publish"):
        slot.read_into(np.empty(8, np.int64), timeout=2)
    slot.publish(np.ones(8, np.int64), 2)  # a new writer recovers the slot
    out = np.empty(8, np.int64)
    assert slot.read_into(out) == 2 and (out == 1).all()
    slot.close()
