"""MetricsPort: the dedicated /metrics port (Triton's :8002 habit) served by its own thread, not the event loop,
with the health endpoints too, so that probes reach a plain-HTTP port when the main ports require TLS (or client
certificates). ``/metrics`` there asks for a key like on the main port when the ``metrics`` group is protected.

A scrape of a large store must never wait behind inference, nor inference behind a scrape: this port has no
share in the serving loop at all (a small threaded HTTP server; the exposition renders from copies).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from gateway.core.auth import Guard
from gateway.core.dataplane import DataPlane
from gateway.core.errors import GatewayError
from gateway.rest.auth import presented_key
from gateway.telemetry.exposition import content_type, encode_body, wants_openmetrics
from gateway.telemetry.metrics import Metrics

_JSON = "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics
    dataplane: DataPlane | None
    guard: Guard | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's naming
        path = self.path.split("?", 1)[0]
        dp = self.server.dataplane
        if dp is not None and path in ("/v2/health/live", "/v2/health/ready"):
            if path.endswith("live"):
                self._reply(200, orjson.dumps({"live": dp.live()}), _JSON)
                return
            try:
                ready = dp.ready()
            except RuntimeError:  # the host's tables changed while read from this thread: not ready this instant
                ready = False
            self._reply(200 if ready else 503, orjson.dumps({"ready": ready}), _JSON)
            return
        if path != "/metrics":
            self._reply(404, orjson.dumps({"error": f"no route GET {path}"}), _JSON)
            return
        guard = self.server.guard
        if guard is not None and guard.protects("metrics"):
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
            try:
                guard.authorize(presented_key(headers), "metrics")
            except GatewayError as exc:
                self._reply(exc.http_status, orjson.dumps({"error": exc.message}), _JSON)
                return
        openmetrics = wants_openmetrics(self.headers.get("accept"))
        gzip = "gzip" in self.headers.get("accept-encoding", "")
        body, encoding = encode_body(self.server.metrics, openmetrics, gzip)
        self._reply(200, body, content_type(openmetrics), encoding)

    def _reply(self, status: int, body: bytes, kind: str, encoding: str | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        if encoding:
            self.send_header("content-encoding", encoding)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not logged
        return


class MetricsPort:
    """``MetricsPort(metrics, host, port, dataplane, guard).start()`` -> the bound port; ``close()`` stops it."""

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        dataplane: DataPlane | None = None,
        guard: Guard | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """``sock``: a listening socket to serve (one shared by worker processes) instead of binding ``port``."""
        _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, port), _Handler, bind_and_activate=sock is None)
        if sock is not None:
            self._server.socket.close()
            self._server.socket = sock
            # another worker may accept the connection this one was woken for: a blocking accept would then wait
            # for the next scrape (and hold up shutdown); socketserver drops the BlockingIOError instead
            sock.setblocking(False)
            self._server.server_address = sock.getsockname()
        self._server.metrics = metrics
        self._server.dataplane = dataplane
        self._server.guard = guard
        self._thread = threading.Thread(target=self._server.serve_forever, name="tg-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> int:
        self._thread.start()
        return self.port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
