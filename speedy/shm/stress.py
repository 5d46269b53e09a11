"""Two-process stress of one ring: every write mode against every read mode, checked end to end.

Used by the property tests (`tests/shm/test_ring_stress.py`, small plans drawn by hypothesis) and
by `tools/stress_shm.py` (millions of messages). Nothing here knows about RL.

Every message carries its sequence number `i` (field), its size, and a payload array whose bytes
are a function of `i`, plus a blake2b digest of the payload in the fields. The reader checks
sequence numbers are consecutive (no loss, no duplicate, no reordering) and that every payload
matches its digest, *again at release time* for messages it holds zero-copy: a held message whose
bytes the writer reused shows up as a mismatch. Every wait has a deadline, so a deadlock shows up
as a stall (a `RingTimeoutError`) instead of a hung test.

A reader that holds zero-copy messages releases them all before it would wait (when the ring has
nothing ready): holding slots while sleeping can legitimately stall a writer that needs them.

Plans are plain lists (msgpack-able, they cross to the spawned writer):
- write plan: [[mode, size], ...] with mode in WRITE_MODES; `size` is the payload bytes;
  batch modes take the following `k` entries of the same mode as one batch.
- read plan: [[mode, n, hold], ...] with mode in READ_MODES, `n` the batch size, `hold` how many
  zero-copy messages to keep before releasing the oldest (0 = release at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from speedy.shm import codec
from speedy.shm.ring import Ring, RingTimeoutError

WRITE_MODES = ("put", "put_batch", "put_bytes", "put_many", "aput", "aput_batch")
READ_MODES = ("get", "get_copy", "get_batch", "get_batch_copy", "get_bytes", "get_many", "aget", "aget_batch")
_PAYLOAD_BASE = np.arange(256, dtype=np.uint8)


def payload(i: int, size: int) -> np.ndarray:
    """The payload of message `i`: `size` bytes, (k + 7·i) mod 256 at byte k."""
    return np.roll(np.resize(_PAYLOAD_BASE, size), (7 * i) % 256) if size else np.zeros(0, np.uint8)


def make_message(i: int, size: int) -> codec.Message:
    """Message `i` with a `size`-byte payload and its digest."""
    data = payload(i, size)
    return codec.Message({"i": i, "n": size, "d": hashlib.blake2b(data.tobytes(), digest_size=8).digest()},
                         {"x": data})


def intact(msg: codec.Message) -> bool:
    """True if the message's payload still matches its digest and sequence number."""
    data = msg.arrays.get("x")
    if data is None or data.size != msg.fields.get("n"):
        return False
    return hashlib.blake2b(data.tobytes(), digest_size=8).digest() == msg.fields.get("d")


def run_writer(run_id: str, name: str, plan: list, timeout: float, lead: int = 0) -> None:
    """Write the messages of `plan` in order (a spawned child's body); then close the writer.
    `lead` empty raw records go first, to start the stream at another offset of the ring."""
    w = Ring.attach(run_id, name).writer()
    try:
        for _ in range(lead):
            w.put_bytes(b"", timeout=timeout)
        asyncio.run(_write(w, plan, timeout))
    finally:
        w.close()
        w.ring.close()


async def _write(w, plan: list, timeout: float) -> None:
    i = 0
    while i < len(plan):
        mode = plan[i][0]
        j = i + 1
        if mode in ("put_batch", "aput_batch", "put_many"):
            while j < len(plan) and plan[j][0] == mode and j - i < 16:
                j += 1
        msgs = [make_message(k, plan[k][1]) for k in range(i, j)]
        if mode == "put":
            w.put(msgs[0].fields, msgs[0].arrays, timeout=timeout)
        elif mode == "aput":
            await w.aput(msgs[0].fields, msgs[0].arrays, timeout=timeout)
        elif mode == "put_batch":
            w.put_batch(msgs, timeout=timeout)
        elif mode == "aput_batch":
            await w.aput_batch(msgs, timeout=timeout)
        elif mode == "put_bytes":
            w.put_bytes(codec.encode(msgs[0].fields, msgs[0].arrays), timeout=timeout)
        elif mode == "put_many":
            w.put_many([codec.encode(m.fields, m.arrays) for m in msgs], timeout=timeout)
        else:
            raise ValueError(f"unknown write mode {mode!r}; expected one of {WRITE_MODES}")
        i = j


@dataclass
class ReadReport:
    """What a reader saw: messages in order, mismatches, stalls, and messages per read mode."""

    messages: int = 0
    mismatches: int = 0
    out_of_order: int = 0
    stalls: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True if nothing was lost, torn, reordered or stalled."""
        return not (self.mismatches or self.out_of_order or self.stalls or self.errors)


class _Checker:
    """Consumes messages in arrival order; holds zero-copy ones and re-checks them at release."""

    def __init__(self, report: ReadReport) -> None:
        self.report = report
        self.expect = 0
        self.held: deque[codec.Message] = deque()

    def see(self, msg: codec.Message, mode: str) -> None:
        rep = self.report
        if msg.fields.get("i") != self.expect:
            rep.out_of_order += 1
            self.expect = int(msg.fields.get("i", self.expect))
        self.expect += 1
        rep.messages += 1
        rep.by_mode[mode] = rep.by_mode.get(mode, 0) + 1
        if not intact(msg):
            rep.mismatches += 1

    def hold(self, msg: codec.Message, keep: int) -> None:
        self.held.append(msg)
        while len(self.held) > keep:
            self.release_one(oldest=len(self.held) % 2 == 0)

    def release_one(self, oldest: bool = True) -> None:
        msg = self.held.popleft() if oldest else self.held.pop()
        if not intact(msg):  # the writer reused a held slot
            self.report.mismatches += 1
        msg.release()

    def release_all(self) -> None:
        while self.held:
            self.release_one()


def read_plan(reader, plan: Sequence[Sequence], total: int, timeout: float, lead: int = 0) -> ReadReport:
    """Read `total` messages from `reader`, cycling through `plan`'s read steps (after `lead`
    empty raw records: see `run_writer`)."""
    report = ReadReport()
    checker = _Checker(report)
    try:
        for _ in range(lead):
            if reader.get_bytes(timeout=timeout) != b"":
                raise ValueError("expected an empty lead record")
        asyncio.run(_read(reader, plan, total, timeout, checker))
    except RingTimeoutError as e:
        report.stalls += 1
        report.errors.append(f"stall after {report.messages} messages: {e}")
    except Exception as e:  # noqa: BLE001 - reported, not hidden: the caller asserts report.clean
        report.errors.append(f"{type(e).__name__} after {report.messages} messages: {e}")
    finally:
        checker.release_all()
    return report


async def _read(reader, plan: Sequence[Sequence], total: int, timeout: float, checker: _Checker) -> None:
    step = 0
    while checker.report.messages < total:
        mode, n, hold = plan[step % len(plan)]
        step += 1
        n = max(1, min(int(n), total - checker.report.messages))
        if checker.held and not reader.ready():
            checker.release_all()  # never sleep on held slots: the writer may need their space
        for msg, zero_copy in await _read_step(reader, mode, n, timeout):
            checker.see(msg, mode)
            if zero_copy:
                checker.hold(msg, int(hold))
        if checker.report.messages >= total:
            break
    checker.release_all()


async def _read_step(reader, mode: str, n: int, timeout: float) -> list[tuple[codec.Message, bool]]:
    """One read in `mode`: [(message, zero-copy?)]; raises RingTimeoutError past `timeout`."""
    if mode in ("get", "get_copy", "aget"):
        copy = mode == "get_copy"
        msg = await reader.aget(timeout=timeout) if mode == "aget" else reader.get(timeout=timeout, copy=copy)
        return [(msg, not copy)]
    if mode in ("get_batch", "get_batch_copy", "aget_batch"):
        copy = mode == "get_batch_copy"
        getter = reader.aget_batch if mode == "aget_batch" else reader.get_batch
        t0 = time.monotonic()
        batch = getter(n, timeout=timeout, copy=copy)
        batch = await batch if mode == "aget_batch" else batch
        if not batch:
            raise RingTimeoutError(f"{mode}: nothing within {time.monotonic() - t0:.1f} s")
        return [(m, not copy) for m in batch]
    if mode == "get_bytes":
        return [(_decoded(reader.get_bytes(timeout=timeout)), False)]
    if mode == "get_many":
        got = reader.get_many(n, timeout=timeout)
        if not got:
            raise RingTimeoutError(f"get_many: nothing within {timeout} s")
        return [(_decoded(b), False) for b in got]
    raise ValueError(f"unknown read mode {mode!r}; expected one of {READ_MODES}")


def _decoded(raw: bytes) -> codec.Message:
    fields, arrays = codec.decode(raw)
    return codec.Message(fields, arrays)
