"""Load generators: ``wrk`` (REST, Lua body) and ``h2load`` (raw gRPC frames), plus an asyncio gRPC client for
the overload run, each returning one window's counts and latency percentiles."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ToolMissing(SystemExit):
    """A load generator is not installed: the message says how to get it."""


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        package = {"wrk": "wrk", "h2load": "nghttp2-client"}[tool]
        raise ToolMissing(f"{tool} is not installed: run bench/peers/setup.sh (apt-get install {package})")
    return path


@dataclass
class Window:
    """What one load generator saw in one measurement window."""

    tool: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    errors: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    codes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


# --- wrk ---------------------------------------------------------------------------------------------------

_WRK_COMMON = """
wrk.method = "POST"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
{headers}
"""

_WRK_SUMMARY = (
    _WRK_COMMON
    + """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""
)

# One connection per wrk thread, so each thread's request() and response() pair up: the latency of every
# accepted (200) request is timed in Lua and its status counted, which wrk's own summary cannot split.
_WRK_BY_STATUS = (
    _WRK_COMMON
    + """
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {{}}; ok_us = {{}}; started = 0 end
function request() started = now_us(); return wrk.format() end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  if status == 200 then ok_us[#ok_us + 1] = now_us() - started end
end
function done(summary, latency, requests)
  local out = assert(io.open("{latencies}", "w"))
  local agg = {{}}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do agg[k] = (agg[k] or 0) + v end
    for _, v in ipairs(t:get("ok_us")) do out:write(string.format("%.1f\\n", v)) end
  end
  out:close()
  local parts = {{}}
  for k, v in pairs(agg) do parts[#parts + 1] = string.format('"%d": %d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"codes": {{%s}}}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
"""
)


def _lua_headers(headers: dict[str, str]) -> str:
    return "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())


def _run_wrk(script: str, url: str, threads: int, concurrency: int, duration_s: float) -> tuple[dict[str, Any], str]:
    cmd = [
        require("wrk"),
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        "30s",
        "-s",
        script,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    match = re.search(r"^WRKJSON (.*)$", proc.stdout, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return json.loads(match.group(1)), proc.stdout


def wrk(
    url: str,
    body_path: Path,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    workdir: Path,
    name: str,
    threads: int = 1,
) -> Window:
    """Closed-loop REST load: ``concurrency`` keep-alive connections posting the same body.

    ``name`` labels the files this run writes under ``workdir``."""
    script = workdir / f"{name}.lua"
    script.write_text(_WRK_SUMMARY.format(body=body_path, headers=_lua_headers(headers)))
    data, _ = _run_wrk(str(script), url, threads, concurrency, duration_s)
    seconds = data["duration_us"] / 1e6
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    errors = data["status"] + socket_errors
    window = Window(
        tool="wrk",
        concurrency=concurrency,
        duration_s=seconds,
        requests=data["requests"],
        ok=data["requests"] - data["status"],
        errors=errors,
        rps=(data["requests"] - data["status"]) / seconds,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        mean_ms=data["mean_us"] / 1e3,
        extra={"bytes_per_request": data["bytes"] / max(1, data["requests"])},
    )
    if data["status"]:
        window.notes.append(f"{data['status']} non-2xx responses")
    if socket_errors:
        window.notes.append(
            f"socket errors: connect {data['connect']}, read {data['read']}, write {data['write']}, "
            f"timeout {data['timeout']}"
        )
    return window


def wrk_by_status(
    url: str, body_path: Path, headers: dict[str, str], concurrency: int, duration_s: float, workdir: Path, name: str
) -> Window:
    """Like :func:`wrk` with one connection per thread, counting statuses and timing only accepted requests."""
    script = workdir / f"{name}.lua"
    latencies = workdir / f"{name}.ok_us.txt"
    latencies.unlink(missing_ok=True)
    script.write_text(_WRK_BY_STATUS.format(body=body_path, headers=_lua_headers(headers), latencies=latencies))
    data, _ = _run_wrk(str(script), url, concurrency, concurrency, duration_s)
    seconds = data["duration_us"] / 1e6
    codes = {str(k): int(v) for k, v in data["codes"].items()}
    ok_us = np.loadtxt(latencies, ndmin=1) if latencies.stat().st_size else np.zeros(0)
    ok = codes.get("200", 0)
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    window = Window(
        tool="wrk (one connection per thread, Lua-timed)",
        concurrency=concurrency,
        duration_s=seconds,
        requests=data["requests"],
        ok=ok,
        errors=data["requests"] - ok + socket_errors,
        rps=ok / seconds,
        p50_ms=_ms(_pct(ok_us, 50)),
        p90_ms=_ms(_pct(ok_us, 90)),
        p99_ms=_ms(_pct(ok_us, 99)),
        mean_ms=_ms(float(ok_us.mean()) if ok_us.size else None),
        codes=codes,
    )
    if socket_errors:
        window.notes.append(
            f"socket errors: connect {data['connect']}, read {data['read']}, write {data['write']}, "
            f"timeout {data['timeout']}"
        )
    return window


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1e3


# --- h2load -------------------------------------------------------------------------------------------------

_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s),")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load(
    url: str,
    frame_path: Path,
    concurrency: int,
    duration_s: float,
    workdir: Path,
    name: str,
    expected_data_bytes: int | None,
    connections: int = 1,
) -> Window:
    """Raw gRPC load: ``connections`` HTTP/2 connections sharing ``concurrency`` streams, each posting a framed
    ModelInferRequest. Servers with several processes on one port (SO_REUSEPORT) spread connections, not calls:
    one connection reaches one process.

    h2load never reads the grpc-status trailer, so ``expected_data_bytes`` (the DATA bytes of one good
    response, measured separately) is compared with the DATA bytes it received per request."""
    log = workdir / f"{name}.h2load.log"
    log.unlink(missing_ok=True)
    cmd = [
        require("h2load"),
        "-c",
        str(connections),
        "-m",
        str(max(1, concurrency // connections)),
        "-D",
        str(max(1, round(duration_s))),
        "-d",
        str(frame_path),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--log-file",
        str(log),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    out = proc.stdout
    req, status, traffic = _REQUESTS.search(out), _STATUS.search(out), _TRAFFIC.search(out)
    finished = _FINISHED.search(out)
    if proc.returncode != 0 or req is None or status is None or traffic is None or finished is None:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {out[-2000:]} {proc.stderr[-2000:]}")
    succeeded = int(req.group(4))
    failed, errored = int(req.group(5)), int(req.group(6))
    text = log.read_text() if log.exists() else ""
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    ok_us = np.array([float(r[2]) for r in rows if r[1].startswith("2")]) if rows else np.zeros(0)
    span = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    data_bytes = int(traffic.group(3))
    per_request = data_bytes / max(1, succeeded)
    window = Window(
        tool="h2load",
        concurrency=concurrency,
        duration_s=span,
        requests=succeeded + failed + errored,
        ok=succeeded,
        errors=failed + errored,
        rps=succeeded / span if span > 0 else 0.0,
        p50_ms=_ms(_pct(ok_us, 50)),
        p90_ms=_ms(_pct(ok_us, 90)),
        p99_ms=_ms(_pct(ok_us, 99)),
        mean_ms=_ms(float(ok_us.mean()) if ok_us.size else None),
        codes={"2xx": int(status.group(1)), "4xx": int(status.group(3)), "5xx": int(status.group(4))},
        extra={"data_bytes_per_request": per_request, "expected_data_bytes": expected_data_bytes},
    )
    if expected_data_bytes and abs(per_request - expected_data_bytes) > 0.05 * expected_data_bytes:
        window.notes.append(
            f"DATA bytes per request {per_request:.0f} != {expected_data_bytes} of a good reply: "
            "some replies carried a gRPC error"
        )
    if failed or errored:
        window.notes.append(f"h2load: {failed} failed, {errored} errored")
    return window


# --- asyncio gRPC client (overload) ---------------------------------------------------------------------------


def grpc_by_status(port: int, request: Any, concurrency: int, duration_s: float) -> tuple[Window, float]:
    """Closed-loop gRPC load from this process with grpc.aio, counting status codes and timing accepted calls.

    Returns the window and the CPU seconds this process spent (the client's CPU)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    async def drive() -> tuple[Counter[str], list[float], float]:
        codes: Counter[str] = Counter()
        ok_s: list[float] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            start = time.perf_counter()
            deadline = start + duration_s

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    try:
                        await stub.ModelInfer(request, timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        codes[exc.code().name] += 1
                    else:
                        codes["OK"] += 1
                        ok_s.append(time.perf_counter() - t0)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return codes, ok_s, time.perf_counter() - start

    cpu0 = time.process_time()
    codes, ok_s, seconds = asyncio.run(drive())
    cpu = time.process_time() - cpu0
    ok_ms = np.array(ok_s) * 1e3
    total = sum(codes.values())
    window = Window(
        tool="grpc.aio (in-process)",
        concurrency=concurrency,
        duration_s=seconds,
        requests=total,
        ok=codes.get("OK", 0),
        errors=total - codes.get("OK", 0),
        rps=codes.get("OK", 0) / seconds,
        p50_ms=_pct(ok_ms, 50),
        p90_ms=_pct(ok_ms, 90),
        p99_ms=_pct(ok_ms, 99),
        mean_ms=float(ok_ms.mean()) if ok_ms.size else None,
        codes=dict(codes),
    )
    return window, cpu
