"""AccessLog: one JSON or logfmt line per recorded request, written by its thread to the given descriptor; errors
and slow requests are always logged, fast successful ones sampled."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.telemetry.access import AccessLog

ARGS = dict(
    protocol="rest", model="m", variant="m", version="1", runtime="onnx", seconds=0.0123, queue_s=0.001,
    compute_s=0.01, request_bytes=100, response_bytes=50, request_id="abc", peer=("127.0.0.1", 5000),
)  # fmt: skip


def written(tmp_path: Path, log: AccessLog, fd: int) -> list[str]:
    log.close()
    os.close(fd)
    return (tmp_path / "access.log").read_text().splitlines()


def open_log(tmp_path: Path) -> int:
    return os.open(tmp_path / "access.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def test_json_line_has_every_field(tmp_path: Path) -> None:
    fd = open_log(tmp_path)
    log = AccessLog("json", fd=fd)
    log.record(code="OK", key_id="key-7", trace_id="t" * 32, **ARGS)  # type: ignore[arg-type]
    log.record(code="NOT_FOUND", error="no model 'x'", **ARGS)  # type: ignore[arg-type]
    ok, failed = (json.loads(line) for line in written(tmp_path, log, fd))
    assert ok["ts"].endswith("Z") and ok["logger"] == "tensorgate.access"
    assert (ok["latency_ms"], ok["queue_ms"], ok["compute_ms"]) == (12.3, 1.0, 10.0)
    assert (ok["peer"], ok["key_id"], ok["trace_id"], ok["request_id"]) == ("127.0.0.1:5000", "key-7", "t" * 32, "abc")
    assert "error" not in ok and "key_id" not in failed
    assert (failed["code"], failed["level"], failed["error"]) == ("NOT_FOUND", "warning", "no model 'x'")


def test_text_line_is_logfmt(tmp_path: Path) -> None:
    fd = open_log(tmp_path)
    log = AccessLog("text", fd=fd)
    log.record(code="INVALID_ARGUMENT", error='bad "x" input', **ARGS)  # type: ignore[arg-type]
    (line,) = written(tmp_path, log, fd)
    assert " WARNING tensorgate.access: request_id=abc protocol=rest model=m " in line
    assert "code=INVALID_ARGUMENT latency_ms=12.300 " in line and 'error="bad \\"x\\" input"' in line


def test_sampling_keeps_errors_and_slow_requests() -> None:
    log = AccessLog(sample=0.0, slow_ms=50, fd=2)
    try:
        assert not log.wanted("OK", 0.01)
        assert log.wanted("OK", 0.05)
        assert log.wanted("INTERNAL", 0.0001)
        everything = AccessLog(fd=2)
        assert all(everything.wanted("OK", 0.0) for _ in range(100))
        everything.close()
        half = AccessLog(sample=0.5, fd=2)
        kept = sum(half.wanted("OK", 0.0) for _ in range(4000))
        half.close()
        assert 1500 < kept < 2500
    finally:
        log.close()
