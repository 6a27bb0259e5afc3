"""AccessLog: one line per inference request — JSON (``--log-format json``) or logfmt text — written by a thread.

The event loop only decides whether to log (errors and slow requests always; fast successful ones with
probability ``sample``), formats the line (orjson, or one f-string) and puts it on a queue; a writer thread
drains the queue every 50 ms and writes the lines in one ``os.write``, so logging never blocks the loop on I/O
nor wakes a thread per request.
"""

from __future__ import annotations

import os
import queue
import random
import re
import sys
import threading
import time
from typing import Any

import orjson

FLUSH_S = 0.05  # lines reach the log within this long


def _peer(peer: Any) -> str | None:
    if callable(peer):  # asked for only when logged (gRPC passes the call's ``peer`` method)
        peer = peer()
    if peer is None or isinstance(peer, str):
        return peer
    if isinstance(peer, tuple | list) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class AccessLog:
    """``record(...)`` one request; ``close()`` flushes. ``fd`` defaults to stderr (where the other logs go)."""

    def __init__(self, fmt: str = "text", sample: float = 1.0, slow_ms: float = 0.0, fd: int | None = None) -> None:
        self.json = fmt == "json"
        self.sample = min(max(sample, 0.0), 1.0)
        self.slow = slow_ms / 1000.0 if slow_ms > 0 else float("inf")
        self.fd = sys.stderr.fileno() if fd is None else fd
        self._queue: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._second = -1
        self._prefix = b""
        self._thread = threading.Thread(target=self._write, name="tg-access-log", daemon=True)
        self._thread.start()

    def wanted(self, code: str, seconds: float) -> bool:
        """Errors and requests slower than ``slow_ms`` always; the rest sampled."""
        if code != "OK" or seconds >= self.slow:
            return True
        return self.sample >= 1.0 or random.random() < self.sample

    def _now(self) -> tuple[bytes, int]:
        """(``2025-01-02T03:04:05``, milliseconds): the second's text is made once per second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return self._prefix, int((now - second) * 1000)

    def record(
        self,
        protocol: str,
        model: str,
        variant: str | None,
        version: str | None,
        runtime: str | None,
        code: str,
        seconds: float,
        queue_s: float,
        compute_s: float,
        request_bytes: int,
        response_bytes: int | None,
        request_id: str | None,
        peer: Any,
        key_id: str | None = None,
        trace_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Format and enqueue one line (the caller checked ``wanted``). Formatted with %-formatting on bytes and
        orjson only for the strings that may need escaping: this runs on the event loop for every request."""
        ok = code == "OK"
        if self.json:
            extra = b""
            if key_id is not None:
                extra += b',"key_id":' + _js(key_id)
            if trace_id is not None:
                extra += b',"trace_id":"' + trace_id.encode() + b'"'
            if error is not None:
                extra += b',"error":' + _js(error)
            line = _JSON % (
                *self._now(), b"info" if ok else b"warning", _js(request_id), protocol.encode(), _js(model),
                _js(variant), _js(version), _js(runtime), code.encode(), seconds * 1000.0, queue_s * 1000.0,
                compute_s * 1000.0, request_bytes, b"null" if response_bytes is None else b"%d" % response_bytes,
                _js(_peer(peer)), extra,
            )  # fmt: skip
        else:
            extra = b""
            if key_id is not None:
                extra += b" key_id=" + _lf(key_id)
            if trace_id is not None:
                extra += b" trace_id=" + trace_id.encode()
            if error is not None:
                extra += b" error=" + _lf(error)
            line = _TEXT % (
                *self._now(), b"INFO   " if ok else b"WARNING", _lf(request_id), protocol.encode(), _lf(model),
                _lf(variant), _lf(version), _lf(runtime), code.encode(), seconds * 1000.0, queue_s * 1000.0,
                compute_s * 1000.0, request_bytes, b"-" if response_bytes is None else b"%d" % response_bytes,
                _lf(_peer(peer)), extra,
            )  # fmt: skip
        self._queue.put(line)

    def _write(self) -> None:
        """Every ``FLUSH_S``, write what is queued: waking per line would make the event loop hand over the GIL
        once per request."""
        get_nowait = self._queue.get_nowait
        while True:
            stopping = self._stop.wait(FLUSH_S)
            lines = []
            try:
                while True:
                    lines.append(get_nowait())
            except queue.Empty:
                pass
            data = b"".join(lines)
            try:
                while data:
                    written = os.write(self.fd, data)
                    data = data[written:]
            except OSError:
                pass  # the log's reader went away: requests must not fail for it
            if stopping:
                return

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)


_JSON = (
    b'{"ts":"%s.%03dZ","level":"%s","logger":"tensorgate.access","msg":"infer","request_id":%s,"protocol":"%s",'
    b'"model":%s,"variant":%s,"version":%s,"runtime":%s,"code":"%s","latency_ms":%.3f,"queue_ms":%.3f,'
    b'"compute_ms":%.3f,"request_bytes":%d,"response_bytes":%s,"peer":%s%s}\n'
)
_TEXT = (
    b"%s.%03dZ %s tensorgate.access: request_id=%s protocol=%s model=%s variant=%s version=%s runtime=%s code=%s "
    b"latency_ms=%.3f queue_ms=%.3f compute_ms=%.3f request_bytes=%d response_bytes=%s peer=%s%s\n"
)
_PLAIN = re.compile(r'[^\s"=\\]+').fullmatch


def _js(value: str | None) -> bytes:
    return b"null" if value is None else orjson.dumps(value)


def _lf(value: str | None) -> bytes:
    """A logfmt value: as is when it has no space, quote, equals sign or backslash, else quoted JSON-style."""
    if value is None:
        return b"-"
    if _PLAIN(value):
        return value.encode()
    return orjson.dumps(value)
