"""The V2 raw tensor layout shared by REST's binary extension and gRPC's raw contents: little-endian, row-major,
BYTES as 4-byte length prefixes. Decoding is zero-copy for fixed-size types."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from gateway.core.errors import InvalidInput
from gateway.core.types import DATATYPES, element_count


def from_raw(buf: bytes | memoryview, name: str, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """The array an input's raw bytes hold; InvalidInput names the input when the size does not fit the shape."""
    count = element_count(shape)
    if datatype == "BYTES":
        return unpack_bytes(buf, name, shape, count)
    dt = DATATYPES[datatype]
    expected = count * dt.size
    if len(buf) != expected:
        raise InvalidInput(
            f"input {name!r}: {len(buf)} bytes of {datatype} data, shape {list(shape)} needs {expected} bytes"
        )
    array = np.frombuffer(buf, dtype=dt.numpy).reshape(shape)
    if datatype == "BOOL":
        array = array.view(np.uint8).astype(np.bool_)  # any non-zero byte is true
    return array


def unpack_bytes(buf: bytes | memoryview, name: str, shape: Sequence[int], count: int) -> np.ndarray:
    data = bytes(buf)
    out = np.empty(count, dtype=np.object_)
    pos = 0
    for i in range(count):
        if pos + 4 > len(data):
            raise InvalidInput(f"input {name!r}: BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + length > len(data):
            raise InvalidInput(f"input {name!r}: BYTES element {i} claims {length} bytes past the end of the data")
        out[i] = data[pos : pos + length]
        pos += length
    if pos != len(data):
        raise InvalidInput(f"input {name!r}: {len(data) - pos} bytes left over after {count} BYTES elements")
    return out.reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    """An output's raw bytes (BYTES elements that are not bytes are written as their UTF-8 text)."""
    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        parts = []
        for item in array.reshape(-1):
            b = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(array).tobytes()
