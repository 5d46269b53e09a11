"""Weight slot: one writer publishes a flat parameter buffer with a version; many readers copy
the newest consistent one without ever blocking the writer (a seqlock).

Protocol. `seq` is even when the buffer is stable and odd while the writer copies into it.
Writer: seq += 1 (odd); fence; store version; copy bytes; fence; seq += 1 (even).
Reader: s1 = seq (retry if odd); read version; copy bytes; fence; s2 = seq; the copy is good iff
s1 == s2. A torn copy (the writer started meanwhile) is discarded and retried, so a reader never
returns a mix of two versions. A writer that dies mid-copy leaves seq odd: readers notice its
pid is gone and raise `PeerDiedError` instead of spinning forever.

The layout (tensor names, dtypes, shapes, byte offsets) is msgpack-encoded in the segment, so a
reader can rebuild a torch state dict without any other information.

Data region: 0 seq, 64 version, 128 writer pid, 136 writer start time (float64 bits),
192 layout length; 256 layout msgpack; then the flat buffer (64-byte aligned).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from speedy.shm.doorbell import fence
from speedy.shm.ring import PeerDiedError, RingTimeoutError
from speedy.shm.segment import Segment, pid_alive, process_start_time

_SEQ, _VERSION, _WPID, _WSTART, _LAYOUT_LEN = 0, 8, 16, 17, 24
_LAYOUT_OFF = 256


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
    """Seqlock-protected flat buffer of `nbytes` bytes with a version number."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self._ctrl = seg.ndarray(np.int64, 0, _LAYOUT_OFF // 8)
        self._ctrl_f = self._ctrl.view(np.float64)
        n = int(self._ctrl[_LAYOUT_LEN])
        raw = seg.ndarray(np.uint8, _LAYOUT_OFF, n).tobytes()
        self.layout = WeightLayout.from_list(msgpack.unpackb(raw)) if n else None
        self.nbytes = int(seg.meta["nbytes"])
        self._data = seg.ndarray(np.uint8, int(seg.meta["data_off"]), self.nbytes)

    @classmethod
    def create(cls, run_id: str, name: str, size: int | WeightLayout) -> WeightSlot:
        """Create a slot of `size` bytes, or sized and described by a WeightLayout."""
        layout = size if isinstance(size, WeightLayout) else None
        nbytes = layout.nbytes if layout else int(size)
        if nbytes <= 0:
            raise ValueError(f"weight slot size must be > 0 bytes, got {nbytes}")
        raw = msgpack.packb(layout.to_list()) if layout else b""
        data_off = (_LAYOUT_OFF + len(raw) + 63) // 64 * 64
        seg = Segment.create(run_id, name, data_off + nbytes,
                             {"kind": "weights", "nbytes": nbytes, "data_off": data_off})
        seg.ndarray(np.uint8, _LAYOUT_OFF, len(raw))[:] = np.frombuffer(raw, np.uint8)
        seg.ndarray(np.int64, 0, _LAYOUT_OFF // 8)[_LAYOUT_LEN] = len(raw)
        return cls(seg)

    @classmethod
    def attach(cls, run_id: str, name: str) -> WeightSlot:
        """Attach to an existing slot."""
        seg = Segment.attach(run_id, name)
        if seg.meta.get("kind") != "weights":
            raise ValueError(f"segment {seg.path.name} is a {seg.meta.get('kind')!r}, not a weight slot")
        return cls(seg)

    def latest_version(self) -> int:
        """Version of the last complete publish; -1 if none yet."""
        return int(self._ctrl[_VERSION]) if self._ctrl[_SEQ] >= 2 else -1

    def publish(self, flat: np.ndarray | bytes, version: int) -> None:
        """Publish `flat` (exactly `nbytes` bytes, any dtype) as `version` (>= 0). One writer only."""
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
        seq = int(ctrl[_SEQ])
        ctrl[_SEQ] = seq + 1 + (seq & 1)  # odd (also recovers an odd seq left by a dead writer)
        fence()
        ctrl[_VERSION] = version
        np.copyto(self._data, src)
        fence()
        ctrl[_SEQ] = int(ctrl[_SEQ]) + 1

    def publish_state_dict(self, state_dict: Mapping[str, Any], version: int) -> None:
        """Flatten a torch state dict by this slot's layout and publish it."""
        if self.layout is None:
            raise ValueError("this weight slot was created without a layout")
        self.publish(flatten_state_dict(state_dict, self.layout), version)

    def read_into(self, out: np.ndarray, timeout: float = 5.0) -> int:
        """Copy the newest consistent buffer into `out` (nbytes bytes, C-contiguous); returns its
        version, or -1 (out untouched) if nothing was published yet. Raises PeerDiedError if the
        writer died mid-publish, RingTimeoutError if no consistent copy within `timeout` s."""
        dst = out.reshape(-1).view(np.uint8)
        if dst.nbytes != self.nbytes:
            raise ValueError(f"read of a {self.nbytes}-byte weight slot into {dst.nbytes} bytes")
        ctrl = self._ctrl
        t0 = time.monotonic()
        tries = 0
        while True:
            s1 = int(ctrl[_SEQ])
            if s1 == 0:
                return -1
            if not s1 & 1:
                version = int(ctrl[_VERSION])
                np.copyto(dst, self._data)
                fence()
                if int(ctrl[_SEQ]) == s1:
                    return version
            tries += 1
            if tries % 64 == 0:
                self._check_stuck(t0, timeout)
                time.sleep(0.0005)

    def _check_stuck(self, t0: float, timeout: float) -> None:
        pid = int(self._ctrl[_WPID])
        if int(self._ctrl[_SEQ]) & 1 and pid and not pid_alive(pid, float(self._ctrl_f[_WSTART])):
            raise PeerDiedError(f"weight slot {self.seg.path.name}: writer pid {pid} died mid-publish")
        if time.monotonic() - t0 > timeout:
            raise RingTimeoutError(f"weight slot {self.seg.path.name}: no consistent read in {timeout} s")

    def read_state_dict(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        """(version, state dict of torch tensors owned by the caller); version -1 if none yet."""
        if self.layout is None:
            raise ValueError("this weight slot was created without a layout")
        buf = np.empty(self.nbytes, np.uint8)
        version = self.read_into(buf, timeout)
        return version, unflatten_state_dict(buf, self.layout)

    def close(self) -> None:
        """Unmap (the creator also unlinks the segment)."""
        del self._ctrl, self._ctrl_f, self._data
        self.seg.close()
