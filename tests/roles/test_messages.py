"""Role messages: a malformed record or a message of the wrong schema is dropped, counted, and the stream goes on."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np

from speedy.roles.messages import Inbox, PriorityUpdate, encode_message
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
