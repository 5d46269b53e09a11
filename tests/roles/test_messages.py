"""Role messages: a malformed record or a message of the wrong schema is dropped, counted, and the stream goes on;
a producer can wait for room before it makes its message."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np

from speedy.roles.messages import Inbox, Outbox, PriorityUpdate, encode_message
from speedy.shm import Ring, unlink_owned


def test_inbox_drops_malformed_and_foreign_messages_and_goes_on(capsys):
    ring = Ring.create(f"m{uuid.uuid4().hex[:8]}", "inbox", 1 << 16)
    try:
        writer, reader = ring.writer(), ring.reader()
        writer.put_bytes(b"not a codec record at all")
        writer.put({"type": "BatchTargets"}, {})  # another message type
        writer.put({"type": "PriorityUpdate"}, {"index": np.zeros(2, np.int64)})  # fields missing
        good = PriorityUpdate(np.arange(3), np.zeros(3, np.int64), np.ones(3, np.float32))
        writer.put(*encode_message(good))
        inbox = Inbox(reader, lambda: False)
        got = asyncio.run(inbox.receive(PriorityUpdate))
        assert np.array_equal(got.index, good.index) and got.priorities.dtype == np.float32
        assert inbox.dropped == 3
        err = capsys.readouterr().err
        assert "bad message magic" in err and "got 'BatchTargets'" in err
        assert "lacks ['generation', 'priorities']" in err
        writer.close()
        reader.close()
    finally:
        ring.close()
        unlink_owned()


def test_outbox_waits_for_room_for_a_message_as_large_as_the_first():
    """Room for one more message, not just any free byte: with two ~10 KiB messages in a ring of 2.5, the wait
    goes on until the reader takes one; before the first message it does not wait, nor once the run is stopping."""
    ring = Ring.create(f"m{uuid.uuid4().hex[:8]}", "room", 26_112)
    message = PriorityUpdate(np.arange(512), np.zeros(512, np.int64), np.ones(512, np.float32))
    try:
        writer, reader = ring.writer(), ring.reader()
        outbox = Outbox(writer, lambda: False)

        async def scenario() -> list[str]:
            events = []
            assert await outbox.wait_for_room()  # nothing sent yet: at once
            assert await outbox.send(message) and 10_240 < outbox.message_bytes < 10_240 + 512
            assert await outbox.send(message)
            waiter = asyncio.ensure_future(outbox.wait_for_room())
            await asyncio.sleep(0.05)
            events.append(f"done before a read: {waiter.done()}")
            reader.get(timeout=1.0, copy=True)
            events.append(f"after a read: {await asyncio.wait_for(waiter, 1.0)}")
            return events

        assert asyncio.run(scenario()) == ["done before a read: False", "after a read: True"]
        assert asyncio.run(Outbox(writer, lambda: True).wait_for_room()) is False
        writer.close()
        reader.close()
    finally:
        ring.close()
        unlink_owned()
