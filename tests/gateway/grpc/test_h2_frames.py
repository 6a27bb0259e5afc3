"""The h2 server's written bytes: frame headers, control frames and HPACK literals decode as meant."""

from __future__ import annotations

import struct

import hpack
import pytest

from gateway.grpc.h2 import frames as f
from gateway.grpc.h2.connection import trailer_block


def test_frame_header_layout() -> None:
    head = f.header(0x012345, f.HEADERS, f.END_HEADERS | f.END_STREAM, 7)
    assert len(head) == 9
    word, flags, sid = struct.unpack(">IBI", head)
    assert (word >> 8, word & 0xFF, flags, sid) == (0x012345, f.HEADERS, 0x5, 7)


def test_control_frames() -> None:
    assert f.window_update(3, 1000)[9:] == struct.pack(">I", 1000)
    assert f.rst_stream(5, f.CANCEL)[9:] == struct.pack(">I", f.CANCEL)
    goaway = f.goaway(9, f.PROTOCOL_ERROR, b"why")
    assert struct.unpack(">II", goaway[9:17]) == (9, f.PROTOCOL_ERROR) and goaway[17:] == b"why"
    ping = f.ping_ack(b"12345678")
    assert ping[3] == f.PING and ping[4] == f.ACK and ping[9:] == b"12345678"
    body = f.settings({f.INITIAL_WINDOW_SIZE: 1 << 20, f.MAX_FRAME_SIZE: 16_384})[9:]
    assert [struct.unpack(">HI", body[i : i + 6]) for i in (0, 6)] == [(4, 1 << 20), (5, 16_384)]


@pytest.mark.parametrize("value", [0, 126, 127, 128, 300, 16_383, 1 << 20])
def test_hpack_integers_and_literals_decode(value: int) -> None:
    name, data = b"x-key", b"v" * value
    assert hpack.Decoder(max_header_list_size=1 << 22).decode(f.literal(name, data)) == [("x-key", data.decode())]


def test_precomputed_response_headers_and_trailers() -> None:
    decoder = hpack.Decoder()
    assert decoder.decode(f.RESPONSE_HEADERS) == [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-accept-encoding", "identity,deflate,gzip"),
    ]
    assert decoder.decode(f.STATUS_OK) == [("grpc-status", "0")]
    block = trailer_block(3, "bad 100% ünïcode\nline", (("x-request-id", "abc"), ("k-bin", b"\x00\xff")))
    headers = dict(decoder.decode(block))
    assert headers["grpc-status"] == "3"
    assert headers["grpc-message"] == "bad 100%25 %C3%BCn%C3%AFcode%0Aline"
    assert headers["x-request-id"] == "abc" and headers["k-bin"] == "AP8"
    assert not decoder.header_table.dynamic_entries  # literals never touch the peer's table
