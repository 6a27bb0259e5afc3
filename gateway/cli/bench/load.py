"""Load generation for ``tensorgate bench``: pre-encoded V2 requests (REST binary, gRPC raw), the closed loop
(N workers, each sending when its previous reply arrived) and the open loop (requests sent at a rate, whether or
not earlier ones have been answered, each timed from when it was meant to be sent), and windows.

The client shares the machine with the server, so everything per request is kept to one awaited call and one
``perf_counter_ns`` pair: bodies and protobuf messages are encoded once, connections are reused.
"""

from __future__ import annotations

import asyncio
import importlib.util
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from gateway.core.types import DATATYPES
from gateway.grpc.client import BACKOFF_S, Sender  # a Sender returns None, or an error key ("HTTP 503", ...)


@dataclass(frozen=True)
class InputTensor:
    """One encoded input: V2 name, datatype, concrete shape and the raw bytes (binary extension layout)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


def concrete_shape(shape: Sequence[int], batch: int) -> tuple[int, ...]:
    """Free dims become ``batch`` (the first) or 1 (any other)."""
    return tuple((batch if i == 0 else 1) if d < 0 else int(d) for i, d in enumerate(shape))


def random_input(name: str, datatype: str, shape: Sequence[int], rng: np.random.Generator) -> InputTensor:
    """A random tensor of ``datatype`` and ``shape``, encoded as the V2 binary extension lays it out."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if datatype == "BYTES":
        items = [b"tg-%d" % int(v) for v in rng.integers(0, 1_000_000, size=count)]
        data = b"".join(struct.pack("<I", len(item)) + item for item in items)
        return InputTensor(name, datatype, tuple(shape), data)
    dtype = DATATYPES[datatype].numpy
    if datatype == "BOOL":
        array = rng.integers(0, 2, size=count).astype(np.bool_)
    elif np.issubdtype(dtype, np.integer):
        array = rng.integers(0, 100, size=count).astype(dtype)
    else:  # FP16, FP32, FP64, BF16
        array = rng.standard_normal(count).astype(np.float32).astype(dtype)
    return InputTensor(name, datatype, tuple(shape), array.tobytes())


def random_inputs(specs: Sequence[dict[str, Any]], batch: int, seed: int = 0) -> list[InputTensor]:
    """Inputs for V2 metadata ``inputs`` entries ({name, datatype, shape})."""
    rng = np.random.default_rng(seed)
    return [random_input(s["name"], s["datatype"], concrete_shape(s["shape"], batch), rng) for s in specs]


def rest_payload(inputs: Sequence[InputTensor]) -> tuple[bytes, dict[str, str]]:
    """Body (JSON header + raw tensor bytes) and headers for a binary-extension infer request."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.shape),
                    "parameters": {"binary_data_size": len(t.data)},
                }
                for t in inputs
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    body = header + b"".join(t.data for t in inputs)
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
        "Accept-Encoding": "identity",  # httpx asks for gzip by default; tensor replies are not worth it
    }
    return body, headers


class RestLoad:
    """V2 REST over plain HTTP/1.1 keep-alive connections, one per worker, each request written as one buffer.

    A minimal client on asyncio streams: the whole request (request line, headers, binary body) is encoded
    once, and a reply costs one header split plus a sized read. It spends ~50 us of CPU per request where
    httpx spends ~700 us, which matters when client and gateway share two cores.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        url = httpx.URL(base_url)
        self.base_url = base_url
        self.host = url.host or "127.0.0.1"
        self.port = url.port or 80
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    def request_bytes(self, model: str, inputs: Sequence[InputTensor]) -> bytes:
        body, headers = rest_payload(inputs)
        lines = [
            f"POST /v2/models/{model}/infer HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def sender(self, model: str, inputs: Sequence[InputTensor]) -> Sender:
        request = self.request_bytes(model, inputs)
        idle = self._idle
        timeout = self.timeout

        async def send() -> str | None:
            conn = idle.pop() if idle else await self._connect()
            if conn is None:
                await asyncio.sleep(BACKOFF_S)
                return "ConnectError"
            try:
                async with asyncio.timeout(timeout):
                    status, keep = await conn.exchange(request)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
                self._drop(conn)
                return type(exc).__name__
            if keep:
                idle.append(conn)
            else:
                self._drop(conn)
            return None if status == 200 else f"HTTP {status}"

        return send

    async def _connect(self) -> _Connection | None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return None
        conn = _Connection(reader, writer)
        self._all.add(conn)
        return conn

    def _drop(self, conn: _Connection) -> None:
        self._all.discard(conn)
        conn.writer.close()

    async def check(self, model: str, inputs: Sequence[InputTensor]) -> list[str]:
        """Send one request and return the output names of the reply; raises with the server's message."""
        return await rest_check(self.base_url, model, inputs)

    async def close(self) -> None:
        for conn in list(self._all):
            self._drop(conn)
        self._idle.clear()


class _Connection:
    """One HTTP/1.1 connection: write a request, read the status and the whole body (sized or chunked)."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """(status, keep-alive) for one request; the body is read and dropped."""
        self.writer.write(request)
        reader = self.reader
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            end = head.index(b"\r\n", at + 2)
            await reader.readexactly(int(head[at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in head:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:  # neither: the body runs to the end of the connection
            await reader.read()
            return status, False
        return status, b"\r\nconnection: close" not in head


class HttpxLoad:
    """V2 REST through one httpx.AsyncClient (keep-alive pool): the reference client, heavier per request."""

    def __init__(self, base_url: str, connections: int, timeout: float = 30.0) -> None:
        _skip_missing_sniffio()
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.base_url = base_url
        self.client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)

    def sender(self, model: str, inputs: Sequence[InputTensor]) -> Sender:
        body, headers = rest_payload(inputs)
        request = self.client.build_request("POST", f"/v2/models/{model}/infer", content=body, headers=headers)
        send_request = self.client.send

        async def send() -> str | None:
            try:
                response = await send_request(request)
            except httpx.HTTPError as exc:
                await asyncio.sleep(BACKOFF_S)
                return type(exc).__name__
            return None if response.status_code == 200 else f"HTTP {response.status_code}"

        return send

    async def check(self, model: str, inputs: Sequence[InputTensor]) -> list[str]:
        return await rest_check(self.base_url, model, inputs)

    async def close(self) -> None:
        await self.client.aclose()


def _skip_missing_sniffio() -> None:
    """httpcore tries ``import sniffio`` several times per request; when it is not installed each failed
    import scans sys.path (~0.5 ms per request). A None entry makes the failure immediate."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


async def rest_check(base_url: str, model: str, inputs: Sequence[InputTensor]) -> list[str]:
    """One binary-extension request through httpx; the reply's output names, or an error with its message."""
    body, headers = rest_payload(inputs)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    length = response.headers.get("inference-header-content-length")
    head = response.content[: int(length)] if length is not None else response.content
    if response.status_code != 200:
        raise RuntimeError(f"REST infer on {model!r} answered {response.status_code}: {head[:500]!r}")
    return [o["name"] for o in orjson.loads(head).get("outputs", [])]


@dataclass
class LoadWindow:
    """What the client saw in one window: per-request latencies of successes, errors by key, timing."""

    concurrency: int
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    rate: float | None = None  # open loop: the offered rate (requests/s); None for the closed loop
    arrivals: str | None = None  # open loop: "poisson" or "constant"
    max_inflight: int = 0  # open loop: the most requests in flight at once
    lags_ns: list[int] = field(default_factory=list)  # open loop: how late each request was actually sent

    @property
    def requests(self) -> int:
        return len(self.latencies_ns) + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return len(self.latencies_ns) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentiles_ms(self, qs: Sequence[float] = (50, 90, 95, 99)) -> dict[str, float]:
        if not self.latencies_ns:
            return {f"p{q:g}": float("nan") for q in qs} | {"mean": float("nan"), "max": float("nan")}
        arr = np.asarray(self.latencies_ns, dtype=np.float64) / 1e6
        values = np.percentile(arr, list(qs))
        out = {f"p{q:g}": float(v) for q, v in zip(qs, values, strict=True)}
        out["mean"] = float(arr.mean())
        out["max"] = float(arr.max())
        return out


async def closed_loop(
    send: Sender,
    concurrency: int,
    duration_s: float,
    on_tick: Callable[[LoadWindow, float], None] | None = None,
) -> LoadWindow:
    """``concurrency`` workers each send, await the reply, and send again until ``duration_s`` has passed.

    Requests started before the deadline run to completion, so when this returns nothing is in flight and the
    server's counters can be read without requests straddling the edge of the window.
    """
    window = LoadWindow(concurrency)
    lat = window.latencies_ns
    errors = window.errors
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(duration_s * 1e9)
    cpu0 = time.process_time()

    async def worker() -> None:
        while True:
            t0 = clock()
            if t0 >= deadline:
                return
            err = await send()
            if err is None:
                lat.append(clock() - t0)
            else:
                errors[err] += 1

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.25)
            assert on_tick is not None
            on_tick(window, (clock() - start) / 1e9)

    tick = asyncio.create_task(ticker()) if on_tick is not None else None
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if tick is not None:
            tick.cancel()
    window.elapsed_s = (clock() - start) / 1e9
    window.cpu_s = time.process_time() - cpu0
    return window


def round_robin(senders: Sequence[Sender]) -> Sender:
    """One sender that takes the next of ``senders`` on each call (several input samples, in turn)."""
    if len(senders) == 1:
        return senders[0]
    turn = 0

    async def send() -> str | None:
        nonlocal turn
        chosen = senders[turn]
        turn = (turn + 1) % len(senders)
        return await chosen()

    return send


def arrival_offsets(rate: float, duration_s: float, arrivals: str, seed: int = 0) -> np.ndarray:
    """Intended send times (seconds from the start) of an open loop: every 1/rate, or a Poisson process."""
    if rate <= 0:
        raise ValueError(f"the rate must be > 0, got {rate}")
    count = int(rate * duration_s)
    if arrivals == "constant":
        return np.arange(count, dtype=np.float64) / rate
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be poisson or constant, got {arrivals!r}")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=count + int(6 * np.sqrt(count + 1)) + 16)
    times = np.cumsum(gaps) - gaps[0]
    return times[times < duration_s]


async def open_loop(
    send: Sender,
    rate: float,
    duration_s: float,
    arrivals: str = "poisson",
    seed: int = 0,
    max_inflight: int = 1024,
    on_tick: Callable[[LoadWindow, float], None] | None = None,
) -> LoadWindow:
    """Send at ``rate`` requests/s for ``duration_s`` whatever the replies do, and time each request from its
    intended send time — so a server that falls behind shows its backlog in the latencies (no coordinated
    omission). At most ``max_inflight`` requests are outstanding; a request waiting for a slot is already late,
    and its wait counts. Returns once every request sent has been answered."""
    window = LoadWindow(0, rate=rate, arrivals=arrivals)
    lat = window.latencies_ns
    lags = window.lags_ns
    errors = window.errors
    clock = time.perf_counter_ns
    offsets = (arrival_offsets(rate, duration_s, arrivals, seed) * 1e9).astype(np.int64)
    slots = asyncio.Semaphore(max_inflight)
    pending: set[asyncio.Task[None]] = set()
    inflight = 0
    start = clock()
    cpu0 = time.process_time()

    async def one(intended: int) -> None:
        nonlocal inflight
        async with slots:
            inflight += 1
            window.max_inflight = max(window.max_inflight, inflight)
            lags.append(clock() - intended)
            err = await send()
            inflight -= 1
        if err is None:
            lat.append(clock() - intended)
        else:
            errors[err] += 1

    next_tick = start + 250_000_000
    i, n = 0, len(offsets)
    while i < n:
        now = clock()
        while i < n and start + offsets[i] <= now:  # everything due by now, in one go
            task = asyncio.create_task(one(start + int(offsets[i])))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        if on_tick is not None and now >= next_tick:
            on_tick(window, (now - start) / 1e9)
            next_tick = now + 250_000_000
        if i < n:
            await asyncio.sleep(max(0.0, (start + int(offsets[i]) - clock()) / 1e9))
    if pending:
        await asyncio.gather(*pending)
    window.elapsed_s = (clock() - start) / 1e9
    window.cpu_s = time.process_time() - cpu0
    return window
