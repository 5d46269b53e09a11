"""Peer death: SIGKILL a writer or a reader mid-stream; the peer must get a clear error fast,
never a duplicate or half record; no /dev/shm file may survive."""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest

from speedy.shm import PeerDiedError, Ring, cleanup_stale, list_segments

from ._children import check_record, endless_writer, segment_maker, slow_reader
from .conftest import start, stop


def test_sigkill_writer_mid_stream(run_id, ctx):
    ring = Ring.create(run_id, "r", 1 << 16)
    r = ring.reader()
    p = start(ctx, endless_writer, run_id, "r", 20_000)  # ~20 KB records: kills land mid-copy
    try:
        seen = []
        while len(seen) < 200:
            seen += [check_record(x) for x in r.get_many(64, timeout=10)]
        os.kill(p.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        with pytest.raises(PeerDiedError, match=f"writer \\(pid {p.pid}\\) died"):
            while True:
                seen += [check_record(x) for x in r.get_many(64, timeout=5)]
        assert time.monotonic() - t_kill < 2.0
        assert seen == list(range(len(seen)))  # exactly once, in order, none torn
    finally:
        stop(p)
        r.close()
        ring.close()


def test_sigkill_reader_mid_stream(run_id, ctx):
    ring = Ring.create(run_id, "r", 4096)
    w = ring.writer()
    p = start(ctx, slow_reader, run_id, "r")
    try:
        for i in range(20):
            w.put_bytes(bytes([i]) * 100, timeout=10)
        while ring.ctrl[8] == 0:  # head: the reader has attached and consumed something
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        with pytest.raises(PeerDiedError, match=f"reader \\(pid {p.pid}\\) died"):
            for _ in range(1000):
                w.put_bytes(bytes(100), timeout=5)
        assert time.monotonic() - t_kill < 2.0
    finally:
        stop(p)
        w.close()
        ring.close()


def test_half_written_record_is_never_delivered(run_id, ctx):
    """A writer that dies between writing bytes and publishing the tail exposes nothing."""
    ring = Ring.create(run_id, "r", 4096)
    w, r = ring.writer(), ring.reader()
    w.put_bytes(b"complete")
    off = w._reserve(64)
    struct.pack_into("<II", ring.data, off, 56, 0xDA7A0001)  # header + half the body, no commit
    ring.data[off + 8 : off + 36] = b"h" * 28
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    ring.ctrl[16] = dead.pid  # pretend the writer was that (now dead) process
    ring.ctrl_f[17] = 0.0
    assert r.get_bytes(timeout=1) == b"complete"
    t0 = time.monotonic()
    with pytest.raises(PeerDiedError):
        r.get_bytes(timeout=5)
    assert time.monotonic() - t0 < 1.0
    r.close()
    ring.close()


def test_sigterm_unlinks_and_sigkill_leaves_stale_segments_for_cleanup(run_id, ctx, tmp_path):
    for sig, name in ((signal.SIGTERM, "term"), (signal.SIGKILL, "kill")):
        ready = tmp_path / name
        p = start(ctx, segment_maker, run_id, name, str(ready))
        try:
            t0 = time.monotonic()
            while not ready.exists() and time.monotonic() - t0 < 20:
                time.sleep(0.02)
            assert [s.name for s in list_segments(run_id)] == [f"speedy_{run_id}_{name}"]
            os.kill(p.pid, sig)
            p.join(5)
        finally:
            stop(p)
        left = [s.name for s in list_segments(run_id)]
        if sig == signal.SIGTERM:
            assert left == [] and p.exitcode == -signal.SIGTERM
        else:
            assert left == [f"speedy_{run_id}_{name}"]
            assert cleanup_stale(run_id) == [f"/dev/shm/speedy_{run_id}_{name}"]


def test_an_ignored_sigint_leaves_the_segments_of_a_process_that_runs_on(run_id, ctx, tmp_path):
    """A process that ignores SIGINT (started in the background by a script) keeps running on it, so its segments
    must stay: its peers still attach to them."""
    ready = tmp_path / "ready"
    p = start(ctx, segment_maker, run_id, "ign", str(ready), True)
    try:
        t0 = time.monotonic()
        while not ready.exists() and time.monotonic() - t0 < 20:
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGINT)
        time.sleep(0.5)
        assert p.is_alive()
        assert [s.name for s in list_segments(run_id)] == [f"speedy_{run_id}_ign"]
    finally:
        p.kill()
        stop(p)
    cleanup_stale(run_id)
