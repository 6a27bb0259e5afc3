"""Arena: a growable shared-memory segment (an anonymous ``memfd`` mapped on both sides of an isolated runtime) and
the layout of tensors in it — what crosses between the server and a runtime process, with no pickling of data.

A tensor is described by a small header entry ``(name, dtype, shape, offset, nbytes)``; its bytes lie at
``offset`` in the arena, 64-byte aligned. Numeric tensors are copied in once and read back as ``np.frombuffer``
views. BYTES tensors (numpy object arrays of ``bytes``) are serialised: each element as a 4-byte little-endian
length followed by its bytes, in C order.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

ALIGN = 64
_MIN_SIZE = 1 << 16
BYTES = "bytes"  # the dtype name of a serialised BYTES tensor in a header

#: one tensor in a header: name, dtype name (``bytes`` for BYTES), shape, offset, nbytes
Entry = tuple[str, str, tuple[int, ...], int, int]


def _round(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


_DTYPES: dict[str, np.dtype] = {}


def dtype_name(dtype: np.dtype) -> str:
    """How a header names ``dtype``: its array-protocol string (``<f4``), or its name for extension dtypes."""
    return dtype.name if dtype.kind == "V" else dtype.str


def dtype_of(name: str) -> np.dtype:
    """The numpy dtype a header names (``bfloat16`` comes from ml_dtypes)."""
    dtype = _DTYPES.get(name)
    if dtype is None:
        if name == "bfloat16":
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            dtype = np.dtype(name)
        _DTYPES[name] = dtype
    return dtype


class Arena:
    """One side's mapping of a segment. The writer grows it (a new memfd whose descriptor is passed to the reader
    with the message that first uses it); the reader ``attach``es the descriptor it receives."""

    __slots__ = ("fd", "size", "view")

    def __init__(self, fd: int = -1, size: int = 0) -> None:
        self.fd = fd
        self.size = size
        self.view: mmap.mmap | None = mmap.mmap(fd, size) if fd >= 0 and size > 0 else None

    @classmethod
    def create(cls, size: int) -> Arena:
        size = max(_MIN_SIZE, 1 << max(size - 1, 1).bit_length())  # powers of two: few regrowths
        fd = os.memfd_create("tensorgate-arena", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size)

    def attach(self, fd: int) -> None:
        """Replace the mapping with the segment behind ``fd`` (received from the writer)."""
        self.close()
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.view = mmap.mmap(fd, self.size)

    def close(self) -> None:
        if self.view is not None:
            try:
                self.view.close()
            except BufferError:  # a view still exported (a caller kept an array): freed with it
                pass
            self.view = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.size = 0


def layout(arrays: Mapping[str, np.ndarray]) -> tuple[list[tuple[str, np.ndarray | bytes]], int]:
    """What to write (numeric arrays as they are, BYTES serialised) and the arena size it needs."""
    parts: list[tuple[str, np.ndarray | bytes]] = []
    total = 0
    for name, array in arrays.items():
        data: np.ndarray | bytes = _serialise(array) if array.dtype == object else array
        parts.append((name, data))
        total += _round(len(data) if isinstance(data, bytes) else data.nbytes)
    return parts, total


def write(arena: Arena, arrays: Mapping[str, np.ndarray], parts: list[tuple[str, np.ndarray | bytes]]) -> list[Entry]:
    """Copy ``parts`` (from ``layout``) into ``arena`` (large enough); the header entries describing them."""
    view = arena.view
    assert view is not None
    entries: list[Entry] = []
    offset = 0
    for name, data in parts:
        array = arrays[name]
        if isinstance(data, bytes):
            size = len(data)
            view[offset : offset + size] = data
            entries.append((name, BYTES, array.shape, offset, size))
        else:
            size = data.nbytes
            if size:  # as raw bytes: a slice assignment costs a third of writing through a typed view
                view[offset : offset + size] = data.reshape(-1).view(np.uint8).data
            entries.append((name, dtype_name(data.dtype), data.shape, offset, size))
        offset += _round(size)
    return entries


def read(arena: Arena, entries: list[Entry], copy: bool) -> dict[str, np.ndarray]:
    """The tensors the entries describe: views into ``arena`` (``copy`` False) or copies of them."""
    view = arena.view
    out: dict[str, np.ndarray] = {}
    for name, dtype, shape, offset, size in entries:
        if offset < 0 or size < 0 or offset + size > arena.size or view is None:
            raise ValueError(f"tensor {name!r} lies outside the shared arena")
        if dtype == BYTES:
            out[name] = _deserialise(view[offset : offset + size], shape)
            continue
        dt = dtype_of(dtype)
        count = size // dt.itemsize if dt.itemsize else 0
        array = np.frombuffer(view, dtype=dt, count=count, offset=offset).reshape(shape)
        out[name] = array.copy() if copy else array
    return out


def _serialise(array: np.ndarray) -> bytes:
    chunks: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        chunks.append(len(data).to_bytes(4, "little"))
        chunks.append(data)
    return b"".join(chunks)


def _deserialise(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    raw = bytes(data)
    count = int(np.prod(shape)) if shape else 1
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        length = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        out[i] = raw[pos : pos + length]
        pos += length
    return out.reshape(shape)
