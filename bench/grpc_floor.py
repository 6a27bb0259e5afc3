"""The floor of a Python gRPC server: server CPU per call for an *empty* unary handler (ServerLive), grpc.aio and
the sync server, driven by the same grpc.aio client at concurrency 16. tensorgate's gRPC path cannot cost less.

    .venv/bin/python bench/grpc_floor.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

from gateway.grpc.protos import service_pb2, service_pb2_grpc


class Live(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def ServerLive(self, request: object, context: object) -> object:
        return service_pb2.ServerLiveResponse(live=True)


class AioLive(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    async def ServerLive(self, request: object, context: object) -> object:
        return service_pb2.ServerLiveResponse(live=True)


def serve(kind: str, port_file: str) -> None:
    if kind == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Live(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        Path(port_file).write_text(str(port))
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(AioLive(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 - once, before serving
        await server.wait_for_termination()

    if kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def drive(port: str, seconds: float, concurrency: int = 16) -> int:
    calls = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal calls
            while time.perf_counter() < stop:
                await stub.ServerLive(service_pb2.ServerLiveRequest())
                calls += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print("| server | calls/s | server CPU per call |")
    print("|---|---|---|")
    for kind in ("aio", "uvloop", "sync"):
        port_file = Path(tempfile.mkdtemp()) / "port"
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port_file)])
        try:
            while not port_file.exists():
                time.sleep(0.05)
            port = port_file.read_text()
            asyncio.run(drive(port, 1.0))  # warm up
            before = cpu_seconds(proc.pid)
            calls = asyncio.run(drive(port, args.seconds))
            used = cpu_seconds(proc.pid) - before
            print(f"| grpc {kind} | {calls / args.seconds:,.0f} | {used / calls * 1e6:.0f} µs |", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
