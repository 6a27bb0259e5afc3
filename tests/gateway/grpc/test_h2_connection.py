"""The h2 server over real sockets: grpcio clients for unary and streamed calls (flow control with messages larger
than every window), aborts, errors, deadlines and limits; raw HTTP/2 bytes for protocol errors, which end only the
offending connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import hpack
import pytest

from gateway.grpc.h2 import frames as f
from gateway.grpc.h2.server import H2Server, Limits

LIMIT = 4 * 1024 * 1024


class Echo:
    """Handlers of a test service, served on a loop in a thread."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    async def unary(self, request: bytes, context: Any) -> bytes:
        metadata = dict(context.invocation_metadata())
        if request == b"abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: ünï 100%", (("x-why", "test"),))
        if request == b"raise":
            raise RuntimeError("boom")
        if request == b"sleep":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        context.set_trailing_metadata((("x-request-id", str(metadata.get("x-request-id"))),))
        return request[::-1] + str(context.time_remaining() is not None).encode()

    async def stream(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request + b"!"

    async def fan_out(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield b"%d" % i
        if int(request) > 2:
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("more than two")

    async def fan_in(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        return b"+".join([r async for r in requests])

    def plain(self, request: bytes, context: Any) -> bytes:  # a servicer method need not be a coroutine
        return request.upper()


@contextlib.contextmanager
def _serving(echo: Echo, limits: Limits) -> Iterator[int]:
    loop = asyncio.new_event_loop()
    server = H2Server(limits)
    server.add_registered_method_handlers(
        "t.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
            "Stream": grpc.stream_stream_rpc_method_handler(echo.stream),
            "FanOut": grpc.unary_stream_rpc_method_handler(echo.fan_out),
            "FanIn": grpc.stream_unary_rpc_method_handler(echo.fan_in),
            "Plain": grpc.unary_unary_rpc_method_handler(echo.plain),
        },
    )
    port = server.add_insecure_port("127.0.0.1:0")
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, Echo]]:
    echo = Echo()
    with _serving(echo, Limits(max_message_bytes=LIMIT, max_concurrent_streams=4)) as port:
        yield port, echo


def _channel(port: int) -> grpc.Channel:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=options)


def test_unary_calls_metadata_and_trailers(served: tuple[int, Echo]) -> None:
    with _channel(served[0]) as channel:
        call = channel.unary_unary("/t.Echo/Unary")
        for i in range(50):
            reply, status = call.with_call(b"abc%d" % i, metadata=(("x-request-id", f"r{i}"),))
            assert reply == (b"abc%d" % i)[::-1] + b"False"
            assert dict(status.trailing_metadata())["x-request-id"] == f"r{i}"
        assert call(b"xyz", timeout=10) == b"zyxTrue"
        assert call(b"") == b"False"


def test_abort_error_and_unknown_method(served: tuple[int, Echo]) -> None:
    with _channel(served[0]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t.Echo/Unary")(b"abort")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "no such thing: ünï 100%"
        assert dict(info.value.trailing_metadata())["x-why"] == "test"
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t.Echo/Unary")(b"raise")
        assert info.value.code() == grpc.StatusCode.UNKNOWN and "boom" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t.Echo/Nope")(b"x")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED and "/t.Echo/Nope" in info.value.details()


def test_every_kind_of_call(served: tuple[int, Echo]) -> None:
    with _channel(served[0]) as channel:
        assert list(channel.unary_stream("/t.Echo/FanOut")(b"2")) == [b"0", b"1"]
        replies: list[bytes] = []
        with pytest.raises(grpc.RpcError) as info:
            replies.extend(channel.unary_stream("/t.Echo/FanOut")(b"3"))
        assert replies == [b"0", b"1", b"2"]  # messages, then the status the handler set
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and info.value.details() == "more than two"
        assert channel.stream_unary("/t.Echo/FanIn")(iter([b"a", b"b", b"c"])) == b"a+b+c"
        assert channel.stream_unary("/t.Echo/FanIn")(iter([])) == b""
        assert channel.unary_unary("/t.Echo/Plain")(b"abc") == b"ABC"


def test_large_messages_both_ways_through_flow_control(served: tuple[int, Echo]) -> None:
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB: beyond every window on both sides
    with _channel(served[0]) as channel:
        assert channel.unary_unary("/t.Echo/Unary")(big, timeout=60) == big[::-1] + b"True"
        replies = list(channel.stream_stream("/t.Echo/Stream")(iter([big, b"a", big]), timeout=60))
        assert replies == [big + b"!", b"a!", big + b"!"]


def test_message_over_the_limit_is_refused_from_its_prefix(served: tuple[int, Echo]) -> None:
    with _channel(served[0]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t.Echo/Unary")(b"x" * (LIMIT + 1), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and str(LIMIT) in info.value.details()
        assert channel.unary_unary("/t.Echo/Unary")(b"ok") == b"koFalse"  # the connection still serves


def test_deadline_cancels_the_handler(served: tuple[int, Echo]) -> None:
    port, echo = served
    with _channel(port) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t.Echo/Unary")(b"sleep", timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert echo.cancelled.wait(10)


# --- raw HTTP/2 -----------------------------------------------------------------------------------------------------


def _frames(sock: socket.socket) -> Iterator[tuple[int, int, int, bytes]]:
    buf = b""
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + (struct.unpack(">I", b"\0" + buf[:3])[0]):
            length = struct.unpack(">I", b"\0" + buf[:3])[0]
            kind, flags, sid = buf[3], buf[4], struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
            yield kind, flags, sid, buf[9 : 9 + length]
            buf = buf[9 + length :]
        data = sock.recv(65536)
        if not data:
            return
        buf += data


def _goaway_code(port: int, payload: bytes, preface: bytes = f.PREFACE + f.settings({})) -> int | None:
    """Sends ``payload`` after the preface; the GOAWAY code the server answers with (None: closed without)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(preface + payload)
        for kind, _, _, body in _frames(sock):
            if kind == f.GOAWAY:
                return int(struct.unpack(">I", body[4:8])[0])
    return None


def _request_headers(sid: int, end_stream: bool = False) -> bytes:
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.Echo/Unary"),
                                    (":authority", "x"), ("content-type", "application/grpc")])  # fmt: skip
    flags = f.END_HEADERS | (f.END_STREAM if end_stream else 0)
    return f.header(len(block), f.HEADERS, flags, sid) + block


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (f.header(20_000, f.DATA, 0, 1) + b"x" * 20_000, f.FRAME_SIZE_ERROR),
        (f.header(5, f.DATA, 0, 0) + b"xxxxx", f.PROTOCOL_ERROR),
        (f.header(6, f.HEADERS, f.END_HEADERS, 1) + b"\xff" * 6, f.COMPRESSION_ERROR),
        (f.header(4, f.HEADERS, f.END_HEADERS, 2) + b"\x82\x86\x84\x41", f.PROTOCOL_ERROR),
        (f.header(7, f.PING, 0, 0) + b"1234567", f.FRAME_SIZE_ERROR),
        (f.header(4, f.WINDOW_UPDATE, 0, 0) + struct.pack(">I", 0), f.PROTOCOL_ERROR),
        (f.header(4, f.WINDOW_UPDATE, 0, 0) + struct.pack(">I", 2**31 - 1), f.FLOW_CONTROL_ERROR),
        (f.header(5, f.SETTINGS, 0, 0) + b"12345", f.FRAME_SIZE_ERROR),
        (f.header(0, f.CONTINUATION, f.END_HEADERS, 1), f.PROTOCOL_ERROR),
        (f.header(0, f.PUSH_PROMISE, 0, 1), f.PROTOCOL_ERROR),
    ],
)
def test_protocol_errors_end_the_connection_with_goaway(served: tuple[int, Echo], payload: bytes, code: int) -> None:
    assert _goaway_code(served[0], payload) == code
    with _channel(served[0]) as channel:  # the server lives on
        assert channel.unary_unary("/t.Echo/Unary")(b"ok") == b"koFalse"


def test_not_http2_is_refused(served: tuple[int, Echo]) -> None:
    assert _goaway_code(served[0], b"", preface=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == f.PROTOCOL_ERROR


def test_ping_is_answered_and_streams_beyond_the_limit_refused(served: tuple[int, Echo]) -> None:
    with socket.create_connection(("127.0.0.1", served[0]), timeout=10) as sock:
        opened = b"".join(_request_headers(sid) for sid in (1, 3, 5, 7, 9))  # max_concurrent_streams=4
        sock.sendall(f.PREFACE + f.settings({}) + f.header(8, f.PING, 0, 0) + b"pingpong" + opened)
        seen: dict[str, Any] = {}
        for kind, flags, sid, body in _frames(sock):
            if kind == f.PING:
                seen["ping"] = (flags, body)
            elif kind == f.RST_STREAM:
                seen["rst"] = (sid, struct.unpack(">I", body)[0])
            if len(seen) == 2:
                break
    assert seen == {"ping": (f.ACK, b"pingpong"), "rst": (9, f.REFUSED_STREAM)}


def _trailers_of(port: int, head: bytes, message: bytes) -> dict[str, str]:
    """The response headers/trailers of one raw call (``head`` from _request_headers, then one DATA frame)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f.PREFACE + f.settings({}) + head + f.header(len(message), f.DATA, f.END_STREAM, 1) + message)
        decoder, headers = hpack.Decoder(), {}
        for kind, flags, sid, body in _frames(sock):
            if kind == f.HEADERS and sid == 1:
                headers.update(dict(decoder.decode(body)))
                if flags & f.END_STREAM:
                    break
    return headers


def test_a_compressed_message_needs_a_grpc_encoding(served: tuple[int, Echo]) -> None:
    headers = _trailers_of(served[0], _request_headers(1), b"\x01" + struct.pack(">I", 3) + b"abc")
    assert headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0]) and ":status" in headers
    assert "without grpc-encoding" in headers["grpc-message"]


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_gzip_and_deflate_requests_are_inflated(served: tuple[int, Echo], compression: grpc.Compression) -> None:
    with _channel(served[0]) as channel:
        unary = channel.unary_unary("/t.Echo/Unary")
        big = b"tensor" * 50_000  # compresses well: inflated on the loop
        assert unary(b"abc" * 1000, compression=compression) == (b"abc" * 1000)[::-1] + b"False"
        assert unary(big, compression=compression) == big[::-1] + b"False"
        noise = bytes(range(256)) * 2000  # does not compress: over 64 KiB compressed, inflated in a thread
        assert unary(noise, compression=compression) == noise[::-1] + b"False"
        stream = channel.stream_stream("/t.Echo/Stream")
        assert list(stream(iter([b"a", b"b" * 10_000]), compression=compression)) == [b"a!", b"b" * 10_000 + b"!"]


def test_a_compressed_bomb_stops_at_the_message_limit(served: tuple[int, Echo]) -> None:
    import zlib

    bomb = zlib.compress(b"\0" * (LIMIT + 1))  # a few KiB that inflate past the limit
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.Echo/Unary"),
                                    (":authority", "x"), ("content-type", "application/grpc"),
                                    ("grpc-encoding", "deflate")])  # fmt: skip
    head = f.header(len(block), f.HEADERS, f.END_HEADERS, 1) + block
    headers = _trailers_of(served[0], head, b"\x01" + struct.pack(">I", len(bomb)) + bomb)
    assert headers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "more than the limit" in headers["grpc-message"]
    garbage = _trailers_of(served[0], head, b"\x01" + struct.pack(">I", 5) + b"nope!")
    assert garbage["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0]) and "deflate" in garbage["grpc-message"]


def test_an_unknown_grpc_encoding_is_unimplemented(served: tuple[int, Echo]) -> None:
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.Echo/Unary"),
                                    (":authority", "x"), ("content-type", "application/grpc"),
                                    ("grpc-encoding", "snappy")])  # fmt: skip
    head = f.header(len(block), f.HEADERS, f.END_HEADERS, 1) + block
    headers = _trailers_of(served[0], head, b"\x00" + struct.pack(">I", 1) + b"x")
    assert headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert "gzip" in headers["grpc-message"]


def test_rapid_reset_ends_the_connection(served: tuple[int, Echo]) -> None:
    opened_and_reset = b"".join(
        _request_headers(sid) + f.rst_stream(sid, f.CANCEL) for sid in range(1, 2 * 1100, 2)
    )  # 1,100 streams opened and reset: over the 1,000 per 10 s allowed
    assert _goaway_code(served[0], opened_and_reset) == f.ENHANCE_YOUR_CALM


def test_a_silent_peer_is_pinged_then_closed() -> None:
    limits = Limits(keepalive_time=0.2, keepalive_timeout=0.2)
    with _serving(Echo(), limits) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f.PREFACE + f.settings({}))
        kinds = [(kind, flags) for kind, flags, _, _ in _frames(sock)]  # until the server closes
    assert (f.PING, 0) in kinds
