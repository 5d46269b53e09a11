"""Single-producer single-consumer ring of variable-size records in shared memory.

Layout of the segment's data region (byte offsets)::

    0     tail   int64  bytes ever published by the writer   (own 64-byte cache line)
    64    head   int64  bytes ever released by the reader    (own cache line)
    128   writer pid, writer start time (float64 bits), writer-closed flag
    192   reader pid, reader start time, reader-closed flag
    256   reader-sleeping flag      320   writer-sleeping flag
    512   data: `capacity` bytes (a multiple of 64)

`tail` and `head` grow monotonically; a position p lives at data offset p % capacity. A record
is an 8-byte header (u32 body length, u32 kind) plus the body, padded to 8 bytes. A record never
splits across the end of the data area: the writer writes a SKIP header there and wraps to 0.

Memory ordering. The writer fills a record completely and only then stores `tail` (one aligned
8-byte store, atomic on x86-64 and aarch64). On x86-64 (TSO) stores become visible in program
order and loads are not reordered with older loads, so a reader that sees the new `tail` sees
the record's bytes (glibc's memcpy ends its non-temporal paths with an sfence). The same
argument protects the writer from reusing bytes before the reader's `head` store. Consequence:
a writer killed mid-record never publishes it, so it is never delivered. (On weakly ordered
CPUs the `fence()` between the data and the counter store covers the publish side too.)

Waiting. A waiter spins (adaptively: 50 us, or up to twice its recent wait times, at most
`SPIN_MAX_S`, so a steady stream is caught without a sleep while an idle end goes back to short
spins), then sets its "sleeping" flag, issues a full fence, re-checks
the ring and sleeps on its doorbell (a FIFO); the peer, after its counter store, fences and rings
only if the flag is set. This is the store-fence-load handshake on both sides, so no wake-up is
lost; and the sleeper wakes at least every `POLL_S` seconds anyway to check its peer's liveness
(pid + start time, zombies count as dead) and raises `PeerDiedError` if it is gone.

Records are read in place: `get()` returns a `Message` whose arrays are views into the ring;
the slot is handed back to the writer by `Message.release()`. Several messages may be held
at once and released in any order.

Release rule (what holds space). The reader keeps one pending entry, in ring order, for every
record *and every wrap marker* it has stepped over since `head`; `head` advances over the longest
prefix of released entries, and only then. An entry is released:
- a wrap (skip) marker: as soon as the reader steps over it (it carries nothing);
- a copied record (`get_bytes`, `get_many`, `get(copy=True)`, `get_batch(copy=True)`): once its
  bytes are copied out;
- a zero-copy message (`get()`, `get_batch()`): when its `release()` is called;
- a record whose decoding failed: at once (the error is raised; the stream goes on).
A batch read releases exactly the entries it created, never an earlier message still held, so a
held message's bytes are never reused, and a skipped gap is never left unreleased behind it.
`ready()` steps over (and releases) a trailing wrap marker, so a reader never sleeps while the
writer waits for the space of a marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import platform
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speedy.shm import codec
from speedy.shm.doorbell import Doorbell, fence
from speedy.shm.segment import HEADER_BYTES, Segment, forget_owned, pid_alive, process_start_time

CTRL_BYTES = 512
TAIL, HEAD = 0, 8
W_PID, W_START, W_CLOSED = 16, 17, 18
R_PID, R_START, R_CLOSED = 24, 25, 26
R_SLEEP, W_SLEEP = 32, 40

_REC = struct.Struct("<II")
KIND_DATA = 0xDA7A0001
KIND_SKIP = 0x5C1B0002
_PADS = [bytes(k) for k in range(8)]
SPIN_S = 50e-6
SPIN_MAX_S = 500e-6
POLL_S = 0.1
# x86-64 (TSO) keeps stores in program order: no fence is needed before publishing a counter.
_STORE_FENCE = platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686")
_MAX_BODY = 0xFFFFFFFF  # a record's body length is a u32


class RingError(RuntimeError):
    """Base class of ring errors."""


class PeerDiedError(RingError):
    """The process at the other end of a ring died while we waited on it."""


class RingClosedError(RingError):
    """The other end closed the ring (and, for a reader, every record was consumed)."""


class RingTimeoutError(RingError, TimeoutError):
    """A put on a full ring or a get on an empty ring did not complete within its timeout."""


class CorruptRecordError(RingError):
    """A record header in the ring is inconsistent (memory corruption or a foreign writer)."""


_FRAMES: dict[int, tuple[bytes, bytes]] = {}  # body length -> (record header, tail padding)


def _frame(n: int) -> tuple[bytes, bytes]:
    """Record header and padding bytes of an `n`-byte body (cached for the common sizes)."""
    head = (_REC.pack(n, KIND_DATA), _PADS[record_size(n) - 8 - n])
    if len(_FRAMES) < 4096:
        _FRAMES[n] = head
    return head


def record_size(nbytes: int) -> int:
    """Ring bytes used by a record with an `nbytes` body (header + body, padded to 8)."""
    return (nbytes + 15) & ~7


class Ring:
    """A ring segment; use `.writer()` / `.reader()` to get its two ends.

    `Ring.create(run_id, name, capacity)` in the process that owns the memory (normally the
    node agent); `Ring.attach(run_id, name)` in the processes that use it.
    """

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.name = seg.path.name
        self.capacity = int(seg.meta["capacity"])
        self.reader_bell_path = seg.meta["rbell"]
        self.writer_bell_path = seg.meta["wbell"]
        self.ctrl = seg.buf[:CTRL_BYTES].cast("q")
        self.ctrl_f = seg.buf[:CTRL_BYTES].cast("d")
        self.data = seg.buf[CTRL_BYTES : CTRL_BYTES + self.capacity]
        self.data_ro = self.data.toreadonly()  # decoded arrays are read-only views of this
        self.u8 = seg.ndarray(np.uint8, CTRL_BYTES, self.capacity)
        self.mm = seg._mm
        self.base = HEADER_BYTES + CTRL_BYTES  # file offset of data byte 0 (64-aligned)

    @classmethod
    def create(cls, run_id: str, name: str, capacity: int, reader_bell: str | None = None) -> Ring:
        """Create a ring with `capacity` data bytes (multiple of 64, >= 128).

        `reader_bell`: path of an existing doorbell FIFO to share (many-to-one mux); by default
        the ring gets its own.
        """
        if capacity < 128 or capacity % 64:
            raise ValueError(f"ring capacity must be a multiple of 64 and >= 128 bytes, got {capacity}")
        from speedy.shm.segment import segment_path

        path = segment_path(run_id, name)
        rbell = reader_bell or f"{path}.bell-r"
        wbell = f"{path}.bell-w"
        seg = Segment.create(run_id, name, CTRL_BYTES + capacity, {"kind": "ring", "capacity": capacity,
                                                                      "rbell": rbell, "wbell": wbell},
                             populate=True)  # no first-touch page faults on the hot path
        if reader_bell is None:
            Doorbell.create(rbell).close()
        Doorbell.create(wbell).close()
        return cls(seg)

    @classmethod
    def attach(cls, run_id: str, name: str) -> Ring:
        """Attach to an existing ring."""
        seg = Segment.attach(run_id, name, populate=True)
        if seg.meta.get("kind") != "ring":
            raise ValueError(f"segment {seg.path.name} is a {seg.meta.get('kind')!r}, not a ring")
        return cls(seg)

    def writer(self) -> RingWriter:
        """Claim the writing end (one per ring)."""
        return RingWriter(self)

    def reader(self) -> RingReader:
        """Claim the reading end (one per ring)."""
        return RingReader(self)

    def used_bytes(self) -> int:
        """Bytes published but not yet released (approximate while both ends run)."""
        return self.ctrl[TAIL] - self.ctrl[HEAD]

    def close(self) -> None:
        """Unmap; the creator also unlinks the segment and its own doorbells (a shared mux
        doorbell goes with its mux)."""
        if self.seg.owner:
            own = [self.writer_bell_path]
            if self.reader_bell_path == f"{self.seg.path}.bell-r":
                own.append(self.reader_bell_path)
            for path in own:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                forget_owned(Path(path))
        for v in (self.ctrl, self.ctrl_f, self.data, self.data_ro):
            with contextlib.suppress(BufferError):  # messages still held keep the mapping alive
                v.release()
        self.u8 = None
        self.mm = None
        self.seg.close()


class _End:
    """Shared logic of both ends: claiming, liveness, waiting."""

    _PID, _START, _CLOSED, _SLEEP = 0, 0, 0, 0
    _PEER_PID, _PEER_START, _PEER_CLOSED, _PEER_SLEEP = 0, 0, 0, 0
    role = ""
    peer_role = ""

    def __init__(self, ring: Ring, my_bell: str, peer_bell: str) -> None:
        self.ring = ring
        self.cap = ring.capacity
        self.ctrl = ring.ctrl
        me = os.getpid()
        other = self.ctrl[self._PID]
        if other not in (0, me) and not self.ctrl[self._CLOSED] and pid_alive(other, self.ring.ctrl_f[self._START]):
            raise RingError(f"ring {ring.name} already has a {self.role} (pid {other})")
        self.ctrl[self._CLOSED] = 0
        ring.ctrl_f[self._START] = process_start_time(me)
        self.ctrl[self._PID] = me
        self._bell = Doorbell(my_bell)
        self._peer_bell = Doorbell(peer_bell)
        self.closed = False
        self._spin = SPIN_S  # current spin budget (s), adapted by `_learn`

    def _check_peer(self) -> None:
        if self.ctrl[self._PEER_CLOSED]:
            raise RingClosedError(f"ring {self.ring.name}: the {self.peer_role} closed it")
        pid = self.ctrl[self._PEER_PID]
        if pid and not pid_alive(pid, self.ring.ctrl_f[self._PEER_START]):
            raise PeerDiedError(f"ring {self.ring.name}: the {self.peer_role} (pid {pid}) died")

    def _check_peer_after(self, ready: Callable[[], bool]) -> None:
        """`_check_peer`, but a peer that published and then closed (or died) is reported only
        once nothing it published is left: `ready()` is re-checked after the peer check."""
        try:
            self._check_peer()
        except RingError:
            if not ready():
                raise

    def peer_alive(self) -> bool:
        """False if the peer attached and has since died (or closed)."""
        try:
            self._check_peer()
        except RingError:
            return False
        return True

    def _wake_peer(self) -> None:
        """After a counter store: ring the peer's doorbell only if it sleeps (no syscall otherwise)."""
        fence()
        if self.ctrl[self._PEER_SLEEP]:
            self._peer_bell.ring()

    def _learn(self, waited: float) -> None:
        """Adapt the spin budget: a wait that ended soon after the spin gave up means the next
        one is worth spinning through; a long (idle) wait resets to the short spin."""
        self._spin = min(SPIN_MAX_S, 2.0 * waited) if waited < SPIN_MAX_S else SPIN_S
        self._spin = max(self._spin, SPIN_S)

    def _wait(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Block until `ready()`; raise RingTimeoutError / PeerDiedError / RingClosedError."""
        t0 = time.monotonic()
        spin = self._spin
        while time.monotonic() - t0 < spin:
            if ready():
                return
        deadline = None if timeout is None else t0 + timeout
        ctrl, flag = self.ctrl, self._SLEEP
        while True:
            ctrl[flag] = 1
            fence()
            if ready():
                ctrl[flag] = 0
                return
            wait_s = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            self._bell.wait(wait_s)
            ctrl[flag] = 0
            self._bell.drain()
            if ready():
                self._learn(time.monotonic() - t0)
                return
            self._check_peer_after(ready)
            if deadline is not None and time.monotonic() >= deadline:
                raise RingTimeoutError(f"ring {self.ring.name}: {self.role} timed out after {timeout} s")

    async def _await(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """`_wait` for asyncio: yields to the loop while spinning, sleeps on the doorbell."""
        t0 = time.monotonic()
        for _ in range(4):
            if ready():
                return
            await asyncio.sleep(0)
        deadline = None if timeout is None else t0 + timeout
        ctrl, flag = self.ctrl, self._SLEEP
        while True:
            ctrl[flag] = 1
            fence()
            if ready():
                ctrl[flag] = 0
                return
            wait_s = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            await self._bell.wait_async(wait_s)
            ctrl[flag] = 0
            self._bell.drain()
            if ready():
                return
            self._check_peer_after(ready)
            if deadline is not None and time.monotonic() >= deadline:
                raise RingTimeoutError(f"ring {self.ring.name}: {self.role} timed out after {timeout} s")

    def close(self) -> None:
        """Mark this end closed and wake the peer (a waiting peer gets RingClosedError)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError):  # the Ring was closed (unmapped) first: nothing to flag
            self.ctrl[self._CLOSED] = 1
            fence()
            self._peer_bell.ring()
        self._bell.close()
        self._peer_bell.close()

    def __enter__(self) -> _End:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RingWriter(_End):
    """The producing end. Methods: put_bytes / put_many / put (codec), and async a* versions."""

    _PID, _START, _CLOSED, _SLEEP = W_PID, W_START, W_CLOSED, W_SLEEP
    _PEER_PID, _PEER_START, _PEER_CLOSED, _PEER_SLEEP = R_PID, R_START, R_CLOSED, R_SLEEP
    role, peer_role = "writer", "reader"

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring, ring.writer_bell_path, ring.reader_bell_path)
        self._tail = self.ctrl[TAIL]
        self._head = self.ctrl[HEAD]

    # -- space accounting ---------------------------------------------------------------------
    def _free(self, nbytes: int) -> bool:
        """True if at least `nbytes` are free (refreshes the cached head only when needed)."""
        if self.cap - (self._tail - self._head) >= nbytes:
            return True
        self._head = self.ctrl[HEAD]
        return self.cap - (self._tail - self._head) >= nbytes

    def _check_total(self, total: int, what: str = "record") -> None:
        """Refuse a record that can never fit (`total` ring bytes, header and padding included)."""
        if total > self.cap:
            raise ValueError(f"{what} of {total} ring bytes (8-byte record header included) does not fit "
                             f"ring {self.ring.name} ({self.cap} bytes)")
        if total - 8 > _MAX_BODY:
            raise ValueError(f"{what} of {total - 8} bytes exceeds the ring's record limit of {_MAX_BODY} bytes")
        if self.closed:
            raise RingClosedError(f"ring {self.ring.name}: writer already closed")

    def _needs_wrap(self, total: int) -> int:
        """Bytes to skip before a `total`-byte record (0 if it fits before the end of the data)."""
        contiguous = self.cap - self._tail % self.cap
        return contiguous if total > contiguous else 0

    def _write_skip(self, nbytes: int) -> None:
        """Publish a wrap marker over the last `nbytes` of the data area (the reader frees it)."""
        _REC.pack_into(self.ring.data, self._tail % self.cap, nbytes - 8, KIND_SKIP)
        self._commit(nbytes)

    def _make_room(self, total: int, timeout: float | None, wrapped: int | None = None) -> None:
        """Wrap if a `total`-byte record does not fit before the end of the data (after a wrap the
        record needs `wrapped` bytes, default `total`), then wait until it is free at the tail."""
        skip = self._needs_wrap(total)
        if skip:
            if not self._free(skip):
                self._wait(lambda: self._free(skip), timeout)
            self._write_skip(skip)
            total = total if wrapped is None else wrapped
        if not self._free(total):
            self._wait(lambda: self._free(total), timeout)

    async def _amake_room(self, total: int, timeout: float | None, wrapped: int | None = None) -> None:
        skip = self._needs_wrap(total)
        if skip:
            if not self._free(skip):
                await self._await(lambda: self._free(skip), timeout)
            self._write_skip(skip)
            total = total if wrapped is None else wrapped
        if not self._free(total):
            await self._await(lambda: self._free(total), timeout)

    def _reserve(self, total: int) -> int:
        """Data offset for the next record; `_make_room(total)` was called."""
        return self._tail % self.cap

    def _commit(self, total: int) -> None:
        """Publish `total` more bytes (one counter store) and wake the reader if it sleeps."""
        self._tail += total
        if _STORE_FENCE:
            fence()
        self.ctrl[TAIL] = self._tail
        self._wake_peer()

    # -- raw bytes ----------------------------------------------------------------------------
    def _write_bytes(self, data: bytes | memoryview) -> None:
        n = len(data)
        total = record_size(n)
        off = self._reserve(total)
        start = self.ring.base + off
        mm = self.ring.mm
        mm[start : start + 8] = _REC.pack(n, KIND_DATA)
        mm[start + 8 : start + 8 + n] = data
        self._commit(total)

    def put_bytes(self, data: bytes | memoryview, timeout: float | None = None) -> None:
        """Append one record (bytes-like, C-contiguous). Blocks while the ring is full."""
        total = record_size(len(data))
        self._check_total(total)
        self._make_room(total, timeout)
        self._write_bytes(data)

    async def aput_bytes(self, data: bytes | memoryview, timeout: float | None = None) -> None:
        """Async `put_bytes`."""
        total = record_size(len(data))
        self._check_total(total)
        await self._amake_room(total, timeout)
        self._write_bytes(data)

    def _put_some(self, items: Sequence[bytes], i: int) -> int:
        """Write items[i:] that fit contiguously right now with one counter update; returns new i."""
        off = self._tail % self.cap
        avail = min(self.cap - off, self.cap - (self._tail - self._head))
        if avail < self.cap - off:
            self._head = self.ctrl[HEAD]
            avail = min(self.cap - off, self.cap - (self._tail - self._head))
        pieces: list = []
        used = 0
        frames = _FRAMES
        n_items = len(items)
        while i < n_items:
            item = items[i]
            n = len(item)
            total = (n + 15) & ~7
            if used + total > avail:
                break
            head = frames.get(n) or _frame(n)
            pieces += (head[0], item, head[1])
            used += total
            i += 1
        if used:
            start = self.ring.base + off
            self.ring.mm[start : start + used] = b"".join(pieces)
            self._commit(used)
        return i

    def put_many(self, items: Sequence[bytes], timeout: float | None = None) -> None:
        """Append many records with few counter updates (the fast path for small messages)."""
        i = 0
        while i < len(items):
            j = self._put_some(items, i)
            if j == i:  # nothing fits contiguously: wrap and/or wait through the single path
                self.put_bytes(items[i], timeout)
                j = i + 1
            i = j

    async def aput_many(self, items: Sequence[bytes], timeout: float | None = None) -> None:
        """Async `put_many`."""
        i = 0
        while i < len(items):
            j = self._put_some(items, i)
            if j == i:
                await self.aput_bytes(items[i], timeout)
                j = i + 1
            i = j

    # -- codec messages -----------------------------------------------------------------------
    def _write_message(self, off: int, prep: tuple) -> int:
        """Write a `codec.prepare`d message as a record at data offset `off`; returns its ring bytes."""
        start = self.ring.base + off + 8
        n = codec.write_prepared(self.ring.mm, start, *prep)
        _REC.pack_into(self.ring.mm, start - 8, n, KIND_DATA)
        return (n + 15) & ~7

    def _msg_size(self, prep: tuple, off: int) -> int:
        """Exact ring bytes of a `codec.prepare`d message written at data offset `off` (the codec
        aligns payloads to absolute 64-byte addresses, so the padding depends on `off`)."""
        return record_size(codec.message_size(len(prep[0]), prep[3], self.ring.base + off + 8))

    def _msg_room(self, prep: tuple) -> tuple[int, int]:
        """(bytes at the tail, bytes after a wrap) of a message, after checking it can ever fit."""
        wrapped = self._msg_size(prep, 0)
        self._check_total(wrapped, "message")
        return self._msg_size(prep, self._tail % self.cap), wrapped

    def _fits_now(self, total: int) -> bool:
        """True if a `total`-byte record fits contiguously at the tail without waiting."""
        off = self._tail % self.cap
        return total <= self.cap - off and self._free(total) and not self.closed

    def put(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
            timeout: float | None = None) -> None:
        """Append one message: msgpack `fields` + raw `arrays` (each copied once into the ring)."""
        prep = codec.prepare(fields, arrays)
        if not self._fits_now(self._msg_size(prep, self._tail % self.cap)):
            here, wrapped = self._msg_room(prep)
            self._make_room(here, timeout, wrapped)
        self._commit(self._write_message(self._tail % self.cap, prep))

    async def aput(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
                   timeout: float | None = None) -> None:
        """Async `put`: awaits (or raises RingTimeoutError after `timeout` s) while the ring is full."""
        prep = codec.prepare(fields, arrays)
        if not self._fits_now(self._msg_size(prep, self._tail % self.cap)):
            here, wrapped = self._msg_room(prep)
            await self._amake_room(here, timeout, wrapped)
        self._commit(self._write_message(self._tail % self.cap, prep))

    def _put_batch_some(self, preps: list[tuple], i: int) -> int:
        """Write preps[i:] that fit contiguously now, with one counter update; returns the new i
        (< len(preps) when preps[i] has to wait or wrap)."""
        self._head = self.ctrl[HEAD]
        off = self._tail % self.cap
        avail = min(self.cap - off, self.cap - (self._tail - self._head))
        used = 0
        while i < len(preps) and used + self._msg_size(preps[i], off + used) <= avail:
            used += self._write_message(off + used, preps[i])
            i += 1
        if used:
            self._commit(used)
        return i

    def put_batch(self, messages: Sequence[codec.Message], timeout: float | None = None) -> None:
        """Append many messages (their `fields` and `arrays`) with one counter update and at most
        one doorbell per contiguous run: the fast path for streams of small messages."""
        preps = [codec.prepare(m.fields, m.arrays) for m in messages]
        i = 0
        while i < len(preps):
            i = self._put_batch_some(preps, i)
            if i < len(preps):
                here, wrapped = self._msg_room(preps[i])
                self._make_room(here, timeout, wrapped)

    async def aput_batch(self, messages: Sequence[codec.Message], timeout: float | None = None) -> None:
        """Async `put_batch`."""
        preps = [codec.prepare(m.fields, m.arrays) for m in messages]
        i = 0
        while i < len(preps):
            i = self._put_batch_some(preps, i)
            if i < len(preps):
                here, wrapped = self._msg_room(preps[i])
                await self._amake_room(here, timeout, wrapped)

    def free_bytes(self) -> int:
        """Bytes free right now (a record also needs its header and maybe a wrap)."""
        self._head = self.ctrl[HEAD]
        return self.cap - (self._tail - self._head)

    @property
    def capacity(self) -> int:
        """The ring's data bytes."""
        return self.cap

    def message_bytes(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> int:
        """Ring bytes the message takes written at the start of the ring (header and padding included; at
        another offset its arrays' 64-byte alignment can add up to 64 bytes each)."""
        return self._msg_size(codec.prepare(fields, arrays), 0)


class RingReader(_End):
    """The consuming end. Methods: get_bytes / get_many / get (codec, zero-copy), async a* versions."""

    _PID, _START, _CLOSED, _SLEEP = R_PID, R_START, R_CLOSED, R_SLEEP
    _PEER_PID, _PEER_START, _PEER_CLOSED, _PEER_SLEEP = W_PID, W_START, W_CLOSED, W_SLEEP
    role, peer_role = "reader", "writer"

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring, ring.reader_bell_path, ring.writer_bell_path)
        self._pos = self.ctrl[HEAD]  # read cursor: records before it were handed out
        self._head = self._pos  # released prefix
        self._pending: deque[list] = deque()  # [end position, released?] of records handed out
        self._deferred: Exception | None = None  # a codec error found behind a returned batch

    def ready(self) -> bool:
        """True if at least one record is published and not yet handed out. A wrap marker at the
        read position is stepped over (and its space released) first: it is not a record."""
        tail = self.ctrl[TAIL]
        if tail == self._pos:
            return False
        off = self._pos % self.cap
        n, kind = _REC.unpack_from(self.ring.data, off)
        if kind == KIND_SKIP and n == self.cap - off - 8:
            self._advance_released(self._pos + self.cap - off)
            return tail != self._pos
        return True

    def _corrupt(self, why: str) -> CorruptRecordError:
        return CorruptRecordError(f"ring {self.ring.name} at position {self._pos}: {why}")

    def _next(self) -> tuple[int, int] | None:
        """(data offset, body length) of the next record, skipping wrap markers; None if empty."""
        cap = self.cap
        tail = self.ctrl[TAIL]
        while self._pos != tail:
            off = self._pos % cap
            n, kind = _REC.unpack_from(self.ring.data, off)
            if kind == KIND_SKIP:
                if n != cap - off - 8:
                    raise self._corrupt(f"skip marker of {n} bytes at offset {off}")
                self._advance_released(self._pos + cap - off)
                continue
            if kind != KIND_DATA or off + 8 + n > cap or record_size(n) > tail - self._pos:
                raise self._corrupt(f"bad record header (length {n}, kind 0x{kind:08x})")
            return off, n
        return None

    def _release(self, entry: list) -> None:
        entry[1] = True
        pending = self._pending
        moved = False
        while pending and pending[0][1]:
            self._head = pending.popleft()[0]
            moved = True
        if moved:
            self.ctrl[HEAD] = self._head
            self._wake_peer()

    def _advance_released(self, end: int) -> None:
        """Hand out and immediately release everything up to `end`."""
        self._pos = end
        if self._pending:
            self._pending.append([end, True])
            self._release(self._pending[-1])
        else:
            self._head = end
            self.ctrl[HEAD] = end
            self._wake_peer()

    # -- raw bytes ----------------------------------------------------------------------------
    def _take_bytes(self) -> bytes | None:
        rec = self._next()
        if rec is None:
            return None
        off, n = rec
        start = self.ring.base + off + 8
        out = self.ring.mm[start : start + n]
        self._advance_released(self._pos + record_size(n))
        return out

    def get_bytes(self, timeout: float | None = None) -> bytes:
        """Next record's bytes (copied, slot released). Blocks while empty."""
        out = self._take_bytes()
        while out is None:
            self._wait(self.ready, timeout)
            out = self._take_bytes()
        return out

    async def aget_bytes(self, timeout: float | None = None) -> bytes:
        """Async `get_bytes`."""
        out = self._take_bytes()
        while out is None:
            await self._await(self.ready, timeout)
            out = self._take_bytes()
        return out

    def _take_many(self, max_n: int) -> list[bytes]:
        out: list[bytes] = []
        cap, mm, base, data = self.cap, self.ring.mm, self.ring.base, self.ring.data
        unpack = _REC.unpack_from
        pos = self._pos
        tail = self.ctrl[TAIL]
        while pos != tail and len(out) < max_n:
            off = pos % cap
            n, kind = unpack(data, off)
            total = (n + 15) & ~7
            if kind == KIND_DATA and off + 8 + n <= cap and total <= tail - pos:
                start = base + off + 8
                out.append(mm[start : start + n])
                pos += total
            elif kind == KIND_SKIP and n == cap - off - 8:
                pos += cap - off
            else:
                self._pos = pos
                if out:
                    break  # deliver what is good; the next call raises
                raise self._corrupt(f"bad record header (length {n}, kind 0x{kind:08x})")
        if pos != self._pos:
            self._advance_released(pos)
        return out

    def get_many(self, max_n: int = 4096, timeout: float | None = None) -> list[bytes]:
        """Up to `max_n` records (copied), with one counter update. Blocks for at least one;
        returns [] if `timeout` expires first."""
        out = self._take_many(max_n)
        while not out:
            try:
                self._wait(self.ready, timeout)
            except RingTimeoutError:
                return []
            out = self._take_many(max_n)
        return out

    async def aget_many(self, max_n: int = 4096, timeout: float | None = None) -> list[bytes]:
        """Async `get_many`."""
        out = self._take_many(max_n)
        while not out:
            try:
                await self._await(self.ready, timeout)
            except RingTimeoutError:
                return []
            out = self._take_many(max_n)
        return out

    # -- codec messages -----------------------------------------------------------------------
    def _take_message(self, copy: bool) -> codec.Message | None:
        rec = self._next()
        if rec is None:
            return None
        off, n = rec
        end = self._pos + ((n + 15) & ~7)
        entry = [end, False]
        self._pos = end
        self._pending.append(entry)
        try:
            fields, arrays = codec.decode_at(self.ring.data_ro, off + 8, n)
        except BaseException:
            self._release(entry)  # skip the bad record so the stream goes on
            raise
        if copy:
            out = codec.Message(fields, {k: v.copy() for k, v in arrays.items()})
            self._release(entry)
            return out
        return codec.Message(fields, arrays, functools.partial(self._release, entry))

    def _release_entries(self, entries: list[list]) -> None:
        """Mark `entries` released and advance `head` once (one counter store)."""
        if not entries:
            return
        for entry in entries[:-1]:
            entry[1] = True
        self._release(entries[-1])

    def _take_batch(self, max_n: int, copy: bool) -> list[codec.Message]:
        """Up to `max_n` ready messages; with `copy`, this batch's slots go back with one counter
        store once copied (slots of messages held from earlier reads stay held).
        A malformed record after good ones is left for the next call to raise."""
        out: list[codec.Message] = []
        first = len(self._pending)
        try:
            while len(out) < max_n:
                try:
                    msg = self._take_message(False)
                except codec.CodecError:
                    if not out:
                        raise
                    self._deferred = sys.exc_info()[1]
                    break
                if msg is None:
                    break
                out.append(msg)
        finally:
            if copy:
                copies = [codec.Message(m.fields, {k: v.copy() for k, v in m.arrays.items()}) for m in out]
                # entries created by this batch (records and wrap markers); earlier ones are untouched
                # (pending[0] is never a released entry, so when first > 0 nothing before `first`
                # was popped; when first == 0 every remaining entry is this batch's)
                mine = list(itertools.islice(self._pending, first, None))
                for m in out:
                    m._release = None
                self._release_entries([e for e in mine if not e[1]])
                out = copies
        return out

    def _raise_deferred(self) -> None:
        err, self._deferred = self._deferred, None
        if err is not None:
            raise err

    def get_batch(self, max_n: int = 64, timeout: float | None = None, copy: bool = False) -> list[codec.Message]:
        """Up to `max_n` messages (blocks for at least one; [] if `timeout` expires first).
        Zero-copy messages are released one by one as with `get`; with `copy=True` they are
        independent copies and the ring slots go back at once."""
        self._raise_deferred()
        out = self._take_batch(max_n, copy)
        while not out:
            try:
                self._wait(self.ready, timeout)
            except RingTimeoutError:
                return []
            out = self._take_batch(max_n, copy)
        return out

    async def aget_batch(self, max_n: int = 64, timeout: float | None = None,
                         copy: bool = False) -> list[codec.Message]:
        """Async `get_batch`."""
        self._raise_deferred()
        out = self._take_batch(max_n, copy)
        while not out:
            try:
                await self._await(self.ready, timeout)
            except RingTimeoutError:
                return []
            out = self._take_batch(max_n, copy)
        return out

    def get(self, timeout: float | None = None, copy: bool = False) -> codec.Message:
        """Next message. Zero-copy by default: call `msg.release()` (or use `with`) when done.
        `copy=True` returns an independent copy and releases the slot at once."""
        msg = self._take_message(copy)
        while msg is None:
            self._wait(self.ready, timeout)
            msg = self._take_message(copy)
        return msg

    async def aget(self, timeout: float | None = None, copy: bool = False) -> codec.Message:
        """Async `get`."""
        msg = self._take_message(copy)
        while msg is None:
            await self._await(self.ready, timeout)
            msg = self._take_message(copy)
        return msg

    def close(self) -> None:
        """Close the reading end (outstanding zero-copy messages must not be used afterwards)."""
        with contextlib.suppress(ValueError):
            super().close()
