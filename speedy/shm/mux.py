"""Many-to-one and one-to-many built from SPSC rings (so nothing needs a lock).

Many-to-one: one SPSC ring per producer (``<name>.0``, ``<name>.1``, ...), all sharing one reader
doorbell (``<name>.bell``). `MuxReader` polls them round-robin (fair), and when all are empty it
sets the sleeping flag of every ring, fences, re-checks and sleeps on the shared doorbell: any
producer's publish wakes it. Each ring is still strictly single-producer, so the SPSC
correctness argument of `ring.py` applies unchanged.

One-to-many: `FanOutWriter` holds one writer per consumer ring and either broadcasts a message to
all, sends it to one, or sends it to the ring with the most free space (load balancing).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from speedy.shm import codec
from speedy.shm.doorbell import Doorbell, fence
from speedy.shm.ring import (
    POLL_S,
    R_SLEEP,
    SPIN_S,
    PeerDiedError,
    Ring,
    RingClosedError,
    RingReader,
    RingTimeoutError,
    RingWriter,
)
from speedy.shm.segment import Segment, segment_path


def create_mux(run_id: str, name: str, n_producers: int, capacity: int) -> list[Ring]:
    """Create the rings of a many-to-one channel (in the owning process). Producer i attaches
    with `mux_writer(run_id, name, i)`, the consumer with `MuxReader.attach(run_id, name)`."""
    if n_producers < 1:
        raise ValueError(f"a mux needs >= 1 producer, got {n_producers}")
    seg = Segment.create(run_id, name, 64, {"kind": "mux", "n": n_producers})
    bell = f"{segment_path(run_id, name)}.bell"
    Doorbell.create(bell).close()
    rings = [Ring.create(run_id, f"{name}.{i}", capacity, reader_bell=bell) for i in range(n_producers)]
    rings[0].mux_segment = seg  # close it (with the rings) to remove the mux and its doorbell
    return rings


def mux_writer(run_id: str, name: str, index: int) -> RingWriter:
    """Writer end for producer `index` of mux `name`."""
    return Ring.attach(run_id, f"{name}.{index}").writer()


class MuxReader:
    """Consumer of a many-to-one channel. `get` / `get_many` / `aget` / `aget_many` take from
    whichever producer has data, round-robin."""

    def __init__(self, readers: Sequence[RingReader]) -> None:
        if not readers:
            raise ValueError("MuxReader needs at least one ring reader")
        self.readers = list(readers)
        self._next = 0
        # the mux's own fd on the shared doorbell: dropping (closing) any ring reader, the first
        # included, must not close what the mux sleeps on
        self._bell = Doorbell(self.readers[0].ring.reader_bell_path)

    @classmethod
    def attach(cls, run_id: str, name: str) -> MuxReader:
        """Attach the reading ends of every ring of mux `name`."""
        seg = Segment.attach(run_id, name)
        n = int(seg.meta["n"])
        seg.close()
        return cls([Ring.attach(run_id, f"{name}.{i}").reader() for i in range(n)])

    def _ready(self) -> bool:
        return any(r.ready() for r in self.readers)

    def _order(self) -> list[RingReader]:
        k = self._next % len(self.readers)
        self._next = k + 1
        return self.readers[k:] + self.readers[:k]

    def _check_peers(self) -> None:
        open_any = False
        for r in self.readers:
            try:
                r._check_peer()
                open_any = True
            except RingClosedError:
                continue
            except PeerDiedError:
                raise
        if not open_any:
            raise RingClosedError(f"all {len(self.readers)} producers of the mux closed")

    def _wait(self, timeout: float | None) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < SPIN_S:
            if self._ready():
                return
        deadline = None if timeout is None else t0 + timeout
        while True:
            for r in self.readers:
                r.ctrl[R_SLEEP] = 1
            fence()
            ready = self._ready()
            if not ready:
                self._bell.wait(POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic()))
            for r in self.readers:
                r.ctrl[R_SLEEP] = 0
            self._bell.drain()
            if ready or self._ready():
                return
            self._check_peers()
            if deadline is not None and time.monotonic() >= deadline:
                raise RingTimeoutError(f"mux of {len(self.readers)} rings: timed out after {timeout} s")

    async def _await(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for r in self.readers:
                r.ctrl[R_SLEEP] = 1
            fence()
            ready = self._ready()
            if not ready:
                await self._bell.wait_async(POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic()))
            for r in self.readers:
                r.ctrl[R_SLEEP] = 0
            self._bell.drain()
            if ready or self._ready():
                return
            self._check_peers()
            if deadline is not None and time.monotonic() >= deadline:
                raise RingTimeoutError(f"mux of {len(self.readers)} rings: timed out after {timeout} s")

    def _take(self, copy: bool) -> tuple[int, codec.Message] | None:
        for r in self._order():
            msg = r._take_message(copy)
            if msg is not None:
                return self.readers.index(r), msg
        return None

    def get(self, timeout: float | None = None, copy: bool = False) -> tuple[int, codec.Message]:
        """(producer index, message) of the next message from any producer (zero-copy unless `copy`)."""
        got = self._take(copy)
        while got is None:
            self._wait(timeout)
            got = self._take(copy)
        return got

    async def aget(self, timeout: float | None = None, copy: bool = False) -> tuple[int, codec.Message]:
        """Async `get`."""
        got = self._take(copy)
        while got is None:
            await self._await(timeout)
            got = self._take(copy)
        return got

    def _take_many(self, max_n: int) -> list[bytes]:
        out: list[bytes] = []
        for r in self._order():
            if len(out) >= max_n:
                break
            out.extend(r._take_many(max_n - len(out)))
        return out

    def get_many(self, max_n: int = 4096, timeout: float | None = None) -> list[bytes]:
        """Up to `max_n` raw records from any producers; [] if `timeout` expires first."""
        out = self._take_many(max_n)
        while not out:
            try:
                self._wait(timeout)
            except RingTimeoutError:
                return []
            out = self._take_many(max_n)
        return out

    async def aget_many(self, max_n: int = 4096, timeout: float | None = None) -> list[bytes]:
        """Async `get_many`."""
        out = self._take_many(max_n)
        while not out:
            try:
                await self._await(timeout)
            except RingTimeoutError:
                return []
            out = self._take_many(max_n)
        return out

    def drop(self, index: int) -> None:
        """Stop listening to producer `index` (e.g. after it died)."""
        if not 0 <= index < len(self.readers):
            raise IndexError(f"mux has {len(self.readers)} producers; cannot drop producer {index}")
        r = self.readers.pop(index)
        r.close()
        self._next = 0

    def close(self) -> None:
        """Close every reading end."""
        for r in self.readers:
            r.close()
        self._bell.close()


class FanOutWriter:
    """Producer of a one-to-many channel: one SPSC ring writer per consumer."""

    def __init__(self, writers: Sequence[RingWriter]) -> None:
        if not writers:
            raise ValueError("FanOutWriter needs at least one ring writer")
        self.writers = list(writers)

    def put(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
            to: int | None = None, timeout: float | None = None) -> None:
        """Send to consumer `to`, or to every consumer if `to` is None."""
        targets = self.writers if to is None else [self.writers[to]]
        for w in targets:
            w.put(fields, arrays, timeout)

    async def aput(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
                   to: int | None = None, timeout: float | None = None) -> None:
        """Async `put`."""
        targets = self.writers if to is None else [self.writers[to]]
        for w in targets:
            await w.aput(fields, arrays, timeout)

    def put_balanced(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
                     timeout: float | None = None) -> int:
        """Send to the consumer whose ring has the most free space; returns its index."""
        k = max(range(len(self.writers)), key=lambda i: self.writers[i].free_bytes())
        self.writers[k].put(fields, arrays, timeout)
        return k

    def close(self) -> None:
        """Close every writing end."""
        for w in self.writers:
            w.close()
