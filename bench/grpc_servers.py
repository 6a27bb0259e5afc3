"""What could carry tensorgate's gRPC: the same gateway (DataPlane, model, REST beside it) behind different gRPC
servers, the demo MLP's ModelInfer driven by h2load (a C client, gRPC framing) in alternating windows; prints
server CPU per call (utime+stime of the server process over the window / calls), req/s and p99.

    .venv/bin/python bench/grpc_servers.py --store demo_store --model mlp_onnx --rounds 3 --seconds 5

Servers (``--kinds``): ``aio`` this checkout's server with ``--grpc-server aio`` (grpc.aio);
``h2-serve`` this checkout's server as deployed, ``--grpc-server h2`` (every service, the same handlers, on
``gateway.grpc.h2``); ``aio-raw`` a minimal ModelInfer on raw bytes and nothing else (the floor of the raw design);
``h2`` the same minimal ModelInfer on the h2 server; ``sync-N`` grpcio's
synchronous server with a pool of N threads, ModelInfer on raw bytes, each call handed to the event loop with
``run_coroutine_threadsafe``; ``checkout:PATH`` another checkout's server as it is. Each server process is the real
``tensorgate serve``; only its gRPC server differs. Compare this checkout with another with ``bench/ab.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "peers"))

KINDS = ("aio", "h2-serve", "aio-raw", "h2")
_SERVICE = "inference.GRPCInferenceService"


# --- the prototypes (served in the child process) -----------------------------------------------------------------


def _options(settings: Any) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", settings.grpc_keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]


def _infer_parts(dp: Any) -> Any:
    """(decode raw bytes, the DataPlane call) shared by the raw prototypes."""
    from gateway.core.exchange import Origin, request_id
    from gateway.grpc.codec import decode_request, encode_response
    from gateway.grpc.protos import service_pb2

    parse = service_pb2.ModelInferRequest.FromString

    def origin_from(metadata: Any, peer: Any) -> Origin:
        origin = Origin(peer=peer)
        for key, value in metadata or ():
            if key == "x-request-id":
                origin.request_id = request_id(value if isinstance(value, str) else None)
        return origin

    async def infer(request: Any, origin: Origin, deadline: float | None, received: float) -> Any:
        async def decode(x: Any) -> Any:
            return decode_request(request, deadline)

        return await dp.infer(
            "grpc", decode, encode_response,
            name=request.model_name, version=request.model_version or None, received=received, origin=origin,
        )  # fmt: skip

    return parse, origin_from, infer


def _raw_handler(dp: Any) -> Any:
    """The minimal raw-bytes ModelInfer handler both ``aio-raw`` and ``h2`` serve."""
    import grpc

    from gateway.core.errors import GatewayError
    from gateway.grpc.status import abort

    parse, origin_from, infer = _infer_parts(dp)
    loop_time = time.monotonic

    async def model_infer(raw: bytes, context: Any) -> bytes:
        received = time.perf_counter()
        try:
            request = parse(raw)
        except Exception as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a ModelInferRequest: {exc}")
        origin = origin_from(context.invocation_metadata(), None)
        remaining = context.time_remaining()
        deadline = None if remaining is None else loop_time() + remaining
        try:
            message = await infer(request, origin, deadline, received)
        except GatewayError as exc:
            await abort(context, exc)
        if origin.request_id:
            context.set_trailing_metadata((("x-request-id", origin.request_id),))
        return message.SerializeToString()  # type: ignore[no-any-return]

    return grpc.unary_unary_rpc_method_handler(model_infer)


async def start_aio_raw(dp: Any, settings: Any, guard: Any = None, **_: Any) -> tuple[Any, int]:
    import grpc

    server = grpc.aio.server(options=_options(settings))
    server.add_registered_method_handlers(_SERVICE, {"ModelInfer": _raw_handler(dp)})
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    return server, port


async def start_h2(dp: Any, settings: Any, guard: Any = None, **_: Any) -> tuple[Any, int]:
    from gateway.grpc.h2.server import H2Server, Limits

    server = H2Server(Limits(max_message_bytes=settings.grpc_max_message_bytes))
    server.add_registered_method_handlers(_SERVICE, {"ModelInfer": _raw_handler(dp)})
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    return server, port


class _SyncServer:
    """A started grpc.server behind the grpc.aio server's ``stop`` coroutine."""

    def __init__(self, server: Any) -> None:
        self.server = server

    async def stop(self, grace: float | None) -> None:
        event = self.server.stop(grace)
        await asyncio.to_thread(event.wait)


async def start_sync(dp: Any, settings: Any, guard: Any = None, threads: int = 32, **_: Any) -> tuple[Any, int]:
    import grpc

    from gateway.core.errors import GatewayError
    from gateway.grpc.status import grpc_code

    parse, origin_from, infer = _infer_parts(dp)
    loop = asyncio.get_running_loop()

    def model_infer(raw: bytes, context: Any) -> bytes:
        received = time.perf_counter()
        try:
            request = parse(raw)
        except Exception as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a ModelInferRequest: {exc}")
        origin = origin_from(context.invocation_metadata(), None)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            message = asyncio.run_coroutine_threadsafe(infer(request, origin, deadline, received), loop).result()
        except GatewayError as exc:
            context.abort(grpc_code(exc), exc.message)
        if origin.request_id:
            context.set_trailing_metadata((("x-request-id", origin.request_id),))
        return message.SerializeToString()  # type: ignore[no-any-return]

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=_options(settings))
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_registered_method_handlers(_SERVICE, {"ModelInfer": handler})
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    server.start()
    return _SyncServer(server), port


def serve(kind: str, argv: list[str]) -> int:
    import gateway.grpc.server as grpc_server
    from gateway.cli.main import main

    starts = {"aio-raw": start_aio_raw, "h2": start_h2}
    if kind.startswith("sync-"):  # sync-N: a pool of N threads
        grpc_server.start_grpc = functools.partial(start_sync, threads=int(kind[5:]))  # type: ignore[assignment]
    elif kind in starts:
        grpc_server.start_grpc = starts[kind]  # type: ignore[assignment]
    return main(["serve", *argv])


# --- the driver ---------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tag_of(kind: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in kind)


def start(kind: str, store: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    import httpx

    tag = tag_of(kind)
    port_file = tmp / f"ports-{tag}.json"
    port_file.unlink(missing_ok=True)
    log = open(tmp / f"server-{tag}.log", "wb")  # noqa: SIM115 - lives as long as the server
    argv = ["--store", str(store.resolve()), "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
            "--poll-interval", "0", "--port-file", str(port_file)]  # fmt: skip
    if kind == "h2-serve":  # this checkout's server as deployed (the h2 gRPC server, the default)
        argv += ["--grpc-server", "h2"]
    elif kind == "aio":  # this checkout's server on grpc.aio
        argv += ["--grpc-server", "aio"]
    if kind.startswith("checkout:"):  # another checkout's own server, e.g. checkout:../main for before/after
        checkout = Path(kind.split(":", 1)[1]).resolve()
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        command = [sys.executable, "-m", "gateway", "serve", *argv]
        proc = subprocess.Popen(command, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT)
    else:
        command = [sys.executable, __file__, "--serve", kind, *argv]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} did not start: see {tmp / f'server-{kind}.log'}")
        time.sleep(0.1)
    ports: dict[str, int] = json.loads(port_file.read_text())
    while httpx.get(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind} not ready")
        time.sleep(0.2)
    return proc, ports


def check(port: int, request: Any, model: str, x: Any) -> int:
    """One call with a real gRPC client: the reply must match the in-process model; its framed size."""
    import grpc
    import numpy as np

    from gateway.grpc.protos import service_pb2

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            f"/{_SERVICE}/ModelInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        reply, status = call.with_call(request, timeout=30, metadata=(("x-request-id", "bench-check"),))
    trailing = dict(status.trailing_metadata() or ())
    if trailing.get("x-request-id") != "bench-check":
        raise RuntimeError(f"request ID not echoed in trailers: {trailing}")
    out = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(tuple(reply.outputs[0].shape))
    return 5 + reply.ByteSize() if out.size else 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3:])
    import loadgen
    import numpy as np

    from gateway.grpc.protos import service_pb2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("demo_store"))
    parser.add_argument("--model", default="mlp_onnx")
    parser.add_argument("--input", default="x")
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kinds = args.kinds.split(",")

    x = np.random.default_rng(0).standard_normal((1, args.features)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=args.model)
    tensor = request.inputs.add(name=args.input, datatype="FP32", shape=list(x.shape))
    del tensor
    request.raw_input_contents.append(x.tobytes())
    tmp = Path(tempfile.mkdtemp(prefix="grpc-servers-"))
    frame = tmp / "request.bin"
    frame.write_bytes(len(request.SerializeToString()).to_bytes(5, "big") + request.SerializeToString())

    servers: dict[str, tuple[subprocess.Popen[bytes], dict[str, int]]] = {}
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    try:
        for kind in kinds:
            print(f"starting {kind} ...", flush=True)
            servers[kind] = start(kind, args.store, tmp)
        expected = {k: check(servers[k][1]["grpc"], request, args.model, x) for k in kinds}
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                proc, ports = servers[kind]
                url = f"http://127.0.0.1:{ports['grpc']}/{_SERVICE}/ModelInfer"
                loadgen.h2load(url, frame, args.concurrency, 1, tmp, f"warm-{tag_of(kind)}", None)
                before = cpu_seconds(proc.pid)
                name = f"{tag_of(kind)}-{r}"
                window = loadgen.h2load(url, frame, args.concurrency, args.seconds, tmp, name, expected[kind])
                used = cpu_seconds(proc.pid) - before
                row = {"rps": window.rps, "p99_ms": window.p99_ms or 0.0, "cpu_us": used / max(1, window.ok) * 1e6,
                       "ok": window.ok, "errors": window.errors}  # fmt: skip
                rows[kind].append(row)
                note = f" ({'; '.join(window.notes)})" if window.notes else ""
                print(f"round {r + 1} {kind:16s} {row['rps']:8.0f} req/s  p99 {row['p99_ms']:6.2f} ms  "
                      f"CPU {row['cpu_us']:5.0f} us/call{note}", flush=True)  # fmt: skip
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    base = median([row["cpu_us"] for row in rows[kinds[0]]])
    print(f"\n| gRPC server | req/s | p99 ms | server CPU per call | vs {kinds[0]} |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        cpu = median([row["cpu_us"] for row in rows[kind]])
        print(f"| {kind} | {median([row['rps'] for row in rows[kind]]):,.0f} | "
              f"{median([row['p99_ms'] for row in rows[kind]]):.2f} | {cpu:.0f} µs | {cpu / base:.2f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
