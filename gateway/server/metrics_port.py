"""MetricsPort: the dedicated /metrics port (Triton's :8002 habit) served by its own thread, not the event loop.

A scrape of a large store must never wait behind inference, nor inference behind a scrape: this port has no
share in the serving loop at all (a small threaded HTTP server; the exposition renders from copies).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.telemetry.exposition import content_type, encode_body, wants_openmetrics
from gateway.telemetry.metrics import Metrics


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's naming
        if self.path.split("?", 1)[0] != "/metrics":
            self._reply(404, b'{"error":"no route GET ' + self.path.encode("latin-1", "replace") + b'"}',
                        "application/json")  # fmt: skip
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
    """``MetricsPort(metrics, host, port).start()`` -> the bound port; ``close()`` stops it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, port), _Handler)
        self._server.metrics = metrics
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
