"""H2Server: the h2 gRPC server object, with the registration API of grpc.aio's server (registered method handlers,
generic handlers), listening sockets (optionally SO_REUSEPORT, shared with other workers; optionally TLS with ALPN
h2), start and a graceful stop (GOAWAY, calls in flight finish within the grace period, then connections close)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc

from gateway.grpc.h2 import call
from gateway.grpc.h2.connection import Connection


@dataclass(frozen=True)
class Limits:
    """What one connection may hold."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int = 1024
    max_header_list_size: int = 16 * 1024
    max_frame_size: int = 16_384
    stream_window: int = 1024 * 1024
    connection_window: int = 16 * 1024 * 1024
    write_buffer: int = 4 * 1024 * 1024  # unsent bytes before the connection stops reading the peer
    max_resets: int = 1000  # streams the client may reset per 10 s
    keepalive_time: float = 30.0  # seconds without a byte from the peer before a PING (0: never)
    keepalive_timeout: float = 10.0  # seconds for anything to come back before the connection is closed


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[Any, ...]


class H2Server:
    """A gRPC server on the h2 connection; registration as on grpc.aio's server."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.methods: dict[str, grpc.RpcMethodHandler] = {}
        self.generic: list[grpc.GenericRpcHandler] = []
        self.sockets: list[socket.socket] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[Connection] = set()
        self.contexts: dict[int, ssl.SSLContext] = {}  # TLS by socket index

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self.methods[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def lookup(self, path: str) -> grpc.RpcMethodHandler | None:
        handler = self.methods.get(path)
        if handler is not None:
            return handler
        for generic in self.generic:
            found = generic.service(_CallDetails(path, ()))
            if found is not None:
                if len(self.methods) < 4096:
                    self.methods[path] = found
                return found  # type: ignore[no-any-return]
        return None

    def add_secure_port(self, address: str, context: ssl.SSLContext, *, reuse_port: bool = False) -> int:
        """As ``add_insecure_port``, with TLS from ``context`` (which must offer ALPN "h2")."""
        port = self.add_insecure_port(address, reuse_port=reuse_port)
        self.contexts[len(self.sockets) - 1] = context
        return port

    def add_insecure_port(self, address: str, *, reuse_port: bool = False) -> int:
        """Binds ``host:port`` (``[v6]:port``) now, as grpc.aio does; the port bound."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(2048)
        sock.setblocking(False)
        self.sockets.append(sock)
        return int(sock.getsockname()[1])

    def _protocol(self) -> Connection:
        return Connection(self.limits, self.lookup, call.start, self.connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i, sock in enumerate(self.sockets):
            self.servers.append(await loop.create_server(self._protocol, sock=sock, ssl=self.contexts.get(i)))

    async def stop(self, grace: float | None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            connection.goaway()
        tasks = [s.task for c in self.connections for s in c.streams.values() if s.task is not None]
        if grace and tasks:
            await asyncio.wait(tasks, timeout=grace)
        for connection in list(self.connections):
            for stream in list(connection.streams.values()):
                connection._cancel(stream)
            if connection.transport is not None:
                connection.transport.close()

    async def wait_for_termination(self) -> bool:
        await asyncio.gather(*(s.wait_closed() for s in self.servers))
        return True
