"""Property tests of a ring between two real processes: every write mode against every read mode.

A spawned writer sends sequence-numbered, digest-checked messages of sizes up to the ring's
capacity (so records land at every wrap offset); the reader interleaves held zero-copy `get()`s,
copy and zero-copy batches, raw reads, and async and sync paths, and re-checks each held message
when it releases it. These are the interleavings that lost a wrap marker's space (deadlock) and
let the writer overwrite a held message before issue 11's fixes.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedy.shm import Ring, codec
from speedy.shm.ring import record_size
from speedy.shm.stress import READ_MODES, WRITE_MODES, read_plan, run_writer

from .conftest import start, stop

CAP = 2048
_OVERHEAD = codec.plan({"i": 2**40, "n": CAP, "d": bytes(8)}, {"x": np.zeros(1, np.uint8)}).size_bound
MAX_PAYLOAD = CAP - 8 - _OVERHEAD - 8  # the largest payload whose record always fits the ring


def sizes() -> st.SearchStrategy[int]:
    """Payload sizes: mostly small, some near the ring's capacity (those force wraps)."""
    return st.one_of(st.integers(0, 64), st.integers(64, MAX_PAYLOAD // 2), st.integers(MAX_PAYLOAD - 64, MAX_PAYLOAD))


write_plans = st.lists(st.tuples(st.sampled_from(WRITE_MODES), sizes()), min_size=20, max_size=120)
read_plans = st.lists(st.tuples(st.sampled_from(READ_MODES), st.integers(1, 8), st.integers(0, 4)),
                      min_size=1, max_size=12)


_names = itertools.count()


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(write=write_plans, read=read_plans, lead=st.integers(0, CAP // 8 - 1))
def test_every_mode_mix_delivers_every_message_intact(run_id, ctx, write, read, lead):
    assert record_size(_OVERHEAD + MAX_PAYLOAD) <= CAP
    name = f"s{next(_names)}"
    ring = Ring.create(run_id, name, CAP)
    r = ring.reader()
    try:
        # the writer starts `lead` 8-byte records into the ring, so that wraps hit every offset
        p = start(ctx, run_writer, run_id, name, [list(x) for x in write], 10.0, lead)
        try:
            report = read_plan(r, read, len(write), timeout=10.0, lead=lead)
        finally:
            stop(p)
        assert report.clean, report
        assert report.messages == len(write) and report.mismatches == 0 and report.stalls == 0
        assert set(report.by_mode) <= set(READ_MODES)
    finally:
        r.close()
        ring.close()
