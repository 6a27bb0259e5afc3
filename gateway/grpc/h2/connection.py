"""One HTTP/2 connection carrying gRPC calls, as an asyncio Protocol: frames parsed from the receive buffer with
``struct``, flow control both ways (windows granted as DATA is taken in, the peer's respected when sending, data
buffered while they are spent), and each response written at once where the windows allow: HEADERS, DATA and
trailers in one ``transport.write``. Protocol errors end the connection with GOAWAY; a bad call ends its stream."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway.grpc.h2 import frames as f
from gateway.grpc.h2.compression import ACCEPTED, WBITS, Compressed
from gateway.grpc.h2.headers import HeaderCache, HeaderError, RequestHead

if TYPE_CHECKING:
    from gateway.grpc.h2.server import Limits

log = logging.getLogger("tensorgate.grpc.h2")

_HEAD = struct.Struct(">IBI")
_U32 = struct.Struct(">I")
_MESSAGE = struct.Struct(">BI")
_SETTING = struct.Struct(">HI")
_EOF = None

# gRPC status codes (the wire numbers)
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)  # grpc-message: printable ASCII but '%'


class ConnectionError_(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def trailer_block(code: int, message: str | None, metadata: Any) -> bytes:
    """grpc-status, grpc-message (percent-encoded) and trailing metadata as HPACK literals."""
    if code == OK and not message and not metadata:
        return f.STATUS_OK
    parts = [f.STATUS_OK if code == OK else f.literal(b"grpc-status", str(code).encode())]
    if message:
        parts.append(f.literal(b"grpc-message", quote(message, safe=_SAFE).encode("ascii")))
    parts.extend(metadata_block(metadata))
    return b"".join(parts)


def metadata_block(metadata: Any) -> list[bytes]:
    import base64

    out = []
    for key, value in metadata or ():
        name = key.lower().encode("ascii")
        if key.endswith("-bin"):
            raw = value if isinstance(value, bytes) else str(value).encode()
            data = base64.b64encode(raw).rstrip(b"=")
        else:
            data = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
        out.append(f.literal(name, data))
    return out


class Stream:
    """One call's HTTP/2 stream: its request head, what arrived, what waits for the peer's window."""

    __slots__ = (
        "body",
        "cancelled",
        "deadline_timer",
        "done",
        "drained",
        "handler",
        "head",
        "headers_sent",
        "id",
        "messages",
        "pending",
        "queue",
        "queued",
        "recv_window",
        "remote_closed",
        "send_window",
        "task",
        "trailers",
        "unacked",
    )  # fmt: skip

    def __init__(self, sid: int, head: RequestHead, handler: Any, send_window: int, recv_window: int) -> None:
        self.id = sid
        self.head = head
        self.handler = handler
        self.body = bytearray()
        self.messages: list[bytes] = []
        self.queue: asyncio.Queue[bytes | None] | None = None  # streamed requests
        self.queued = 0  # their bytes not yet taken by the handler
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0
        self.remote_closed = False
        self.headers_sent = False
        self.pending = bytearray()  # DATA waiting for window
        self.trailers: bytes | None = None  # trailers waiting behind pending DATA
        self.drained: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.done = False


class Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection; ``start_call(connection, stream)`` runs a call's handler."""

    def __init__(self, limits: Limits, lookup: Callable[[str], Any], start_call: Callable[[Connection, Stream], None],
                 connections: set[Connection]) -> None:  # fmt: skip
        self.limits = limits
        self.lookup = lookup
        self.start_call = start_call
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.preface = False
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.headers = HeaderCache(limits.max_header_list_size)
        self.continuation: tuple[int, int, bytearray] | None = None  # (stream, flags, fragment)
        self.peer_window = f.DEFAULT_WINDOW  # connection-level send window
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_frame_size = f.DEFAULT_FRAME_SIZE
        self.recv_window = limits.connection_window
        self.recv_unacked = 0
        self.blocked: deque[Stream] = deque()  # streams with pending DATA
        self.going_away = False
        self.closed = False
        self.peer_name = ""
        self.writing = True
        self.resets = 0
        self.reset_window = 0.0
        self.keepalive: asyncio.TimerHandle | None = None
        self.heard = False
        self.pinged = False

    # --- transport -----------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=self.limits.write_buffer)
        self.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_name = f"ipv6:[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"ipv4:{peer[0]}:{peer[1]}"
        limits = self.limits
        settings = f.settings({
            f.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            f.INITIAL_WINDOW_SIZE: limits.stream_window,
            f.MAX_FRAME_SIZE: limits.max_frame_size,
            f.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        })  # fmt: skip
        transport.write(settings + f.window_update(0, limits.connection_window - f.DEFAULT_WINDOW))
        if limits.keepalive_time > 0:
            self.keepalive = asyncio.get_running_loop().call_later(limits.keepalive_time, self._keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.keepalive is not None:
            self.keepalive.cancel()
        self.connections.discard(self)
        for stream in list(self.streams.values()):
            self._cancel(stream)
        self.streams.clear()

    def pause_writing(self) -> None:
        """The peer does not read what is written: stop reading it too (PINGs, SETTINGS and calls cost writes)."""
        self.writing = False
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing = True
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            if stream.drained is not None and not stream.pending and not stream.drained.done():
                stream.drained.set_result(None)

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _keepalive(self) -> None:
        """Every ``keepalive_time`` without a byte from the peer: a PING; no answer within ``keepalive_timeout``
        (nothing at all heard): the connection is closed."""
        if self.closed or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        if self.heard:
            self.heard, self.pinged = False, False
            self.keepalive = loop.call_later(self.limits.keepalive_time, self._keepalive)
        elif self.pinged:
            self.closed = True
            self.transport.close()
        else:
            self.pinged = True
            self.write(f.header(8, f.PING, 0, 0) + b"keepaliv")
            self.keepalive = loop.call_later(self.limits.keepalive_timeout, self._keepalive)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        buf = self.buf
        buf += data
        try:
            pos = 0
            if not self.preface:
                if len(buf) < 24:
                    if not f.PREFACE.startswith(bytes(buf)):
                        raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if buf[:24] != f.PREFACE:
                    raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface = True
                pos = 24
            end = len(buf)
            max_frame = self.limits.max_frame_size
            while end - pos >= 9 and not self.closed:
                word, flags, sid = _HEAD.unpack_from(buf, pos)
                length = word >> 8
                if length > max_frame:
                    raise ConnectionError_(f.FRAME_SIZE_ERROR, f"frame of {length} bytes over {max_frame}")
                if end - pos - 9 < length:
                    break
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._frame(word & 0xFF, flags, sid & 0x7FFFFFFF, payload)
            del buf[:pos]
        except ConnectionError_ as exc:
            self.fail(exc.code, str(exc))
        except Exception:  # a bug must not take the server down: end this connection only
            log.exception("HTTP/2 connection error")
            self.fail(f.INTERNAL_ERROR, "internal error")

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY and close."""
        if self.closed:
            return
        log.debug("HTTP/2 connection error %d: %s", code, message)
        self.write(f.goaway(self.last_stream, code, message.encode("ascii", "replace")[:256]))
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def goaway(self) -> None:
        """Stop taking new streams (shutdown); calls in flight finish."""
        if not self.going_away:
            self.going_away = True
            self.write(f.goaway(self.last_stream, f.NO_ERROR))
            self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.going_away and not self.streams and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _count_reset(self) -> None:
        """Streams opened and reset at once, over and over, cost calls without bound ("rapid reset"): past
        ``limits.max_resets`` per 10 s the connection ends with ENHANCE_YOUR_CALM."""
        now = asyncio.get_running_loop().time()
        if now - self.reset_window > 10.0:
            self.reset_window, self.resets = now, 0
        self.resets += 1
        if self.resets > self.limits.max_resets:
            raise ConnectionError_(f.ENHANCE_YOUR_CALM, "too many streams reset by the client")

    # --- frames in -----------------------------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.continuation is not None and kind != f.CONTINUATION:
            raise ConnectionError_(f.PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == f.DATA:
            self._data(flags, sid, payload)
        elif kind == f.HEADERS:
            self._headers(flags, sid, payload)
        elif kind == f.CONTINUATION:
            self._continuation(flags, sid, payload)
        elif kind == f.SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == f.PING:
            if sid != 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if not flags & f.ACK:
                self.write(f.ping_ack(payload))
        elif kind == f.RST_STREAM:
            if sid == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
            stream = self.streams.pop(sid, None)
            if stream is not None:
                self._cancel(stream)
                self._count_reset()
                self._close_if_idle()
            elif sid > self.last_stream:
                raise ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        elif kind == f.GOAWAY:
            if sid != 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "GOAWAY on a stream")
            self.going_away = True
            self._close_if_idle()
        elif kind == f.PRIORITY:
            if sid == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "PRIORITY payload is not 5 bytes")
        elif kind == f.PUSH_PROMISE:
            raise ConnectionError_(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # unknown frame types are ignored (RFC 9113 4.1)

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & f.PADDED:
            if not payload:
                raise ConnectionError_(f.PROTOCOL_ERROR, "padded frame without pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise ConnectionError_(f.PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - pad]
        return payload

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionError_(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME_SIZE <= value <= 16_777_215:
                    raise ConnectionError_(f.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self.peer_frame_size = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise ConnectionError_(f.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
        self.write(f.SETTINGS_ACK)
        self._flush_blocked()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.peer_window += increment
            if self.peer_window > f.MAX_WINDOW:
                raise ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._flush_blocked()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream:
                raise ConnectionError_(f.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if increment == 0:
            self._reset(stream, f.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self._reset(stream, f.FLOW_CONTROL_ERROR)
            return
        if stream.pending or stream.trailers is not None:
            self._flush(stream)

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or sid % 2 == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        block = self._unpad(flags, payload)
        if flags & f.PRIORITY_FLAG:
            if len(block) < 5:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "HEADERS priority fields missing")
            block = block[5:]
        if not flags & f.END_HEADERS:
            self.continuation = (sid, flags, bytearray(block))
            return
        self._header_block(flags, sid, block)

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.continuation is None or self.continuation[0] != sid:
            raise ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        _, first_flags, fragment = self.continuation
        fragment += payload
        if len(fragment) > 2 * self.limits.max_header_list_size:
            raise ConnectionError_(f.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.END_HEADERS:
            self.continuation = None
            self._header_block(first_flags, sid, bytes(fragment))

    def _header_block(self, flags: int, sid: int, block: bytes) -> None:
        stream = self.streams.get(sid)
        if stream is not None or sid <= self.last_stream:  # trailers from the client (gRPC clients send none)
            try:
                self.headers.headers(block)
            except HeaderError as exc:
                raise ConnectionError_(f.COMPRESSION_ERROR, str(exc)) from exc
            if stream is None:  # a stream already answered or reset: ignored, like its DATA
                return
            if not flags & f.END_STREAM:
                raise ConnectionError_(f.PROTOCOL_ERROR, "trailers without END_STREAM")
            self._end_of_requests(stream)
            return
        self.last_stream = sid
        try:
            head = self.headers.head(block)
        except HeaderError as exc:
            if exc.compression:
                raise ConnectionError_(f.COMPRESSION_ERROR, str(exc)) from exc
            self._refuse(sid, flags, INTERNAL, str(exc))
            return
        if self.going_away:
            self.write(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:
            self.write(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        handler = self.lookup(head.path)
        if handler is None:
            self._refuse(sid, flags, UNIMPLEMENTED, f"Method not found: {head.path}")
            return
        if head.encoding is not None and head.encoding not in WBITS:
            self._refuse(
                sid, flags, UNIMPLEMENTED,
                f"grpc-encoding {head.encoding} is not supported (accepted: {ACCEPTED.decode()})",
            )  # fmt: skip
            return
        stream = Stream(sid, head, handler, self.peer_initial_window, self.limits.stream_window)
        self.streams[sid] = stream
        if handler.request_streaming:
            stream.queue = asyncio.Queue()
            self.start_call(self, stream)
        if flags & f.END_STREAM:
            self._end_of_requests(stream)

    def _refuse(self, sid: int, flags: int, code: int, message: str) -> None:
        """A trailers-only response to a stream not taken; the rest of its request is ignored."""
        block = f.RESPONSE_HEADERS + trailer_block(code, message, ())
        out = self._header_frames(sid, block, f.END_STREAM)
        if not flags & f.END_STREAM:
            out += f.rst_stream(sid, f.NO_ERROR)
        self.write(out)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise ConnectionError_(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_unacked += size
        if self.recv_unacked >= self.limits.connection_window >> 1:
            self.write(f.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream:
                raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream already answered or reset: its data is dropped
        if stream.remote_closed:
            self._reset(stream, f.STREAM_CLOSED)
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            self._reset(stream, f.FLOW_CONTROL_ERROR)
            return
        data = self._unpad(flags, payload)
        stream.unacked += size  # granted back as it arrives, while the handler keeps up with streamed requests
        body = stream.body
        if not body and len(data) >= 5:  # the common case: whole messages in one frame, no copy into body
            flag, length = _MESSAGE.unpack_from(data)
            if flag == 0 and length == len(data) - 5 and length <= self.limits.max_message_bytes:
                self._message(stream, data[5:])
                data = b""
        if data:
            body += data
            while len(body) >= 5:
                flag, length = _MESSAGE.unpack_from(body)
                if flag not in (0, 1):
                    self._abort(stream, INTERNAL, f"message flag {flag} is not 0 or 1")
                    return
                if flag and stream.head.encoding is None:
                    self._abort(stream, INTERNAL, "a compressed message on a call without grpc-encoding")
                    return
                if length > self.limits.max_message_bytes:
                    limit = self.limits.max_message_bytes
                    self._abort(stream, RESOURCE_EXHAUSTED, f"message of {length} bytes over the limit of {limit}")
                    return
                if len(body) < 5 + length:
                    break
                message = (Compressed if flag else bytes)(body[5 : 5 + length])
                del body[: 5 + length]
                self._message(stream, message)
                if stream.done:
                    return
        if flags & f.END_STREAM:
            self._end_of_requests(stream)
        elif stream.unacked >= self.limits.stream_window >> 1 and stream.queued < self.limits.stream_window:
            self._grant(stream)

    def _grant(self, stream: Stream) -> None:
        if stream.unacked and not stream.remote_closed and not stream.done:
            self.write(f.window_update(stream.id, stream.unacked))
            stream.recv_window += stream.unacked
            stream.unacked = 0

    def consumed(self, stream: Stream, size: int) -> None:
        """A streamed request taken by its handler: what was held back while requests queued up is granted."""
        stream.queued -= size
        if stream.unacked >= self.limits.stream_window >> 1 and stream.queued < self.limits.stream_window:
            self._grant(stream)

    def _message(self, stream: Stream, message: bytes) -> None:
        if stream.queue is not None:
            stream.queued += len(message) + 5
            stream.queue.put_nowait(message)
        elif stream.messages:
            self._abort(stream, UNIMPLEMENTED, "more than one request message for a unary method")
        else:
            stream.messages.append(message)

    def _end_of_requests(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.queue is not None:
            stream.queue.put_nowait(_EOF)
        elif not stream.done:
            if stream.body:
                self._abort(stream, INTERNAL, "request ends inside a message")
            elif not stream.messages:
                self._abort(stream, UNIMPLEMENTED, "no request message for a unary method")
            else:
                self.start_call(self, stream)

    # --- streams out ---------------------------------------------------------------------------------------------

    def _header_frames(self, sid: int, block: bytes, flags: int) -> bytes:
        size = self.peer_frame_size
        if len(block) <= size:
            return f.header(len(block), f.HEADERS, flags | f.END_HEADERS, sid) + block
        out = [f.header(size, f.HEADERS, flags, sid), block[:size]]
        for i in range(size, len(block), size):
            chunk = block[i : i + size]
            last = f.END_HEADERS if i + size >= len(block) else 0
            out += [f.header(len(chunk), f.CONTINUATION, last, sid), chunk]
        return b"".join(out)

    def respond(self, stream: Stream, message: bytes | None, code: int, details: str | None, metadata: Any) -> None:
        """A unary call's answer (or any call's end): headers when not sent yet, the message, trailers; in one
        write when the peer's windows take the message."""
        if stream.done or self.closed:
            return
        out = []
        if not stream.headers_sent:
            stream.headers_sent = True
            if message is None:  # trailers-only
                block = f.RESPONSE_HEADERS + trailer_block(code, details, metadata)
                self._finish(stream, self._header_frames(stream.id, block, f.END_STREAM))
                return
            out.append(f.header(len(f.RESPONSE_HEADERS), f.HEADERS, f.END_HEADERS, stream.id) + f.RESPONSE_HEADERS)
        trailers = self._header_frames(stream.id, trailer_block(code, details, metadata), f.END_STREAM)
        if message is not None:
            size = len(message) + 5
            fits = size <= self.peer_window and size <= stream.send_window and size <= self.peer_frame_size
            if fits and not stream.pending:
                self.peer_window -= size
                stream.send_window -= size
                out.append(f.header(size, f.DATA, 0, stream.id) + _MESSAGE.pack(0, len(message)))
                out.append(message)
                out.append(trailers)
                self.write(b"".join(out))
                self._finish(stream, b"")
                return
            stream.pending += _MESSAGE.pack(0, len(message))
            stream.pending += message
        if out:
            self.write(b"".join(out))
        stream.trailers = trailers
        self._flush(stream)

    def send_headers(self, stream: Stream, metadata: Any = ()) -> None:
        if not stream.headers_sent and not stream.done:
            stream.headers_sent = True
            block = f.RESPONSE_HEADERS + b"".join(metadata_block(metadata))
            self.write(self._header_frames(stream.id, block, 0))

    async def send_message(self, stream: Stream, message: bytes) -> None:
        """One message of a streamed answer; waits while the peer's windows (or the socket) hold it back."""
        if stream.done or self.closed:
            raise asyncio.CancelledError
        self.send_headers(stream)
        stream.pending += _MESSAGE.pack(0, len(message))
        stream.pending += message
        self._flush(stream)
        while (stream.pending or not self.writing) and not stream.done and not self.closed:
            stream.drained = asyncio.get_running_loop().create_future()
            await stream.drained

    def _flush(self, stream: Stream) -> None:
        pending = stream.pending
        out = []
        while pending:
            size = min(len(pending), self.peer_window, stream.send_window, self.peer_frame_size)
            if size <= 0:
                if stream not in self.blocked:
                    self.blocked.append(stream)
                break
            out.append(f.header(size, f.DATA, 0, stream.id) + bytes(pending[:size]))
            del pending[:size]
            self.peer_window -= size
            stream.send_window -= size
        if out:
            self.write(b"".join(out))
        if not pending:
            if stream.trailers is not None:
                trailers, stream.trailers = stream.trailers, None
                self._finish(stream, trailers)
            elif stream.drained is not None and not stream.drained.done() and self.writing:
                stream.drained.set_result(None)

    def _flush_blocked(self) -> None:
        for _ in range(len(self.blocked)):
            if self.peer_window <= 0:
                return
            stream = self.blocked.popleft()
            if not stream.done:
                self._flush(stream)

    def _finish(self, stream: Stream, trailers: bytes) -> None:
        """The stream's last frames written; it is closed (RST_STREAM NO_ERROR if the client still sends)."""
        if not stream.remote_closed:
            trailers += f.rst_stream(stream.id, f.NO_ERROR)
        if trailers:
            self.write(trailers)
        self._close(stream)

    def _close(self, stream: Stream) -> None:
        stream.done = True
        if stream.deadline_timer is not None:
            stream.deadline_timer.cancel()
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        self.streams.pop(stream.id, None)
        self._close_if_idle()

    def _abort(self, stream: Stream, code: int, message: str) -> None:
        """The call ends with ``code`` from the transport's side (bad request data, deadline): the handler's task,
        if any, is cancelled."""
        task = stream.task
        stream.pending.clear()
        stream.trailers = None
        self.respond(stream, None, code, message, ())
        if task is not None and not task.done():
            task.cancel()

    def expire(self, stream: Stream) -> None:
        stream.deadline_timer = None
        if not stream.done:
            self._abort(stream, DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _reset(self, stream: Stream, code: int) -> None:
        self.write(f.rst_stream(stream.id, code))
        self._cancel(stream)
        self.streams.pop(stream.id, None)
        self._close_if_idle()

    def _cancel(self, stream: Stream) -> None:
        stream.cancelled = True
        stream.done = True
        if stream.deadline_timer is not None:
            stream.deadline_timer.cancel()
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
