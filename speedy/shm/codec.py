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
truncated bytes, bad magic, a header that is not msgpack, an unknown or unparsable dtype, a
shape numpy cannot hold, a payload that points outside the message — raises `CodecError` (and
nothing else) naming the problem and the value; it never returns garbage. A message is at most
`MAX_MESSAGE_BYTES` (the prefix's lengths are u32); encoding a bigger one raises `CodecError`.
Allowed dtypes: bool, signed/unsigned integers, floats, complex (no object or void dtypes).
"""

from __future__ import annotations

import struct
import warnings
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
MAX_MESSAGE_BYTES = 0xFFFFFFFF


class CodecError(ValueError):
    """A message could not be encoded or decoded (names the problem)."""


def align_up(n: int, a: int = ALIGN) -> int:
    """Smallest multiple of `a` that is >= `n`."""
    return (n + a - 1) // a * a


def message_size(header_bytes: int, payload_bytes: int, abs_start: int) -> int:
    """Exact encoded bytes of a message whose header is `header_bytes` long, with `payload_bytes`
    of payload span, written at an address that is `abs_start` modulo 64."""
    return align_up(abs_start + _PREFIX.size + header_bytes) - abs_start + payload_bytes


def _check_size(header_bytes: int, payload_bytes: int) -> None:
    worst = _PREFIX.size + header_bytes + ALIGN - 1 + payload_bytes
    if worst > MAX_MESSAGE_BYTES:
        raise CodecError(f"message of up to {worst} bytes (header {header_bytes}, payload {payload_bytes}) "
                         f"exceeds the codec's limit of {MAX_MESSAGE_BYTES} bytes")


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


@dataclass(frozen=True)
class _EncTable:
    """Cached encoding of one array signature (names, dtypes, shapes): the msgpack of the table and
    each payload's offset (bytes, relative to the payload base)."""

    packed: bytes
    offsets: tuple[int, ...]
    payload_bytes: int


_ENC_CACHE: dict[tuple, _EncTable] = {}
_DEC_CACHE: dict[bytes, tuple] = {}  # packed table -> (entries, payload span in bytes)
_DEC_LENS: list[int] = []  # lengths of the packed tables in _DEC_CACHE (few distinct)
_CACHE_MAX = 512
_HEAD_F = b"\x82\xa1f"  # msgpack: map of 2, key "f"
_KEY_A = b"\xa1a"  # msgpack: key "a"
_EMPTY_TABLE = _EncTable(msgpack.packb([]), (), 0)


def _enc_table(key: tuple, arrays: list[np.ndarray]) -> _EncTable:
    """Build (and cache) the table of an array signature `key` = ((name, dtype, shape), ...)."""
    table, offsets = [], []
    pos = end = 0
    for (name, dtype, shape), arr in zip(key, arrays, strict=True):
        if not isinstance(name, str):
            raise CodecError(f"array names must be str, got {name!r}")
        if dtype.kind not in _ALLOWED_KINDS:
            raise CodecError(f"array {name!r} has unsupported dtype {dtype} (numeric/bool only)")
        table.append([name, dtype.str, list(shape), pos, arr.nbytes])
        offsets.append(pos)
        end = pos + arr.nbytes
        pos = align_up(end)
    enc = _EncTable(msgpack.packb(table, use_bin_type=True), tuple(offsets), end)
    if len(_ENC_CACHE) >= _CACHE_MAX:
        _ENC_CACHE.clear()
    _ENC_CACHE[key] = enc
    return enc


def _contiguous(name: Any, arr: Any) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        return arr if arr.flags.c_contiguous else arr.copy(order="C")
    if isinstance(arr, np.generic):
        return np.asarray(arr)
    raise CodecError(f"array {name!r} is a {type(arr).__name__}, not a numpy ndarray")


def _header(fields: Mapping[str, Any], packed_table: bytes) -> bytes:
    """msgpack of {"f": fields, "a": table}, with the table bytes already packed (cached)."""
    for key in fields:
        if type(key) is not str and not isinstance(key, str):
            raise CodecError(f"field names must be str, got {key!r}")
    try:
        packed_fields = msgpack.packb(fields if type(fields) is dict else dict(fields), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"fields are not msgpack-serializable: {e}") from e
    return b"".join((_HEAD_F, packed_fields, _KEY_A, packed_table))


def prepare(fields: Mapping[str, Any],
            arrays: Mapping[str, np.ndarray] | None) -> tuple[bytes, list[np.ndarray], tuple[int, ...], int]:
    """Hot-path core of `plan`: (header bytes, C-contiguous arrays, payload offsets, payload bytes).

    The array table (names, dtypes, shapes, offsets) is msgpack-encoded once per distinct
    signature and cached, so a stream of same-layout messages only packs its `fields`.
    """
    if not arrays:
        return _header(fields, _EMPTY_TABLE.packed), [], (), 0
    contiguous, key = [], []
    for name, arr in arrays.items():
        if type(arr) is not np.ndarray or not arr.flags.c_contiguous:
            arr = _contiguous(name, arr)
        contiguous.append(arr)
        key.append((name, arr.dtype, arr.shape))
    tkey = tuple(key)
    enc = _ENC_CACHE.get(tkey) or _enc_table(tkey, contiguous)
    header = _header(fields, enc.packed)
    if enc.payload_bytes + len(header) > 0x7FFFFFFF:
        _check_size(len(header), enc.payload_bytes)
    return header, contiguous, enc.offsets, enc.payload_bytes


def plan(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> EncodePlan:
    """Prepare `fields` (str keys, msgpack-able values) and `arrays` (str -> ndarray) for writing."""
    header, contiguous, offsets, payload = prepare(fields, arrays)
    bound = _PREFIX.size + len(header) + ALIGN + payload
    return EncodePlan(header, contiguous, list(offsets), payload, bound)


def write_prepared(dst: Any, start: int, header: bytes, arrays: list[np.ndarray], offsets: tuple[int, ...],
                   payload: int) -> int:
    """Write a `prepare`d message into the mmap `dst` at byte `start` (an mmap offset, so also the
    absolute address mod 64). Each payload is copied once (one memcpy per array, straight from
    the array's buffer). Returns the message's bytes; the caller made room for the bound
    `16 + len(header) + 63 + payload`."""
    hlen = len(header)
    base = align_up(start + _PREFIX.size + hlen) - start
    total = base + payload
    dst[start : start + base] = b"".join((_PREFIX.pack(MAGIC, hlen, base, total), header,
                                          _ZEROS[: base - _PREFIX.size - hlen]))
    at = start + base
    for arr, off in zip(arrays, offsets, strict=True):
        nb = arr.nbytes
        if nb:
            dst[at + off : at + off + nb] = arr  # buffer protocol: one memcpy, no temporaries
    return total


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
    return decode_at(mv, 0, mv.nbytes)


def decode_at(mv: memoryview, start: int, n: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Decode the message in bytes [start, start + n) of the byte memoryview `mv` (no slicing).

    Arrays are views into `mv`; they are read-only (pass `mv.toreadonly()` to skip the flag
    update). Array tables already seen are looked up in a cache instead of being re-validated.
    """
    if n < _PREFIX.size:
        raise CodecError(f"truncated message: {n} bytes, the prefix alone is {_PREFIX.size}")
    magic, hlen, base, total = _PREFIX.unpack_from(mv, start)
    if magic != MAGIC:
        raise CodecError(f"bad message magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
    if total > n:
        raise CodecError(f"truncated message: says {total} bytes, buffer has {n}")
    if not (_PREFIX.size + hlen <= base <= total):
        raise CodecError(f"inconsistent message layout: header {hlen} B, payload base {base}, total {total}")
    hb = bytes(mv[start + _PREFIX.size : start + _PREFIX.size + hlen])
    fast = _decode_cached(hb)
    if fast is None:
        fields, entries, span = _decode_slow(hb, base, total)
    else:
        fields, entries, span = fast
        if base + span > total:
            raise CodecError(f"payload of {span} bytes at base {base} runs beyond message end {total}")
    arrays = {}
    at = start + base
    writable = not mv.readonly
    for name, dtype, shape, off in entries:
        try:
            arr = np.ndarray(shape, dtype, mv, at + off)
        except Exception as e:  # a shape numpy refuses (e.g. too many elements even with a 0 dimension)
            raise CodecError(f"array {name!r}: numpy refuses shape {list(shape)} of {dtype}: {e}") from e
        if writable:
            arr.flags.writeable = False
        arrays[name] = arr
    return fields, arrays


def _decode_cached(hb: bytes) -> tuple | None:
    """(fields, entries, span) if `hb` = {"f": fields, "a": <a cached table>} in canonical order.

    msgpack objects are self-delimiting, so if hb[3:k] is exactly one object and hb[k:] is the key
    "a" followed by a table that parsed completely before, this is the only parse of `hb`."""
    if not hb.startswith(_HEAD_F):
        return None
    for length in _DEC_LENS:
        cached = _DEC_CACHE.get(hb[-length:])
        if cached is None or hb[-length - 2 : -length] != _KEY_A:
            continue
        try:
            fields = msgpack.unpackb(hb[3 : -length - 2], raw=False, strict_map_key=True)
        except Exception:  # noqa: BLE001 - any parse failure: fall back to the validating slow path
            continue
        if isinstance(fields, dict):
            return fields, cached[0], cached[1]
    return None


def _decode_slow(hb: bytes, base: int, total: int) -> tuple[dict, list, int]:
    try:
        head = msgpack.unpackb(hb, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises ValueError, TypeError, StackError, ... on malformed input
        raise CodecError(f"message header is not valid msgpack: {type(e).__name__}: {e}") from e
    if not isinstance(head, dict) or not isinstance(head.get("f"), dict) or not isinstance(head.get("a"), list):
        raise CodecError("message header lacks the 'f' (fields) dict or 'a' (arrays) list")
    entries = [_decode_array(base, total, entry) for entry in head["a"]]
    span = max((off + dtype.itemsize * _count(shape) for _, dtype, shape, off in entries), default=0)
    if len(head) == 2 and hb.startswith(_HEAD_F):
        packed = msgpack.packb(head["a"], use_bin_type=True)
        if hb.endswith(_KEY_A + packed) and len(set(e[0] for e in entries)) == len(entries):
            if len(_DEC_CACHE) >= _CACHE_MAX:
                _DEC_CACHE.clear()
                _DEC_LENS.clear()
            _DEC_CACHE[packed] = (entries, span)
            if len(packed) not in _DEC_LENS:
                _DEC_LENS.append(len(packed))
    return head["f"], entries, span


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _decode_array(base: int, total: int, entry: Any) -> tuple[str, np.dtype, tuple[int, ...], int]:
    """Validate one array table entry; returns (name, dtype, shape, offset from the payload base)."""
    if not (isinstance(entry, list) and len(entry) == 5):
        raise CodecError(f"array table entry must be [name, dtype, shape, offset, nbytes], got {entry!r}")
    name, dtype_str, shape, off, nbytes = entry
    if not isinstance(name, str) or not isinstance(dtype_str, str):
        raise CodecError(f"array table entry has a bad name or dtype: {entry!r}")
    try:
        with warnings.catch_warnings():  # a deprecated alias in a foreign record is not our warning
            warnings.simplefilter("ignore")
            dtype = np.dtype(dtype_str)
    except Exception as e:  # numpy raises TypeError, ValueError or SyntaxError on odd strings
        raise CodecError(f"array {name!r}: unknown dtype {dtype_str!r} ({type(e).__name__})") from e
    if dtype.kind not in _ALLOWED_KINDS:
        raise CodecError(f"array {name!r}: dtype {dtype} not allowed")
    ok_shape = isinstance(shape, list) and len(shape) <= _MAX_NDIM
    if not ok_shape or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_MESSAGE_BYTES
                               for d in shape):
        raise CodecError(f"array {name!r}: bad shape {shape!r} (dimensions are ints in [0, {MAX_MESSAGE_BYTES}])")
    if not (isinstance(off, int) and isinstance(nbytes, int)) or off < 0:
        raise CodecError(f"array {name!r}: bad offset/nbytes {off!r}/{nbytes!r}")
    if _count(shape) * dtype.itemsize != nbytes:
        raise CodecError(f"array {name!r}: shape {shape} of {dtype} is not {nbytes} bytes")
    if base + off + nbytes > total:
        raise CodecError(f"array {name!r}: payload [{base + off}, {base + off + nbytes}) beyond message end {total}")
    return name, dtype, tuple(shape), off
