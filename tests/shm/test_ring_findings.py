"""Regression tests of the outside stress test's findings (issue 11), one or more per finding.

Each reproduces the failing interleaving deterministically in one process (the writer and the
reader ends of one ring), with timeouts, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import msgpack
import numpy as np
import pytest

from speedy.shm import FrameStore, MuxReader, Ring, create_mux, mux_writer
from speedy.shm.codec import MAGIC, CodecError, encode, message_size
from speedy.shm.ring import HEAD, R_SLEEP, RingClosedError, RingTimeoutError

CAP = 1024


@pytest.fixture
def ring(run_id):
    r = Ring.create(run_id, "f", CAP)
    yield r
    r.close()


def msg(fill: int, nbytes: int) -> tuple[dict, dict]:
    """Fields and arrays of a message whose payload is `nbytes` bytes of `fill`."""
    return {"fill": fill}, {"x": np.full(nbytes, fill, np.uint8)}


def leave_wrap_marker(w, nbytes: int) -> None:
    """Make the writer publish a wrap marker and then give up waiting for the record's space."""
    with pytest.raises(RingTimeoutError):
        w.put(*msg(9, nbytes), timeout=0.02)


# -- 1. the space of a wrap marker stepped over while a message is held is released ----------------

@pytest.mark.parametrize("read", ["get_held", "get_batch", "get_batch_copy", "aget_batch"])
def test_wrap_marker_stepped_over_while_holding_is_released(ring, read):
    w, r = ring.writer(), ring.reader()
    w.put(*msg(1, 300))
    w.put(*msg(2, 300))  # tail ~ 720: a 700-byte record must wrap
    leave_wrap_marker(w, 700)
    if read == "get_held":
        held = [r.get(), r.get()]
        with pytest.raises(RingTimeoutError):
            r.get(timeout=0.02)  # steps over the marker while both are held
        for m in held:
            m.release()
    elif read == "aget_batch":
        batch = asyncio.run(r.aget_batch(8, timeout=0.02))
        assert len(batch) == 2
        for m in batch:
            m.release()
    else:
        batch = r.get_batch(8, copy=read == "get_batch_copy")
        assert [m.fields["fill"] for m in batch] == [1, 2]
        for m in batch:
            m.release()
    assert ring.ctrl[HEAD] == CAP  # everything up to the wrap is free again
    w.put(*msg(3, 700), timeout=0.5)  # needs the marker's space: deadlocked before the fix
    assert r.get(copy=True, timeout=0.5).fields["fill"] == 3


# -- 2. a batch read never releases a message an earlier get() still holds ------------------------

@pytest.mark.parametrize("copy", [True, False])
def test_batch_starting_at_a_wrap_marker_keeps_a_held_message(ring, copy):
    w, r = ring.writer(), ring.reader()
    w.put(*msg(7, 300))
    w.put(*msg(8, 300))
    held = r.get()  # zero copy, held across the batch below
    assert r.get(copy=True).fields["fill"] == 8
    leave_wrap_marker(w, 300)  # marker right after message 8
    assert r.get_batch(8, timeout=0.02, copy=copy) == []  # the batch starts at the marker
    with contextlib.suppress(RingTimeoutError):
        w.put(*msg(238, 300), timeout=0.05)  # must not get the held message's bytes
    assert (held.arrays["x"] == 7).all(), "a held zero-copy message was overwritten"
    held.release()
    w.put(*msg(5, 300), timeout=0.5)
    got = [m.fields["fill"] for m in r.get_batch(8, timeout=0.5, copy=True)]
    assert got in ([238, 5], [5]) or got[-1] == 5


# -- 3. malformed records raise CodecError, are released, and the ring goes on ---------------------

def raw_message(dtype: str, shape: list, nbytes: int = 0) -> bytes:
    """A codec record whose array table names `dtype`, `shape` and `nbytes` as given (no checks)."""
    header = msgpack.packb({"f": {}, "a": [["x", dtype, shape, 0, nbytes]]})
    base = (16 + len(header) + 63) // 64 * 64
    total = base + nbytes
    prefix = struct.pack("<IIII", MAGIC, len(header), base, total)
    return prefix + header + bytes(base - 16 - len(header)) + bytes(nbytes)


@pytest.mark.parametrize("dtype, shape", [("(", [4]), ("f8,(", [4]), ("(,)f8", [4]), ("f8,f8)", [4]),
                                          ("(9999999999,)f8", [4]), ("f8,i4", [0]), ("xyz", [4]),
                                          ("|u1", [0, 2**63]), ("|u1", [0, 2**32, 2**32]),
                                          ("<f8", [0] + [2**32] * 3), ("|u1", [-1]), ("O", [4])])
def test_malformed_records_raise_codec_error_and_do_not_wedge_the_ring(ring, dtype, shape):
    w, r = ring.writer(), ring.reader()
    bad = raw_message(dtype, shape)
    for k in range(3 * CAP // 64):  # well past the ring's capacity: a leaked record wedges it
        w.put_bytes(bad, timeout=0.5)
        with pytest.raises(CodecError):
            r.get(timeout=0.5)
        w.put(*msg(k % 256, 8), timeout=0.5)
        assert r.get(copy=True, timeout=0.5).fields["fill"] == k % 256


# -- 4. dropping producer 0 of a mux keeps the mux's doorbell -------------------------------------

def test_mux_drop_first_producer_keeps_working(run_id):
    rings = create_mux(run_id, "m", 2, 4096)
    reader = MuxReader.attach(run_id, "m")
    writer = mux_writer(run_id, "m", 1)
    try:
        reader.drop(0)
        with pytest.raises(RingTimeoutError):
            reader.get(timeout=0.15)  # sleeps on the doorbell (EBADF before the fix)
        writer.put({"k": 1})
        assert reader.get(timeout=1, copy=True)[1].fields == {"k": 1}
        writer.put({"k": 2})
        assert asyncio.run(reader.aget(timeout=1, copy=True))[1].fields == {"k": 2}
        with pytest.raises(IndexError, match="cannot drop producer 5"):
            reader.drop(5)
    finally:
        writer.close()
        reader.close()
        writer.ring.close()
        for r in reader.readers:
            r.ring.close()
        for r in rings:
            r.close()
        rings[0].mux_segment.close()


# -- 6. the smaller ones --------------------------------------------------------------------------

def test_close_after_publish_is_not_reported_before_the_record(ring):
    """The writer publishes and closes between the reader's last ready() and its peer check."""
    w, r = ring.writer(), ring.reader()
    real_ready = r.ready
    state = {"slept": False, "acted": False}

    def ready_then_peer_acts() -> bool:
        seen = real_ready()
        if ring.ctrl[R_SLEEP]:
            state["slept"] = True  # the check just before the reader sleeps on its doorbell
        elif state["slept"] and not state["acted"]:  # the check after it woke up
            state["acted"] = True
            w.put({"last": True})
            w.close()
        return seen

    r.ready = ready_then_peer_acts
    assert r.get(timeout=2, copy=True).fields == {"last": True}
    assert state["acted"]
    r.ready = real_ready
    with pytest.raises(RingClosedError):
        r.get(timeout=1)


def test_payload_over_4_gib_is_a_codec_error(ring):
    huge = np.zeros(2**32 + 1, np.uint8)  # calloc'd: no page is touched
    with pytest.raises(CodecError, match="exceeds the codec's limit"):
        encode({}, {"x": huge})
    with pytest.raises(CodecError, match="exceeds the codec's limit"):
        ring.writer().put({}, {"x": huge})


def test_a_record_that_fits_exactly_is_accepted_and_refusals_say_the_real_size(run_id):
    ring = Ring.create(run_id, "exact", 4096)
    try:
        w, r = ring.writer(), ring.reader()
        # at data offset 0 the codec puts the payload 56 bytes in: 4008 payload bytes = 4064
        assert message_size(31, 4008, ring.base + 8) == 4064
        w.put({}, {"x": np.full(4008, 3, np.uint8)}, timeout=0.5)
        m = r.get(timeout=0.5)
        assert m.arrays["x"].size == 4008 and (m.arrays["x"] == 3).all()
        m.release()
        with pytest.raises(ValueError, match=r"message of 4168 ring bytes .* does not fit .* \(4096 bytes\)"):
            w.put({}, {"x": np.zeros(4100, np.uint8)})
    finally:
        ring.close()


def test_frame_ids_must_be_integers(run_id):
    store = FrameStore.create(run_id, "fs", (2,), np.uint8, 4)
    try:
        store.append(np.arange(6, dtype=np.uint8).reshape(3, 2))
        with pytest.raises(TypeError, match="frame ids must be integers"):
            store.get([1.5])
        with pytest.raises(TypeError, match="frame id must be an integer"):
            store.view(1.0)
        assert store.get(np.array([1], np.uint32)).tolist() == [[2, 3]]
        assert store.get([]).shape == (0, 2)
    finally:
        store.close()


def test_ready_is_false_when_only_a_wrap_marker_is_left(ring):
    w, r = ring.writer(), ring.reader()
    w.put(*msg(1, 300))
    w.put(*msg(2, 300))
    assert r.get(copy=True).fields["fill"] == 1
    assert r.get(copy=True).fields["fill"] == 2
    leave_wrap_marker(w, 700)
    assert not r.ready()
    assert ring.ctrl[HEAD] == CAP  # ready() released the marker's space for the writer


def test_writer_close_after_ring_close(run_id):
    ring = Ring.create(run_id, "c", 256)
    w, r = ring.writer(), ring.reader()
    ring.close()
    w.close()
    r.close()


def test_message_fields_of_a_good_record_after_a_bad_one_in_a_batch(ring):
    """A bad record behind good ones in a batch: the good ones come, the next call raises, then on."""
    w, r = ring.writer(), ring.reader()
    w.put({"k": 0})
    w.put_bytes(raw_message("(", [4]))
    w.put({"k": 1})
    assert [m.fields for m in r.get_batch(8, copy=True)] == [{"k": 0}]
    with pytest.raises(CodecError):
        r.get_batch(8, copy=True)
    assert [m.fields for m in r.get_batch(8, copy=True)] == [{"k": 1}]
