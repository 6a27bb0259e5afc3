"""p99 latency during a hot version swap vs steady state (target: within 1.5x).

Starts ``tensorgate serve`` on a local store holding an MLP, drives it with a closed-loop gRPC client, measures
p99 in steady-state windows and in windows that each contain a swap (a new version folder appears, is loaded and
warmed up beside the old one, traffic moves, the old one drains and unloads), alternating, and prints medians and
the ratio.

    .venv/bin/python bench/hot_swap.py [--rounds 4] [--window 4] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2, service_pb2_grpc


def build_mlp(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((784, 512)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((512, 10)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))


async def drive(address: str, concurrency: int, seconds: float, model: str = "mlp") -> tuple[list[float], int]:
    """Closed-loop gRPC load on ``model`` (input [1, 784] FP32): latencies of the answered calls, failed calls."""
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32).tobytes())
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def p99(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 99)) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=4.0, help="seconds per measurement window")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tg-hotswap-"))
    store = tmp / "store"
    build_mlp(store / "mlp" / "1", seed=1)
    (store / "mlp" / "config.yaml").write_text("warmup: {requests: 5}\n")
    staging = tmp / "staging"
    port_file = tmp / "ports.json"
    cmd = [sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1",
           "--http-port", "0", "--grpc-port", "0", "--poll-interval", "0.5", "--port-file", str(port_file),
           "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        while not port_file.exists():
            time.sleep(0.1)
        address = f"127.0.0.1:{json.loads(port_file.read_text())['grpc']}"
        time.sleep(2.0)
        asyncio.run(drive(address, args.concurrency, 1.0))  # warm the client and server
        steady, swap, errors = [], [], 0
        version = 1
        for round_ in range(args.rounds):
            lat, err = asyncio.run(drive(address, args.concurrency, args.window))
            steady.append(p99(lat))
            errors += err
            version += 1
            build_mlp(staging / str(version), seed=version)

            async def swap_window(v: int = version) -> tuple[list[float], int]:
                task = asyncio.create_task(drive(address, args.concurrency, args.window))
                await asyncio.sleep(0.3)
                shutil.move(str(staging / str(v)), str(store / "mlp" / str(v)))  # appears atomically
                return await task

            lat, err = asyncio.run(swap_window())
            swap.append(p99(lat))
            errors += err
            print(
                f"round {round_ + 1}: steady p99 {steady[-1]:.2f} ms, during swap to v{version} p99 {swap[-1]:.2f} ms",
                flush=True,
            )
        ratio = statistics.median(swap) / statistics.median(steady)
        print()
        print("| windows | steady p99 (median) | swap p99 (median) | ratio | failed requests |")
        print("|---|---|---|---|---|")
        print(f"| {args.rounds} x {args.window:.0f} s, c{args.concurrency} | {statistics.median(steady):.2f} ms | "
              f"{statistics.median(swap):.2f} ms | {ratio:.2f}x | {errors} |")  # fmt: skip
        print(f"\ntarget: swap p99 within 1.5x of steady state -> {'MET' if ratio <= 1.5 else 'NOT MET'}")
        return 0 if errors == 0 else 1
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
