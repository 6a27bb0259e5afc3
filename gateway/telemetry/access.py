"""AccessLog: one line per inference request — JSON (``--log-format json``) or logfmt text — written by a thread.

The event loop only decides whether to log (errors and slow requests always; fast successful ones with
probability ``sample``), formats the line (orjson, or one f-string) and puts it on a queue; a writer thread
drains the queue and writes the lines in one ``os.write`` per batch, so logging never blocks the loop on I/O.
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
from typing import Any

import orjson

_STOP = b""


def _peer(peer: Any) -> str | None:
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
        self._second = -1
        self._prefix = ""
        self._thread = threading.Thread(target=self._write, name="tg-access-log", daemon=True)
        self._thread.start()

    def wanted(self, code: str, seconds: float) -> bool:
        """Errors and requests slower than ``slow_ms`` always; the rest sampled."""
        if code != "OK" or seconds >= self.slow:
            return True
        return self.sample >= 1.0 or random.random() < self.sample

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"

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
        """Format and enqueue one line (the caller checked ``wanted``)."""
        doc: dict[str, Any] = {
            "ts": self._now(),
            "level": "info" if code == "OK" else "warning",
            "logger": "tensorgate.access",
            "msg": "infer",
            "request_id": request_id,
            "protocol": protocol,
            "model": model,
            "variant": variant,
            "version": version,
            "runtime": runtime,
            "code": code,
            "latency_ms": round(seconds * 1000.0, 3),
            "queue_ms": round(queue_s * 1000.0, 3),
            "compute_ms": round(compute_s * 1000.0, 3),
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
            "peer": _peer(peer),
        }
        if key_id is not None:
            doc["key_id"] = key_id
        if trace_id is not None:
            doc["trace_id"] = trace_id
        if error is not None:
            doc["error"] = error
        if self.json:
            line = orjson.dumps(doc) + b"\n"
        else:
            ts = doc.pop("ts")
            level = doc.pop("level").upper()
            doc.pop("logger"), doc.pop("msg")
            fields = " ".join(f"{k}={_logfmt(v)}" for k, v in doc.items())
            line = f"{ts} {level:<7} tensorgate.access: {fields}\n".encode()
        self._queue.put(line)

    def _write(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            lines = [get()]
            try:
                while len(lines) < 4096:
                    lines.append(get_nowait())
            except queue.Empty:
                pass
            stop = _STOP in lines
            data = b"".join(lines)
            try:
                while data:
                    written = os.write(self.fd, data)
                    data = data[written:]
            except OSError:
                pass  # the log's reader went away: requests must not fail for it
            if stop:
                return

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=5)


def _logfmt(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or any(c in text for c in ' "=\\\n'):
        return orjson.dumps(text).decode()
    return text
