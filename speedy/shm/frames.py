"""Frame store: an append-only shared array of fixed-shape frames addressed by id.

One writer appends frames and gets consecutive int64 ids (0, 1, 2, ...); any process on the node
reads them by id. Frame `i` lives in slot `i % capacity`; once `capacity` newer frames have been
appended the slot is reused and id `i` is *evicted*: asking for it raises `FrameEvictedError`
rather than returning the newer frame.

Consistency (seqlock-like, single writer): before writing ids [a, b) the writer stores
`reserved = b`; after writing it stores `published = b`. A reader checks `id < published`
before reading and, after copying, that `id >= reserved - capacity` — i.e. the slot was not
claimed for a newer frame while it was being read. If it was, the copy is discarded and the
id reported evicted.

A store refilled from a snapshot (`restore`) keeps the snapshot's ids; ids before its first one count as
evicted (the `floor`).

Layout of the data region: 0 published (int64), 64 reserved (int64), 128 writer pid, 192 floor,
256 slot ids (int64[capacity]), then frames (capacity × frame_shape, 64-byte aligned).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from speedy.shm.doorbell import fence
from speedy.shm.segment import Segment

_PUBLISHED, _RESERVED, _WPID, _FLOOR = 0, 8, 16, 24  # int64 indices (bytes 0, 64, 128, 192)
_SLOTS_OFF = 256


class FrameEvictedError(KeyError):
    """A requested frame id was overwritten by newer frames."""


class FrameNotFoundError(KeyError):
    """A requested frame id was never appended (negative or not yet published)."""


class FrameStore:
    """Shared ring of frames. `create` in the owner, `attach` in readers (and the writer).

    Attributes:
        frame_shape: shape of one frame, e.g. (3, 96, 96).
        dtype: numpy dtype of frames, e.g. uint8.
        capacity: number of frames kept before the oldest is overwritten.
    """

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.frame_shape = tuple(seg.meta["shape"])
        self.dtype = np.dtype(seg.meta["dtype"])
        self.capacity = int(seg.meta["capacity"])
        self._ctrl = seg.ndarray(np.int64, 0, _SLOTS_OFF // 8)
        self._slot_ids = seg.ndarray(np.int64, _SLOTS_OFF, self.capacity)
        self._frames = seg.ndarray(self.dtype, _frames_offset(self.capacity), (self.capacity, *self.frame_shape))

    @classmethod
    def create(cls, run_id: str, name: str, frame_shape: Sequence[int], dtype: np.dtype | str,
               capacity: int) -> FrameStore:
        """Create a store of `capacity` frames of `frame_shape` and `dtype`."""
        shape = tuple(int(d) for d in frame_shape)
        if capacity < 1 or any(d < 1 for d in shape):
            raise ValueError(f"bad frame store geometry: capacity {capacity}, frame shape {shape}")
        dt = np.dtype(dtype)
        size = _frames_offset(capacity) + capacity * int(np.prod(shape)) * dt.itemsize
        meta = {"kind": "frames", "shape": list(shape), "dtype": dt.str, "capacity": capacity}
        store = cls(Segment.create(run_id, name, size, meta))
        store._slot_ids[:] = -1
        return store

    @classmethod
    def attach(cls, run_id: str, name: str) -> FrameStore:
        """Attach to an existing store."""
        seg = Segment.attach(run_id, name)
        if seg.meta.get("kind") != "frames":
            raise ValueError(f"segment {seg.path.name} is a {seg.meta.get('kind')!r}, not a frame store")
        return cls(seg)

    @property
    def next_id(self) -> int:
        """Id the next appended frame will get (= number of frames ever published)."""
        return int(self._ctrl[_PUBLISHED])

    def oldest_id(self) -> int:
        """Smallest id still readable."""
        return max(0, int(self._ctrl[_RESERVED]) - self.capacity, int(self._ctrl[_FLOOR]))

    def append(self, frames: np.ndarray) -> np.ndarray:
        """Append frames of shape (n, *frame_shape) (or one frame of frame_shape); returns their
        ids, int64 (n,). Single writer per store."""
        frames = np.asarray(frames)
        if frames.shape == self.frame_shape:
            frames = frames[None]
        if frames.shape[1:] != self.frame_shape:
            raise ValueError(f"frames of shape {frames.shape[1:]} given to a store of {self.frame_shape}")
        n = frames.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot append {n} frames at once to a store of capacity {self.capacity}")
        self._ctrl[_WPID] = os.getpid()
        start = int(self._ctrl[_PUBLISHED])
        ids = np.arange(start, start + n, dtype=np.int64)
        slots = ids % self.capacity
        self._ctrl[_RESERVED] = start + n
        fence()
        self._slot_ids[slots] = -1
        self._frames[slots] = frames
        self._slot_ids[slots] = ids
        fence()
        self._ctrl[_PUBLISHED] = start + n
        return ids

    def _check_ids(self, ids: np.ndarray) -> None:
        published = int(self._ctrl[_PUBLISHED])
        if ids.size and (ids.min() < 0 or ids.max() >= published):
            bad = ids[(ids < 0) | (ids >= published)]
            raise FrameNotFoundError(f"frame ids {bad[:8].tolist()} not in store (next id {published})")
        self._check_not_evicted(ids)

    def _check_not_evicted(self, ids: np.ndarray) -> None:
        limit = max(int(self._ctrl[_RESERVED]) - self.capacity, int(self._ctrl[_FLOOR]))
        if ids.size and ids.min() < limit:
            bad = ids[ids < limit]
            raise FrameEvictedError(f"frame ids {bad[:8].tolist()} were evicted (oldest kept: {max(limit, 0)})")

    def get(self, ids: np.ndarray | Sequence[int] | int, out: np.ndarray | None = None) -> np.ndarray:
        """Gather frames by id into `out` (or a new array): shape (*ids.shape, *frame_shape).

        Raises FrameNotFoundError / FrameEvictedError for ids not (or no longer) stored, TypeError
        for ids that are not integers (1.5 is not frame 1); never returns a frame other than the
        one asked for.
        """
        ids = _as_ids(ids)
        self._check_ids(ids)
        res = np.take(self._frames, ids % self.capacity, axis=0, out=out)
        fence()
        self._check_not_evicted(ids)
        return res

    def view(self, first_id: int, count: int = 1) -> np.ndarray:
        """Zero-copy view of frames [first_id, first_id + count) if they are contiguous in the
        store. The writer may overwrite them later: call `still_valid(first_id)` after use."""
        if not isinstance(first_id, int | np.integer) or isinstance(first_id, bool):
            raise TypeError(f"frame id must be an integer, got {first_id!r}")
        ids = np.arange(first_id, first_id + count, dtype=np.int64)
        self._check_ids(ids)
        slot = first_id % self.capacity
        if slot + count > self.capacity:
            raise ValueError(f"frames {first_id}..{first_id + count - 1} wrap around the store; use get()")
        return self._frames[slot : slot + count]

    def still_valid(self, frame_id: int) -> bool:
        """True if `frame_id` has not been (and is not being) overwritten."""
        fence()
        return frame_id >= max(int(self._ctrl[_RESERVED]) - self.capacity, int(self._ctrl[_FLOOR]))

    def snapshot(self) -> tuple[int, np.ndarray]:
        """(first id, frames (n, *frame_shape)) of every frame still stored, oldest first (a copy). Call it
        while no writer appends (e.g. after the writer stopped)."""
        first, end = self.oldest_id(), self.next_id
        return first, self.get(np.arange(first, end, dtype=np.int64))

    def restore(self, first_id: int, frames: np.ndarray) -> None:
        """Refill an empty store with `frames` (n, *frame_shape) as ids first_id … first_id + n − 1, so that
        refs taken before a snapshot stay valid; the next appended frame gets id first_id + n."""
        frames = np.asarray(frames, dtype=self.dtype)
        if self.next_id != 0:
            raise ValueError(f"restore into a store that already holds {self.next_id} frames")
        if frames.shape[1:] != self.frame_shape or len(frames) > self.capacity or first_id < 0:
            raise ValueError(f"cannot restore {len(frames)} frames of {frames.shape[1:]} from id {first_id} into a "
                             f"store of {self.capacity} frames of {self.frame_shape}")
        self.skip_to(first_id)
        if len(frames):
            self.append(frames)

    def skip_to(self, first_id: int) -> None:
        """Make `first_id` the id of the next appended frame (a replica that missed frames its source already
        evicted); the ids skipped count as evicted. Single writer, `first_id` >= next_id."""
        if first_id < self.next_id:
            raise ValueError(f"skip_to({first_id}) goes back: the store already holds ids up to {self.next_id - 1}")
        self._ctrl[_FLOOR] = first_id
        fence()
        self._ctrl[_RESERVED] = first_id
        self._ctrl[_PUBLISHED] = first_id

    def close(self) -> None:
        """Unmap (the creator also unlinks the segment)."""
        del self._ctrl, self._slot_ids, self._frames
        self.seg.close()


def _as_ids(ids: np.ndarray | Sequence[int] | int) -> np.ndarray:
    """Frame ids as int64, refusing anything that is not an integer (no silent truncation)."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise TypeError(f"frame ids must be integers, got {arr.dtype} {arr.reshape(-1)[:4].tolist()}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise FrameNotFoundError(f"frame ids {arr[arr > np.iinfo(np.int64).max][:8].tolist()} not in store")
    return arr.astype(np.int64, copy=False)


def _frames_offset(capacity: int) -> int:
    return (_SLOTS_OFF + 8 * capacity + 63) // 64 * 64
