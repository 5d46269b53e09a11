"""Weight slot: one writer publishes a flat parameter buffer with a version; many readers copy
the newest complete one, in bounded time whatever the writer does, and never block the writer.

Protocol (three buffers, reader pins). The slot holds `N_BUFFERS` = 3 copies of the buffer, each
with its own seqlock counter and version, and `latest` = index + 1 of the newest complete copy
(0 before the first publish). Every reader process claims a row of the reader table and, while it
copies, *pins* the buffer it reads (its own row, so no atomic read-modify-write is needed).

Writer: choose a target t != latest that no reader pins (if every candidate is pinned, the one
with the oldest version: its reader sees a torn copy and retries on the newest); seq[t] += 1
(odd); store version; copy; fence; seq[t] += 1 (even); latest = t + 1; fence.
Reader: b = latest - 1; pin = b + 1; fence; re-load latest and retry unless unchanged; then the
usual seqlock copy of buffer b (s1 = seq[b]; copy; fence; s2 = seq[b]; good iff s1 == s2 and
even); unpin. The pin store and the writer's `latest` store are each followed by a fence before
the other side's load (the Dekker pattern), so either the reader sees the new `latest` and moves
on, or the writer sees the pin and writes elsewhere. Hence a reader's copy is never overwritten
unless two other buffers are pinned at once by readers reading older versions, and a reader never
waits for the writer: a hammering writer and a loaded machine cannot starve it. A writer that dies
mid-publish leaves only its target torn; `latest` still names the last complete copy, and the next
writer recovers the odd counter.

The layout (tensor names, dtypes, shapes, byte offsets) is msgpack-encoded in the segment, so a
reader can rebuild a torch state dict without any other information.

Data region (bytes): 0 latest, 8 writer pid, 16 writer start time (float64 bits); 64 + 64·k seq
and version of buffer k; 256 layout length; 512 reader table (`MAX_READERS` rows of 64 bytes:
pin, pid, start time); then the layout msgpack; then the three flat buffers (64-byte aligned).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from speedy.shm.doorbell import fence
from speedy.shm.ring import RingTimeoutError
from speedy.shm.segment import Segment, pid_alive, process_start_time

N_BUFFERS = 3
MAX_READERS = 64
_LATEST, _WPID, _WSTART, _LAYOUT_LEN = 0, 1, 2, 32  # int64 indices into the control words
_BUF_CTRL = 8  # int64 index of buffer 0's seq; version at +1; buffer k at _BUF_CTRL + 8k
_TABLE_OFF = 512
_ROW = 8  # int64 words per reader row: pin, pid, start time
_LAYOUT_OFF = _TABLE_OFF + MAX_READERS * _ROW * 8


@dataclass(frozen=True)
class TensorSpec:
    """Where one tensor lives in the flat buffer. `dtype` is the torch dtype name (e.g. 'float32')."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # bytes from the start of the flat buffer, 64-byte aligned
    nbytes: int


@dataclass(frozen=True)
class WeightLayout:
    """Layout of a flattened state dict: tensors in order, and the total byte size."""

    tensors: tuple[TensorSpec, ...]
    nbytes: int

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> WeightLayout:
        """Layout for a torch state dict (each tensor 64-byte aligned)."""
        specs = []
        pos = 0
        for name, t in state_dict.items():
            nbytes = t.numel() * t.element_size()
            specs.append(TensorSpec(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), pos, nbytes))
            pos = (pos + nbytes + 63) // 64 * 64
        return cls(tuple(specs), pos)

    def to_list(self) -> list:
        """Plain-list form (for msgpack)."""
        return [self.nbytes, [[s.name, s.dtype, list(s.shape), s.offset, s.nbytes] for s in self.tensors]]

    @classmethod
    def from_list(cls, raw: list) -> WeightLayout:
        """Inverse of `to_list`."""
        nbytes, specs = raw
        return cls(tuple(TensorSpec(n, d, tuple(s), o, b) for n, d, s, o, b in specs), nbytes)


def flatten_state_dict(state_dict: Mapping[str, Any], layout: WeightLayout,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Copy the tensors of `state_dict` into a flat uint8 buffer (layout.nbytes,) laid out by `layout`."""
    import torch

    flat = np.zeros(layout.nbytes, np.uint8) if out is None else out
    dst = torch.from_numpy(flat)
    for spec in layout.tensors:
        t = state_dict[spec.name]
        if tuple(t.shape) != spec.shape or str(t.dtype).removeprefix("torch.") != spec.dtype:
            raise ValueError(f"tensor {spec.name!r}: {tuple(t.shape)} {t.dtype} does not match the layout "
                             f"({spec.shape} {spec.dtype})")
        src = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        dst[spec.offset : spec.offset + spec.nbytes].copy_(src)
    return flat


def unflatten_state_dict(flat: np.ndarray, layout: WeightLayout) -> dict[str, Any]:
    """Torch tensors that are views into `flat` (uint8 (layout.nbytes,)), keyed by name."""
    import torch

    src = torch.from_numpy(flat)
    out = {}
    for spec in layout.tensors:
        dtype = getattr(torch, spec.dtype)
        out[spec.name] = src[spec.offset : spec.offset + spec.nbytes].view(dtype).reshape(spec.shape)
    return out


class WeightSlot:
    """Triple-buffered, reader-pinned flat buffer of `nbytes` bytes with a version (see module doc)."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self._ctrl = seg.ndarray(np.int64, 0, _TABLE_OFF // 8)
        self._ctrl_f = self._ctrl.view(np.float64)
        self._table = seg.ndarray(np.int64, _TABLE_OFF, (MAX_READERS, _ROW))
        self._seq = self._ctrl[_BUF_CTRL : _BUF_CTRL + 8 * N_BUFFERS : 8]
        self._ver = self._ctrl[_BUF_CTRL + 1 : _BUF_CTRL + 8 * N_BUFFERS : 8]
        n = int(self._ctrl[_LAYOUT_LEN])
        raw = seg.ndarray(np.uint8, _LAYOUT_OFF, n).tobytes()
        self.layout = WeightLayout.from_list(msgpack.unpackb(raw)) if n else None
        self.nbytes = int(seg.meta["nbytes"])
        stride = int(seg.meta["stride"])
        off = int(seg.meta["data_off"])
        self._bufs = [seg.ndarray(np.uint8, off + k * stride, self.nbytes) for k in range(N_BUFFERS)]
        self._row = -1  # this instance's reader row, claimed at its first read
        # held open for the reader-table lock: the name may be unlinked (run stopping) before a first read
        self._lock_fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)

    @classmethod
    def create(cls, run_id: str, name: str, size: int | WeightLayout) -> WeightSlot:
        """Create a slot of `size` bytes, or sized and described by a WeightLayout.
        It takes about 3 × size bytes of shared memory (`segment_bytes`)."""
        layout = size if isinstance(size, WeightLayout) else None
        nbytes = layout.nbytes if layout else int(size)
        if nbytes <= 0:
            raise ValueError(f"weight slot size must be > 0 bytes, got {nbytes}")
        raw = msgpack.packb(layout.to_list()) if layout else b""
        data_off = (_LAYOUT_OFF + len(raw) + 63) // 64 * 64
        stride = (nbytes + 63) // 64 * 64
        seg = Segment.create(run_id, name, data_off + N_BUFFERS * stride,
                             {"kind": "weights", "nbytes": nbytes, "data_off": data_off, "stride": stride})
        seg.ndarray(np.uint8, _LAYOUT_OFF, len(raw))[:] = np.frombuffer(raw, np.uint8)
        seg.ndarray(np.int64, 0, _TABLE_OFF // 8)[_LAYOUT_LEN] = len(raw)
        return cls(seg)

    @staticmethod
    def segment_bytes(nbytes: int) -> int:
        """Shared memory taken by a slot of `nbytes` (the layout table aside): three copies."""
        return _LAYOUT_OFF + N_BUFFERS * ((nbytes + 63) // 64 * 64)

    @classmethod
    def attach(cls, run_id: str, name: str) -> WeightSlot:
        """Attach to an existing slot."""
        seg = Segment.attach(run_id, name)
        if seg.meta.get("kind") != "weights" or "stride" not in seg.meta:
            raise ValueError(f"segment {seg.path.name} is a {seg.meta.get('kind')!r}, not a weight slot")
        return cls(seg)

    def latest_version(self) -> int:
        """Version of the last complete publish; -1 if none yet."""
        while True:
            latest = int(self._ctrl[_LATEST])
            if latest == 0:
                return -1
            s1 = int(self._seq[latest - 1])
            version = int(self._ver[latest - 1])
            fence()
            if not s1 & 1 and int(self._seq[latest - 1]) == s1:
                return version

    # -- writer -------------------------------------------------------------------------------
    def _target(self) -> int:
        """A buffer that is not the newest and, if possible, not pinned by any reader."""
        latest = int(self._ctrl[_LATEST]) - 1
        pins = self._table[:, 0]
        pinned = set((pins[pins != 0] - 1).tolist())
        candidates = [k for k in range(N_BUFFERS) if k != latest]
        free = [k for k in candidates if k not in pinned]
        return min(free or candidates, key=lambda k: int(self._ver[k]) if self._seq[k] else -1)

    def publish(self, flat: np.ndarray | bytes, version: int) -> None:
        """Publish `flat` (exactly `nbytes` bytes, any dtype) as `version` (>= 0). One writer only;
        never waits for readers."""
        src = np.frombuffer(flat, np.uint8) if isinstance(flat, bytes | bytearray | memoryview) else flat
        src = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        if src.nbytes != self.nbytes:
            raise ValueError(f"publish of {src.nbytes} bytes into a weight slot of {self.nbytes} bytes")
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        ctrl = self._ctrl
        if ctrl[_WPID] != os.getpid():
            self._ctrl_f[_WSTART] = process_start_time(os.getpid())
            ctrl[_WPID] = os.getpid()
        t = self._target()
        seq = int(self._seq[t])
        self._seq[t] = seq + 1 + (seq & 1)  # odd (also recovers an odd seq left by a dead writer)
        fence()
        self._ver[t] = version
        np.copyto(self._bufs[t], src)
        fence()
        self._seq[t] = int(self._seq[t]) + 1
        ctrl[_LATEST] = t + 1
        fence()  # the next _target's pin loads come after this store (see module doc)

    def publish_state_dict(self, state_dict: Mapping[str, Any], version: int) -> None:
        """Flatten a torch state dict by this slot's layout and publish it."""
        if self.layout is None:
            raise ValueError("this weight slot was created without a layout")
        self.publish(flatten_state_dict(state_dict, self.layout), version)

    # -- readers ------------------------------------------------------------------------------
    def _claim_row(self) -> int:
        """Claim a free row of the reader table (under an flock of the segment file: rare)."""
        me = os.getpid()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            table, table_f = self._table, self._table.view(np.float64)
            for row in range(MAX_READERS):
                pid = int(table[row, 1])
                if pid == 0 or (pid != me and not pid_alive(pid, float(table_f[row, 2]))):
                    table[row, 0] = 0
                    table_f[row, 2] = process_start_time(me)
                    table[row, 1] = me
                    return row
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        raise RuntimeError(f"weight slot {self.seg.path.name}: all {MAX_READERS} reader rows are taken "
                           f"by live readers; close() readers that are done")

    def read_into(self, out: np.ndarray, timeout: float = 5.0) -> int:
        """Copy the newest complete buffer into `out` (nbytes bytes, C-contiguous); returns its
        version, or -1 (out untouched) if nothing was published yet. Never torn. Raises
        RingTimeoutError if no consistent copy within `timeout` s (only possible when many
        readers pin old copies at once while the writer publishes continuously)."""
        dst = out.reshape(-1).view(np.uint8)
        if dst.nbytes != self.nbytes:
            raise ValueError(f"read of a {self.nbytes}-byte weight slot into {dst.nbytes} bytes")
        if self._row < 0:
            self._row = self._claim_row()
        ctrl, pin = self._ctrl, self._table[self._row]
        t0 = time.monotonic()
        try:
            while True:
                latest = int(ctrl[_LATEST])
                if latest == 0:
                    return -1
                pin[0] = latest
                fence()
                if int(ctrl[_LATEST]) == latest:
                    b = latest - 1
                    s1 = int(self._seq[b])
                    version = int(self._ver[b])
                    np.copyto(dst, self._bufs[b])
                    fence()
                    if not s1 & 1 and int(self._seq[b]) == s1:
                        return version
                if time.monotonic() - t0 > timeout:
                    raise RingTimeoutError(f"weight slot {self.seg.path.name}: no consistent read in {timeout} s")
        finally:
            pin[0] = 0

    def read_state_dict(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        """(version, state dict of torch tensors owned by the caller); version -1 if none yet."""
        if self.layout is None:
            raise ValueError("this weight slot was created without a layout")
        buf = np.empty(self.nbytes, np.uint8)
        version = self.read_into(buf, timeout)
        return version, unflatten_state_dict(buf, self.layout)

    def close(self) -> None:
        """Give back this reader's row, unmap (the creator also unlinks the segment)."""
        if self._row >= 0:
            with contextlib.suppress(ValueError):
                self._table[self._row, 0] = 0
                self._table[self._row, 1] = 0
            self._row = -1
        del self._ctrl, self._ctrl_f, self._table, self._seq, self._ver, self._bufs
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self.seg.close()
