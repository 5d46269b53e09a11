"""Decoder fuzzing: whatever the bytes, `decode` returns a message or raises `CodecError`, nothing else.

Three sources of input, each bounded in examples: valid messages with bytes flipped or cut,
headers whose array tables hold arbitrary msgpack values where a name, dtype, shape, offset or
size belongs (the inputs that escaped as SyntaxError/ValueError before issue 11), and dtype
strings drawn from numpy's own grammar characters.
"""

from __future__ import annotations

import struct
import time

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedy.shm import CodecError, decode, encode
from speedy.shm.codec import MAGIC

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
_GOOD = encode({"step": 3, "tag": "x"}, {"a": np.arange(12, dtype=np.float32).reshape(3, 4),
                                          "b": np.ones(5, np.int16)})


def decodes_or_codec_error(raw: bytes) -> None:
    t0 = time.monotonic()
    try:
        fields, arrays = decode(raw)
    except CodecError:
        pass
    else:  # a message that decodes must be usable
        assert isinstance(fields, dict)
        for arr in arrays.values():
            arr.sum()
    assert time.monotonic() - t0 < 1.0


def message(table: list, fields: object = None, payload: int = 64) -> bytes:
    header = msgpack.packb({"f": {} if fields is None else fields, "a": table})
    base = (16 + len(header) + 63) // 64 * 64
    return struct.pack("<IIII", MAGIC, len(header), base, base + payload) + header + bytes(base - 16 - len(header)
                                                                                          + payload)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(_GOOD)))
def test_flipped_and_cut_messages(flips, cut):
    raw = bytearray(_GOOD)
    for at, value in flips:
        raw[at] = value
    decodes_or_codec_error(bytes(raw[:cut]))


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)
dtype_chars = st.text(alphabet="<>|=(),[]0123456789fiucbOUSVMmaxyz: ", max_size=10)
dims = st.integers(-2, 2**64 - 1) | st.sampled_from([0, 1, 2**31, 2**32, 2**63])


@FUZZ
@given(name=msgpack_values | st.just("x"), dtype=dtype_chars | msgpack_values,
       shape=st.lists(dims, max_size=40) | msgpack_values, offset=msgpack_values | st.integers(-5, 200),
       nbytes=msgpack_values | st.integers(-5, 200), fields=msgpack_values)
def test_arbitrary_array_tables(name, dtype, shape, offset, nbytes, fields):
    decodes_or_codec_error(message([[name, dtype, shape, offset, nbytes]], fields))


@FUZZ
@given(dtype=dtype_chars, shape=st.lists(st.sampled_from([0, 1, 3, 2**32, 2**62, 2**63]), max_size=6))
def test_dtype_strings_and_zero_size_shapes(dtype, shape):
    decodes_or_codec_error(message([["x", dtype, shape, 0, 0]]))


@FUZZ
@given(st.binary(max_size=200))
def test_headers_that_are_not_msgpack(header):
    base = (16 + len(header) + 63) // 64 * 64
    decodes_or_codec_error(struct.pack("<IIII", MAGIC, len(header), base, base) + header
                           + bytes(base - 16 - len(header)))
