"""Fast paths: cached codec tables, batched codec put/get, adaptive spin, raw frame cache."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speedy.shm import CodecError, Message, Ring, codec, decode, encode
from speedy.shm.codec import _PREFIX, MAGIC
from speedy.shm.ring import HEAD, SPIN_MAX_S, SPIN_S, TAIL, _frame, record_size


@pytest.fixture
def ring(run_id):
    r = Ring.create(run_id, "f", 1024)
    yield r
    r.close()


def _raw_message(head: dict, payload: bytes = b"") -> bytes:
    """A message with a hand-made header dict (any key order), payload base 64."""
    header = msgpack.packb(head, use_bin_type=True)
    base = (16 + len(header) + 63) // 64 * 64
    out = _PREFIX.pack(MAGIC, len(header), base, base + len(payload)) + header
    return out + bytes(base - len(out)) + payload


def test_cached_header_is_plain_msgpack_of_fields_and_table():
    x = np.arange(3, dtype=np.int16)
    header = codec.prepare({"k": 1}, {"x": x})[0]
    assert msgpack.unpackb(header) == {"f": {"k": 1}, "a": [["x", "<i2", [3], 0, 6]]}
    assert header == msgpack.packb({"f": {"k": 1}, "a": [["x", "<i2", [3], 0, 6]]})


def test_fast_decode_matches_slow_and_rechecks_bounds():
    x = np.arange(4, dtype=np.float64)
    for _ in range(3):  # first call fills the cache, later ones take the fast path
        fields, arrays = decode(encode({"i": 2}, {"x": x}))
        assert fields == {"i": 2} and arrays["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert not arrays["x"].flags.writeable
    good = encode({"i": 2}, {"x": x})
    short = bytearray(good[:-8])  # same (cached) table, payload cut: must still raise
    short[12:16] = (len(short)).to_bytes(4, "little")
    with pytest.raises(CodecError, match="beyond message end"):
        decode(bytes(short))


def test_non_canonical_key_order_still_decodes():
    payload = np.arange(2, dtype="<i4").tobytes()
    raw = _raw_message({"a": [["y", "<i4", [2], 0, 8]], "f": {"z": None}}, payload)
    fields, arrays = decode(raw)
    assert fields == {"z": None} and arrays["y"].tolist() == [0, 1]


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=3), st.binary(max_size=40) | st.integers(-(2**63), 2**63 - 1), max_size=3),
       st.sampled_from([0, 1, 2]))
def test_fields_that_look_like_a_cached_table_decode_right(fields, n_arrays):
    """Fields whose bytes end like `"a": <cached table>` must not fool the fast path."""
    x = np.arange(3, dtype=np.uint8)
    tables = [msgpack.packb([]), msgpack.packb([["x", "|u1", [3], 0, 3]])]
    decode(encode({}, {"x": x}))
    decode(encode({}))
    fields = dict(fields)
    fields["zz"] = b"\xa1a" + tables[n_arrays % 2]
    arrays = {f"a{k}": x for k in range(n_arrays)}
    got_fields, got = decode(encode(fields, arrays))
    assert got_fields == fields
    assert sorted(got) == sorted(arrays) and all(got[k].tolist() == [0, 1, 2] for k in got)


def test_frame_cache_hand_values():
    head, pad = _frame(5)
    assert head == (5).to_bytes(4, "little") + (0xDA7A0001).to_bytes(4, "little")
    assert pad == bytes(3) and record_size(5) == 8 + 5 + 3


def test_put_batch_get_batch_wraps_and_orders(ring):
    w, r = ring.writer(), ring.reader()
    msgs = [Message({"i": i}, {"x": np.full(i % 5, i, np.int32)}) for i in range(40)]
    got = []
    for k in range(0, 40, 8):  # each batch of 8 is bigger than what is left before the end
        w.put_batch(msgs[k : k + 8], timeout=1)
        got += r.get_batch(100, timeout=1, copy=True)
    assert [m.fields["i"] for m in got] == list(range(40))
    assert all(m.arrays["x"].tolist() == [i] * (i % 5) for i, m in enumerate(got))
    assert ring.ctrl[HEAD] == ring.ctrl[TAIL]


def test_get_batch_zero_copy_release_and_timeout(ring):
    w, r = ring.writer(), ring.reader()
    w.put_batch([Message({"i": i}) for i in range(3)])
    batch = r.get_batch(2)
    assert [m.fields["i"] for m in batch] == [0, 1]
    batch[1].release()
    assert ring.ctrl[HEAD] == 0  # the first is still held
    batch[0].release()
    assert ring.ctrl[HEAD] > 0
    assert [m.fields["i"] for m in r.get_batch(5, copy=True)] == [2]
    assert r.get_batch(5, timeout=0.02) == []
    with pytest.raises(ValueError, match="does not fit"):
        w.put_batch([Message({}, {"x": np.zeros(2000, np.uint8)})])


def test_get_batch_defers_a_bad_record_behind_good_ones(ring):
    w, r = ring.writer(), ring.reader()
    w.put({"ok": 1})
    w.put_bytes(b"garbage")
    w.put({"ok": 2})
    assert [m.fields for m in r.get_batch(10, copy=True)] == [{"ok": 1}]
    with pytest.raises(CodecError):
        r.get_batch(10, copy=True)
    assert [m.fields for m in r.get_batch(10, copy=True)] == [{"ok": 2}]


async def test_async_batch(ring):
    w, r = ring.writer(), ring.reader()
    await w.aput_batch([Message({"i": i}) for i in range(5)])
    got = await r.aget_batch(10, timeout=1, copy=True)
    assert [m.fields["i"] for m in got] == list(range(5))


def test_adaptive_spin_hand_values(ring):
    r = ring.reader()
    assert r._spin == SPIN_S
    r._learn(100e-6)
    assert r._spin == pytest.approx(200e-6)
    r._learn(SPIN_MAX_S * 0.9)
    assert r._spin == SPIN_MAX_S
    r._learn(0.05)  # a long, idle wait: back to the short spin
    assert r._spin == SPIN_S
    r._learn(1e-6)
    assert r._spin == SPIN_S
