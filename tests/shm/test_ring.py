"""Ring in one process: layout, wrap-around, full/empty, release order, corruption, async."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import uvloop

from speedy.shm import CodecError, CorruptRecordError, Ring, RingClosedError, RingError, RingTimeoutError
from speedy.shm.ring import HEAD, KIND_SKIP, TAIL, record_size


@pytest.fixture
def ring(run_id):
    r = Ring.create(run_id, "r", 256)
    yield r
    r.close()


def test_record_size_hand_values():
    assert record_size(0) == 8
    assert record_size(1) == 16
    assert record_size(8) == 16
    assert record_size(9) == 24


def test_counters_and_wrap_with_skip_marker(ring):
    w, r = ring.writer(), ring.reader()
    w.put_bytes(b"a" * 100)  # 112 bytes at [0, 112)
    w.put_bytes(b"b" * 100)  # [112, 224)
    assert ring.ctrl[TAIL] == 224
    assert r.get_bytes() == b"a" * 100
    assert ring.ctrl[HEAD] == 112
    w.put_bytes(b"c" * 40)  # 48 bytes do not fit in [224, 256): skip 32 (published), write at 0
    n, kind = struct.unpack_from("<II", ring.data, 224)
    assert (n, kind) == (24, KIND_SKIP)
    assert ring.ctrl[TAIL] == 256 + 48
    assert r.get_many() == [b"b" * 100, b"c" * 40]
    assert ring.ctrl[HEAD] == 304


def test_full_ring_times_out_and_empty_ring_times_out(ring):
    w, r = ring.writer(), ring.reader()
    w.put_bytes(bytes(200))
    with pytest.raises(RingTimeoutError, match="writer timed out"):
        w.put_bytes(bytes(100), timeout=0.05)
    assert r.get_bytes() == bytes(200)
    with pytest.raises(RingTimeoutError, match="reader timed out"):
        r.get_bytes(timeout=0.05)
    assert r.get_many(timeout=0.01) == []


def test_too_large_record_is_a_clear_error(ring):
    with pytest.raises(ValueError, match="does not fit"):
        ring.writer().put_bytes(bytes(300))


def test_out_of_order_release_advances_head_over_prefix(run_id):
    ring = Ring.create(run_id, "r", 4096)
    w, r = ring.writer(), ring.reader()
    for i in range(3):
        w.put({"i": i}, {"x": np.full(4, i, np.int32)})
    m0, m1, m2 = r.get(), r.get(), r.get()
    assert [m.fields["i"] for m in (m0, m1, m2)] == [0, 1, 2]
    assert m1.arrays["x"].ctypes.data % 64 == 0
    m1.release()
    assert ring.ctrl[HEAD] == 0
    m0.release()
    assert ring.ctrl[HEAD] == record_size_of(ring, 2)
    m2.release()
    m2.release()  # idempotent
    assert ring.ctrl[HEAD] == ring.ctrl[TAIL]
    ring.close()


def record_size_of(ring, k):
    """Bytes of the first k records (walk the headers)."""
    pos = 0
    for _ in range(k):
        n, _kind = struct.unpack_from("<II", ring.data, pos)
        pos += record_size(n)
    return pos


def test_corrupt_header_raises(ring):
    w, r = ring.writer(), ring.reader()
    w.put_bytes(b"hello")
    struct.pack_into("<II", ring.data, 0, 5, 0xBADBAD)
    with pytest.raises(CorruptRecordError, match="bad record header"):
        r.get_bytes()


def test_malformed_message_raises_and_stream_goes_on(ring):
    w, r = ring.writer(), ring.reader()
    w.put_bytes(b"not a message")
    w.put({"ok": True})
    with pytest.raises(CodecError):
        r.get()
    assert r.get(copy=True).fields == {"ok": True}


def test_closed_writer_drains_then_raises(ring):
    w, r = ring.writer(), ring.reader()
    w.put_bytes(b"last")
    w.close()
    assert r.get_bytes(timeout=1) == b"last"
    with pytest.raises(RingClosedError, match="writer closed"):
        r.get_bytes(timeout=1)


def test_second_writer_is_refused(ring):
    ring.writer()
    other = Ring.attach(ring.name.split("_")[1], "r")
    # same pid may re-claim (one process holding both ends); fake a foreign live owner
    import os

    ring.ctrl[16] = os.getppid()
    ring.ctrl_f[17] = 0.0
    with pytest.raises(RingError, match="already has a writer"):
        other.writer()
    other.close()


async def test_async_put_get_under_uvloop(run_id):
    ring = Ring.create(run_id, "a", 1024)
    w, r = ring.writer(), ring.reader()

    async def produce():
        for i in range(200):
            await w.aput({"i": i}, {"x": np.arange(i % 7, dtype=np.int64)})
        await w.aput_many([b"x" * 5] * 50)

    async def consume():
        out = []
        for _ in range(200):
            m = await r.aget(timeout=5)
            out.append((m.fields["i"], m.arrays["x"].sum()))
            m.release()
        raw = []
        while len(raw) < 50:
            raw += await r.aget_many(timeout=5)
        return out, raw

    import asyncio

    async def both():
        _, (out, raw) = await asyncio.gather(produce(), consume())
        return out, raw

    out, raw = await both()
    assert [i for i, _ in out] == list(range(200))
    assert all(s == sum(range(i % 7)) for i, s in out)
    assert raw == [b"x" * 5] * 50
    ring.close()


def test_async_get_times_out_with_uvloop(ring):
    r = ring.reader()
    with pytest.raises(RingTimeoutError):
        uvloop.run(r.aget(timeout=0.2))
