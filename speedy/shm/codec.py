"""Message codec: a msgpack header with named fields plus raw ndarray payloads, no pickle.

Encoded layout of one message (all integers little-endian)::

    offset 0   u32 magic 'SPDM'   u32 header_len   u32 payload_base   u32 total_len
    offset 16  header: msgpack {"f": {field: value}, "a": [[name, dtype, shape, offset, nbytes], ...]}
    ...        zero padding so that every payload starts 64-byte aligned in *absolute* terms
    base       payloads, each at base + offset, each 64-byte aligned

`payload_base` and the offsets are relative to the message start, so a decoder needs no
knowledge of where the message lies; the encoder is told the absolute address modulo 64
(`abs_offset`) so that the arrays it writes into a ring are aligned for SIMD readers.

Decoding returns zero-copy, read-only ndarray views into the buffer. Anything malformed —
truncated bytes, bad magic, a header that is not msgpack, an unknown dtype, a payload that
points outside the message — raises `CodecError` naming the problem; it never returns garbage.
Allowed dtypes: bool, signed/unsigned integers, floats, complex (no object or void dtypes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

MAGIC = 0x4D445053  # b"SPDM"
_PREFIX = struct.Struct("<IIII")
ALIGN = 64
_ALLOWED_KINDS = frozenset("biufc")
_MAX_NDIM = 32
_ZEROS = bytes(ALIGN)


class CodecError(ValueError):
    """A message could not be encoded or decoded (names the problem)."""


def align_up(n: int, a: int = ALIGN) -> int:
    """Smallest multiple of `a` that is >= `n`."""
    return (n + a - 1) // a * a


@dataclass
class Message:
    """A decoded message.

    Attributes:
        fields: the named header fields (msgpack types: None, bool, int, float, str, bytes, list, dict).
        arrays: named payload arrays; zero-copy read-only views while the message comes from a
            ring, valid until `release()` is called.
    """

    fields: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the ring slot back to the writer. Idempotent. Do not touch `arrays` afterwards."""
        fn, self._release = self._release, None
        if fn is not None:
            fn()

    def copy(self) -> Message:
        """A self-contained copy (arrays copied), independent of any ring slot."""
        return Message(dict(self.fields), {k: v.copy() for k, v in self.arrays.items()})

    def __enter__(self) -> Message:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class EncodePlan:
    """A message ready to be written: header bytes and the contiguous arrays.

    `size_bound` is the most bytes `write_into` can need (whatever the alignment).
    """

    header: bytes
    arrays: list[np.ndarray]
    offsets: list[int]  # payload offsets relative to the payload base
    payload_bytes: int
    size_bound: int

    def write_into(self, dst: Any, start: int = 0, abs_offset: int | None = None) -> int:
        """Write the message into the writable buffer `dst` (mmap, bytearray, ...) at byte `start`.

        `abs_offset`: absolute address of dst[start] modulo 64 (default: `start`), so that payloads
        land 64-byte aligned in memory. Returns bytes written (at most `size_bound`).
        """
        hlen = len(self.header)
        abs_off = start if abs_offset is None else abs_offset
        base = align_up(abs_off + _PREFIX.size + hlen) - abs_off
        total = base + self.payload_bytes
        if len(dst) - start < total:
            raise CodecError(f"destination of {len(dst) - start} bytes too small for a {total}-byte message")
        dst[start : start + base] = (_PREFIX.pack(MAGIC, hlen, base, total) + self.header
                                     + _ZEROS[: base - _PREFIX.size - hlen])
        for arr, off in zip(self.arrays, self.offsets, strict=True):
            n = arr.nbytes
            if n:
                s = start + base + off
                dst[s : s + n] = arr.reshape(-1).view(np.uint8).data
        return total


def plan(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> EncodePlan:
    """Prepare `fields` (str keys, msgpack-able values) and `arrays` (str -> ndarray) for writing."""
    table = []
    contiguous = []
    offsets = []
    pos = 0
    end = 0
    for name, arr in (arrays or {}).items():
        if not isinstance(name, str):
            raise CodecError(f"array names must be str, got {name!r}")
        if isinstance(arr, np.generic):
            arr = np.asarray(arr)
        if not isinstance(arr, np.ndarray):
            raise CodecError(f"array {name!r} is a {type(arr).__name__}, not a numpy ndarray")
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise CodecError(f"array {name!r} has unsupported dtype {arr.dtype} (numeric/bool only)")
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        table.append([name, arr.dtype.str, list(arr.shape), pos, arr.nbytes])
        contiguous.append(arr)
        offsets.append(pos)
        end = pos + arr.nbytes
        pos = align_up(end)
    for key in fields:
        if not isinstance(key, str):
            raise CodecError(f"field names must be str, got {key!r}")
    try:
        header = msgpack.packb({"f": dict(fields), "a": table}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"fields are not msgpack-serializable: {e}") from e
    bound = _PREFIX.size + len(header) + ALIGN + end
    return EncodePlan(header, contiguous, offsets, end, bound)


def encode(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Encode a message into standalone bytes (e.g. for the network)."""
    p = plan(fields, arrays)
    out = bytearray(p.size_bound)
    n = p.write_into(out, 0)
    del out[n:]
    return bytes(out)


def decode(buf: memoryview | bytes | np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Decode one message from `buf` (exactly or at least its bytes) into (fields, arrays).

    Arrays are read-only views into `buf`. Raises CodecError on any malformed input.
    """
    mv = memoryview(buf).cast("B") if not isinstance(buf, np.ndarray) else memoryview(buf.reshape(-1))
    n = mv.nbytes
    if n < _PREFIX.size:
        raise CodecError(f"truncated message: {n} bytes, the prefix alone is {_PREFIX.size}")
    magic, hlen, base, total = _PREFIX.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CodecError(f"bad message magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
    if total > n:
        raise CodecError(f"truncated message: says {total} bytes, buffer has {n}")
    if not (_PREFIX.size + hlen <= base <= total):
        raise CodecError(f"inconsistent message layout: header {hlen} B, payload base {base}, total {total}")
    try:
        head = msgpack.unpackb(mv[_PREFIX.size : _PREFIX.size + hlen], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise CodecError(f"message header is not valid msgpack: {e}") from e
    if not isinstance(head, dict) or not isinstance(head.get("f"), dict) or not isinstance(head.get("a"), list):
        raise CodecError("message header lacks the 'f' (fields) dict or 'a' (arrays) list")
    arrays = {}
    for entry in head["a"]:
        name, arr = _decode_array(mv, base, total, entry)
        arrays[name] = arr
    return head["f"], arrays


def _decode_array(mv: memoryview, base: int, total: int, entry: Any) -> tuple[str, np.ndarray]:
    if not (isinstance(entry, list) and len(entry) == 5):
        raise CodecError(f"array table entry must be [name, dtype, shape, offset, nbytes], got {entry!r}")
    name, dtype_str, shape, off, nbytes = entry
    if not isinstance(name, str) or not isinstance(dtype_str, str):
        raise CodecError(f"array table entry has a bad name or dtype: {entry!r}")
    try:
        dtype = np.dtype(dtype_str)
    except TypeError as e:
        raise CodecError(f"array {name!r}: unknown dtype {dtype_str!r}") from e
    if dtype.kind not in _ALLOWED_KINDS:
        raise CodecError(f"array {name!r}: dtype {dtype} not allowed")
    ok_shape = isinstance(shape, list) and len(shape) <= _MAX_NDIM
    if not ok_shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CodecError(f"array {name!r}: bad shape {shape!r}")
    if not (isinstance(off, int) and isinstance(nbytes, int)) or off < 0:
        raise CodecError(f"array {name!r}: bad offset/nbytes {off!r}/{nbytes!r}")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != nbytes:
        raise CodecError(f"array {name!r}: shape {shape} of {dtype} is not {nbytes} bytes")
    if base + off + nbytes > total:
        raise CodecError(f"array {name!r}: payload [{base + off}, {base + off + nbytes}) beyond message end {total}")
    arr = np.frombuffer(mv, dtype, count, base + off).reshape(tuple(shape))
    arr.flags.writeable = False
    return name, arr
