"""Child-process bodies for the shm tests (module level so that spawn can import them)."""

from __future__ import annotations

import hashlib
import os
import struct
import time

import numpy as np

from speedy.shm import FrameStore, Ring, RingClosedError, WeightSlot


def echo_server(run_id: str, ctl_name: str) -> None:
    """Serve echo jobs described on ring `ctl_name` until it is closed.

    Job fields: a (input ring), b (output ring), n (records), mode ('raw' or 'msg'), batch (max
    records per get_many)."""
    ctl = Ring.attach(run_id, ctl_name).reader()
    while True:
        try:
            job = ctl.get(timeout=30, copy=True).fields
        except RingClosedError:
            return
        src = Ring.attach(run_id, job["a"]).reader()
        dst = Ring.attach(run_id, job["b"]).writer()
        done = 0
        while done < job["n"]:
            if job["mode"] == "raw":
                got = src.get_many(job["batch"], timeout=10)
                dst.put_many(got, timeout=10)
                done += len(got)
            else:
                with src.get(timeout=10) as m:
                    dst.put(m.fields, m.arrays, timeout=10)
                done += 1
        src.close()
        dst.close()
        src.ring.close()
        dst.ring.close()


def seq_record(i: int, size: int) -> bytes:
    """Record i: 8-byte index, payload derived from i, 16-byte digest of both (checkable)."""
    body = struct.pack("<q", i) + (bytes([i % 251]) * size)
    return body + hashlib.blake2b(body, digest_size=16).digest()


def check_record(rec: bytes) -> int:
    """Index of a record made by `seq_record`; raises AssertionError if it is torn."""
    body, digest = rec[:-16], rec[-16:]
    assert hashlib.blake2b(body, digest_size=16).digest() == digest, "torn record"
    return struct.unpack_from("<q", body)[0]


def endless_writer(run_id: str, name: str, size: int) -> None:
    """Write seq records forever (until killed)."""
    w = Ring.attach(run_id, name).writer()
    i = 0
    while True:
        w.put_many([seq_record(i + k, size) for k in range(4)])
        i += 4


def slow_reader(run_id: str, name: str) -> None:
    """Read records slowly forever (until killed)."""
    r = Ring.attach(run_id, name).reader()
    while True:
        r.get_bytes()
        time.sleep(0.01)


def weight_hammer(run_id: str, name: str, seconds: float) -> None:
    """Publish versions 1, 2, ... where every int64 of the buffer equals the version."""
    slot = WeightSlot.attach(run_id, name)
    buf = np.empty(slot.nbytes // 8, np.int64)
    v = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        v += 1
        buf[:] = v
        slot.publish(buf, v)
    slot.close()


def cpu_hog(seconds: float) -> None:
    """Keep one core busy for `seconds` (load for the tests that must hold on a busy machine)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        pass


def frame_reader(run_id: str, name: str, ids: list, out_name: str) -> None:
    """Read frames by id from a store and send their sums back on ring `out_name`."""
    store = FrameStore.attach(run_id, name)
    w = Ring.attach(run_id, out_name).writer()
    frames = store.get(np.asarray(ids))
    w.put({"pid": os.getpid()}, {"sums": frames.reshape(len(ids), -1).sum(axis=1)})
    w.close()


def segment_maker(run_id: str, name: str, ready_path: str, ignore_sigint: bool = False) -> None:
    """Create a segment, signal readiness by creating `ready_path`, then sleep until killed. `ignore_sigint`: the
    process ignores SIGINT from the start, as a job started in the background by a shell script does."""
    import signal

    from speedy.shm import Segment

    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    Segment.create(run_id, name, 4096)
    open(ready_path, "w").close()
    time.sleep(60)
