"""Segments (naming, attach, cleanup) and the many-to-one / one-to-many channels."""

from __future__ import annotations

import numpy as np
import pytest

from speedy.shm import CodecError, FanOutWriter, MuxReader, Ring, Segment, SegmentError, create_mux, decode, mux_writer
from speedy.shm.segment import segment_path

from ._children import check_record, seq_record
from .conftest import start, stop


def test_names_and_attach(run_id):
    assert segment_path("run1", "ring.0").name == "speedy_run1_ring.0"
    for bad in ("a/b", "", "_x"):
        with pytest.raises(ValueError):
            segment_path("run1", bad)
    with pytest.raises(ValueError, match="run_id"):
        segment_path("run_1", "x")
    seg = Segment.create(run_id, "s", 100, {"k": [1, 2]})
    with pytest.raises(FileExistsError):
        Segment.create(run_id, "s", 100)
    other = Segment.attach(run_id, "s")
    assert other.meta == {"k": [1, 2]} and other.size == 100 and not other.owner
    other.ndarray(np.int32, 4, 3)[:] = [7, 8, 9]
    assert seg.ndarray(np.int32, 4, 3).tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="outside"):
        seg.ndarray(np.int64, 96, 1)
    other.close()
    seg.close()
    with pytest.raises(SegmentError, match="no shared-memory segment"):
        Segment.attach(run_id, "s")


def _producer(run_id: str, name: str, index: int, n: int) -> None:
    w = mux_writer(run_id, name, index)
    for i in range(n):
        w.put({"p": index, "i": i}, {"x": np.full(3, i, np.int16)}, timeout=10)
    w.put_many([seq_record(i, 10) for i in range(n)], timeout=10)
    w.close()


def test_many_to_one_with_real_producers(run_id, ctx):
    rings = create_mux(run_id, "m", 3, 2048)
    reader = MuxReader.attach(run_id, "m")
    procs = [start(ctx, _producer, run_id, "m", k, 50) for k in range(3)]
    try:
        k, msg = reader.get(timeout=20)  # the codec API names the producer
        assert msg.fields == {"p": k, "i": 0} and msg.arrays["x"].tolist() == [0, 0, 0]
        msg.release()
        raw = []
        while len(raw) < 299:
            raw += reader.get_many(64, timeout=20)
        assert len(raw) == 299
        got = {k: [] for k in range(3)}
        got[k].append(0)
        seqs = []
        for rec in raw:
            try:
                fields, arrays = decode(rec)
            except CodecError:
                seqs.append(check_record(rec))
                continue
            assert arrays["x"].tolist() == [fields["i"]] * 3
            got[fields["p"]].append(fields["i"])
        assert all(v == list(range(50)) for v in got.values())  # per producer: once, in order
        assert sorted(seqs) == sorted(list(range(50)) * 3)
    finally:
        for p in procs:
            stop(p)
        reader.close()
        for r in rings:
            r.close()
        rings[0].mux_segment.close()


def test_fan_out(run_id):
    rings = [Ring.create(run_id, f"o{k}", 1024) for k in range(3)]
    fan = FanOutWriter([r.writer() for r in rings])
    readers = [r.reader() for r in rings]
    fan.put({"all": 1})
    fan.put({"one": 2}, to=1)
    k = fan.put_balanced({"bal": 3})
    assert [rd.get(copy=True).fields for rd in readers] == [{"all": 1}] * 3
    assert readers[1].get(copy=True).fields == {"one": 2}
    assert k != 1 and readers[k].get(copy=True).fields == {"bal": 3}
    fan.close()
    for rd in readers:
        rd.close()
    for r in rings:
        r.close()
