"""HTTP/2 frame constants and the bytes the server writes: frame headers, SETTINGS, PING/WINDOW_UPDATE/RST_STREAM/
GOAWAY frames, and HPACK header blocks as literals without indexing (the server never uses a dynamic table)."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = (
    range(1, 7)
)

# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1

_HEAD = struct.Struct(">I B I")  # (length << 8 | type), flags, stream id: packed as 3+1+1+4 below
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


def header(length: int, kind: int, flags: int, stream: int) -> bytes:
    """A 9-byte frame header."""
    return _HEAD.pack(length << 8 | kind, flags, stream)


def settings(values: dict[int, int]) -> bytes:
    body = b"".join(_SETTING.pack(k, v) for k, v in values.items())
    return header(len(body), SETTINGS, 0, 0) + body


SETTINGS_ACK = header(0, SETTINGS, ACK, 0)


def ping_ack(payload: bytes) -> bytes:
    return header(8, PING, ACK, 0) + payload


def window_update(stream: int, increment: int) -> bytes:
    return header(4, WINDOW_UPDATE, 0, stream) + _U32.pack(increment)


def rst_stream(stream: int, code: int) -> bytes:
    return header(4, RST_STREAM, 0, stream) + _U32.pack(code)


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    return header(8 + len(debug), GOAWAY, 0, 0) + _U32.pack(last_stream) + _U32.pack(code) + debug


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer with ``prefix_bits`` bits in the first byte, whose other bits are ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """``name: value`` as a literal without indexing, new name, no Huffman coding."""
    return b"\x00" + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


STATUS_200 = b"\x88"  # static table index 8
CONTENT_TYPE_GRPC = b"\x0f\x10" + hpack_int(16, 7, 0) + b"application/grpc"  # indexed name 31 (content-type)
RESPONSE_HEADERS = STATUS_200 + CONTENT_TYPE_GRPC + literal(b"grpc-accept-encoding", b"identity,deflate,gzip")
STATUS_OK = literal(b"grpc-status", b"0")
