"""Shared-memory transport within a node: SPSC rings (+ many-to-one / one-to-many), a message
codec (msgpack header + zero-copy ndarray payloads), doorbells, a frame store and weight slots.

Knows nothing about RL. See each module's docstring for layouts and the memory-ordering argument.
"""

from speedy.shm.codec import CodecError, Message, decode, encode
from speedy.shm.frames import FrameEvictedError, FrameNotFoundError, FrameStore
from speedy.shm.mux import FanOutWriter, MuxReader, create_mux, mux_writer
from speedy.shm.ring import (
    CorruptRecordError,
    PeerDiedError,
    Ring,
    RingClosedError,
    RingError,
    RingReader,
    RingTimeoutError,
    RingWriter,
)
from speedy.shm.segment import Segment, SegmentError, cleanup_stale, list_segments, unlink_owned
from speedy.shm.weights import WeightLayout, WeightSlot, flatten_state_dict, unflatten_state_dict

__all__ = [
    "CodecError", "CorruptRecordError", "FanOutWriter", "FrameEvictedError", "FrameNotFoundError",
    "FrameStore", "Message", "MuxReader", "PeerDiedError", "Ring", "RingClosedError", "RingError",
    "RingReader", "RingTimeoutError", "RingWriter", "Segment", "SegmentError", "WeightLayout",
    "WeightSlot", "cleanup_stale", "create_mux", "decode", "encode", "flatten_state_dict",
    "list_segments", "mux_writer", "unflatten_state_dict", "unlink_owned",
]
