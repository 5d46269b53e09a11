"""Dataclass messages over `speedy.shm` rings: array fields travel as raw payloads, the rest as msgpack fields.

`send`/`receive` keep role code free of field lists: a message is a dataclass whose attributes are numpy arrays or
msgpack-able scalars, and its class is named in the header so a reader can check it got what it expected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from speedy.shm.codec import CodecError, Message
from speedy.shm.mux import MuxReader
from speedy.shm.ring import PeerDiedError, RingClosedError, RingReader, RingTimeoutError, RingWriter

T = TypeVar("T")


@dataclasses.dataclass
class PriorityUpdate:
    """New priorities (|error|, without ε) for sampled replay positions, computed with the weights of training
    step `version` (replay ignores an update older than a position's current priority)."""

    index: np.ndarray  # (B,) int64
    generation: np.ndarray  # (B,) int64
    priorities: np.ndarray  # (B,) float32
    version: int = -1


def encode_message(obj: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    fields: dict[str, Any] = {"type": type(obj).__name__}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = np.ascontiguousarray(value)
        elif isinstance(value, np.generic):
            fields[f.name] = value.item()
        else:
            fields[f.name] = value
    return fields, arrays


class MessageSchemaError(ValueError):
    """A well-formed record that is not the message its reader expects (names the class and what is wrong)."""


def decode_message(cls: type[T], msg: Message) -> T:
    """Build `cls` from a message (arrays are copied, so the ring slot can be released at once).
    Raises MessageSchemaError for a message of another type or one that lacks a field."""
    kind = msg.fields.get("type")
    if kind != cls.__name__:
        raise MessageSchemaError(f"expected a {cls.__name__} message, got {kind!r}")
    present = [f for f in dataclasses.fields(cls) if f.name in msg.arrays or f.name in msg.fields]
    missing = [f.name for f in dataclasses.fields(cls) if f not in present and f.default is dataclasses.MISSING]
    if missing:
        raise MessageSchemaError(f"{cls.__name__} message lacks {missing}")
    values = {f.name: (np.array(msg.arrays[f.name]) if f.name in msg.arrays else msg.fields[f.name])
              for f in present}
    return cls(**values)


POLL_S = 0.25  # how often a blocked sender/receiver looks at the stop flag


class Outbox:
    """Sends dataclass messages on one ring end, shared safely by several coroutines (one put at a time); given
    several ring ends (one per consumer), each message goes to the ring with the most free space.

    A full ring pushes back (the send waits); a peer that died or closed is waited out, since the node agent
    restarts it; `send` gives up (returns False) only when the run is stopping."""

    def __init__(self, writer: RingWriter | Sequence[RingWriter], stopping: Callable[[], bool]) -> None:
        self.writers = [writer] if isinstance(writer, RingWriter) else list(writer)
        if not self.writers:
            raise ValueError("an Outbox needs at least one ring writer")
        self.stopping = stopping
        self.lock = asyncio.Lock()
        self.message_bytes = 0  # ring bytes of the first message sent (0 before it): what `wait_for_room` waits for

    def _emptiest(self) -> RingWriter:
        if len(self.writers) == 1:
            return self.writers[0]
        return max(self.writers, key=lambda w: w.free_bytes())

    async def send(self, obj: Any) -> bool:
        fields, arrays = encode_message(obj)
        async with self.lock:
            while not self.stopping():
                try:
                    writer = self._emptiest()
                    await writer.aput(fields, arrays, timeout=POLL_S)
                    if not self.message_bytes:
                        self.message_bytes = writer.message_bytes(fields, arrays)
                    return True
                except RingTimeoutError:
                    continue
                except (RingClosedError, PeerDiedError):
                    await asyncio.sleep(POLL_S)  # the agent restarts the peer
        return False

    async def wait_for_room(self, poll_s: float = 0.002) -> bool:
        """Wait until some ring has room for a message as large as the first one sent (at once before any was
        sent; an empty ring always has room): a producer that draws its message only then hands it over as soon
        as it is made, instead of holding it while the ring is full. False if the run is stopping."""
        while not self.stopping():
            if not self.message_bytes or any(w.free_bytes() >= min(self.message_bytes, w.capacity)
                                             for w in self.writers):
                return True
            await asyncio.sleep(poll_s)
        return False

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class Inbox:
    """Receives dataclass messages from a ring reader or a many-to-one mux, shared by several coroutines.
    A malformed record or a message of the wrong schema is dropped with one line on stderr and counted in
    `dropped`; the stream goes on."""

    def __init__(self, reader: RingReader | MuxReader, stopping: Callable[[], bool]) -> None:
        self.reader = reader
        self.stopping = stopping
        self.lock = asyncio.Lock()
        self.dropped = 0

    async def receive(self, cls: type[T]) -> T | None:
        """The next message as `cls`, or None once the run is stopping."""
        async with self.lock:
            while not self.stopping():
                try:
                    got = await self.reader.aget(timeout=POLL_S, copy=True)
                except RingTimeoutError:
                    continue
                except (RingClosedError, PeerDiedError):
                    await asyncio.sleep(POLL_S)
                    continue
                except CodecError as err:
                    self._drop(cls, err)
                    continue
                msg = got[1] if isinstance(got, tuple) else got
                try:
                    return decode_message(cls, msg)
                except MessageSchemaError as err:
                    self._drop(cls, err)
        return None

    def _drop(self, cls: type, err: Exception) -> None:
        self.dropped += 1
        print(f"[inbox] dropped a malformed message (expected {cls.__name__}): {err}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.reader.close()


def message_bytes(obj: Any) -> int:
    """Payload bytes of a message (for sizing rings)."""
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray)) + 1024
