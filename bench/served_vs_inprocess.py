"""What serving costs: one model called in-process from N threads vs the same model through the gateway.

Loads ``<store>/<model>/<version>`` with the runtime its artefact needs, calls ``infer`` from N threads for the
given duration, then drives a gateway started on the store over REST (binary extension) and gRPC at the same
concurrency and batch. Rounds alternate the order of the three modes; the table shows each mode's median and
the median over rounds of the served / in-process ratios.

    .venv/bin/python bench/served_vs_inprocess.py --store STORE --model dense --concurrency 4 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from gateway.cli.bench.load import InputTensor, LoadWindow, RestLoad, closed_loop, random_inputs
from gateway.cli.bench.server import GatewayProcess
from gateway.core.types import DATATYPES
from gateway.grpc.client import GrpcLoad
from model_store.config import ModelConfig
from runtimes import Runtime, detect_format, runtime_class

MODES = ("in-process", "rest", "grpc")


def version_dir(store: Path, model: str, version: int | None) -> Path:
    root = store / model
    if version is not None:
        return root / str(version)
    versions = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise SystemExit(f"{root} has no version folders")
    return root / str(versions[-1])


def load_runtime(store: Path, model: str, path: Path) -> Runtime:
    """The runtime the gateway would build for this version: config runtime/options, else the artefact's format."""
    config_path = store / model / "config.yaml"
    config = ModelConfig.parse(config_path.read_bytes() if config_path.is_file() else None, str(config_path))
    runtime = runtime_class(config.runtime or detect_format(path))()
    options: dict[str, Any] = dict(config.options)
    if config.inputs is not None:
        options["inputs"] = [o.model_dump() for o in config.inputs]
    if config.outputs is not None:
        options["outputs"] = [o.model_dump() for o in config.outputs]
    runtime.load(path, options)
    return runtime


def as_array(tensor: InputTensor) -> np.ndarray:
    """The numpy array a wire-encoded input stands for (the same values both ways)."""
    if tensor.datatype != "BYTES":
        return np.frombuffer(tensor.data, DATATYPES[tensor.datatype].numpy).reshape(tensor.shape)
    items: list[bytes] = []
    offset = 0
    while offset < len(tensor.data):
        (length,) = struct.unpack_from("<I", tensor.data, offset)
        items.append(tensor.data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return np.array(items, dtype=np.object_).reshape(tensor.shape)


def in_process(runtime: Runtime, inputs: dict[str, np.ndarray], threads: int, duration: float) -> LoadWindow:
    """``threads`` threads call ``runtime.infer`` back to back for ``duration`` seconds."""
    window = LoadWindow(threads)
    per_thread: list[list[int]] = [[] for _ in range(threads)]
    errors: list[str] = []
    start_gate = threading.Barrier(threads + 1)
    deadline = 0

    def worker(out: list[int]) -> None:
        start_gate.wait()
        clock = time.perf_counter_ns
        while True:
            t0 = clock()
            if t0 >= deadline:
                return
            try:
                runtime.infer(inputs)
            except Exception as exc:  # counted and reported like a failed request
                errors.append(type(exc).__name__)
                continue
            out.append(clock() - t0)

    pool = [threading.Thread(target=worker, args=(out,), daemon=True) for out in per_thread]
    for thread in pool:
        thread.start()
    cpu0 = time.process_time()
    start = time.perf_counter_ns()
    deadline = start + int(duration * 1e9)
    start_gate.wait()
    for thread in pool:
        thread.join()
    window.elapsed_s = (time.perf_counter_ns() - start) / 1e9
    window.cpu_s = time.process_time() - cpu0
    for out in per_thread:
        window.latencies_ns.extend(out)
    for name in errors:
        window.errors[name] += 1
    return window


async def served(loader: RestLoad | GrpcLoad, model: str, inputs: Sequence[InputTensor], n: int, duration: float,
                 warmup: float) -> LoadWindow:  # fmt: skip
    send = loader.sender(model, inputs)
    if warmup > 0:
        await closed_loop(send, n, warmup)
    return await closed_loop(send, n, duration)


def summary(window: LoadWindow) -> dict[str, float]:
    figures = window.percentiles_ms((50, 99))
    return {
        "throughput_rps": window.throughput,
        "p50_ms": figures["p50"],
        "p99_ms": figures["p99"],
        "errors": float(sum(window.errors.values())),
    }


def measure(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    store = Path(args.store)
    path = version_dir(store, args.model, args.version)
    console.print(f"loading {path} in-process ...")
    runtime = load_runtime(store, args.model, path)
    specs = [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in runtime.signature().inputs]
    wire = random_inputs(specs, args.batch, args.seed)
    arrays = {t.name: as_array(t) for t in wire}
    runtime.infer(arrays)  # fail early, before any timing
    server_args = ["--model-control", "explicit", "--load-model", args.model, *args.server_arg]
    console.print(f"starting a gateway on {store} (explicit: {args.model}) ...")
    with GatewayProcess(str(store), server_args) as server:
        rounds = _event_loop(_rounds(args, console, server, runtime, arrays, wire))
    runtime.unload()
    return {
        "model": args.model,
        "version_dir": str(path),
        "concurrency": args.concurrency,
        "batch": args.batch,
        "duration_s": args.duration,
        "rounds": rounds,
        "median": medians(rounds),
    }


async def _rounds(
    args: argparse.Namespace,
    console: Console,
    server: GatewayProcess,
    runtime: Runtime,
    arrays: dict[str, np.ndarray],
    wire: list[InputTensor],
) -> list[dict[str, dict[str, float]]]:
    """The alternating rounds; in-process runs block the loop on purpose (nothing else is in flight then)."""
    rest = RestLoad(server.http_url)
    grpc_load = GrpcLoad(server.grpc_target)
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for loader in (rest, grpc_load):
            await loader.check(args.model, wire)
        for index in range(args.rounds):
            order = MODES if index % 2 == 0 else tuple(reversed(MODES))
            result: dict[str, dict[str, float]] = {}
            for mode in order:
                if mode == "in-process":
                    in_process(runtime, arrays, args.concurrency, args.warmup)
                    window = in_process(runtime, arrays, args.concurrency, args.duration)
                else:
                    loader = rest if mode == "rest" else grpc_load
                    window = await served(loader, args.model, wire, args.concurrency, args.duration, args.warmup)
                result[mode] = summary(window)
                console.print(
                    f"round {index + 1}/{args.rounds} {mode:>10}: {result[mode]['throughput_rps']:9.1f} req/s"
                    f"  p50 {result[mode]['p50_ms']:7.3f} ms  p99 {result[mode]['p99_ms']:7.3f} ms"
                )
            rounds.append(result)
    finally:
        await rest.close()
        await grpc_load.close()
    return rounds


def _event_loop(coro: Any) -> list[dict[str, dict[str, float]]]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result: list[dict[str, dict[str, float]]] = runner.run(coro)
        return result


def medians(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per mode: median figures, and the median over rounds of served / in-process ratios."""
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        figures = {k: statistics.median(r[mode][k] for r in rounds) for k in ("throughput_rps", "p50_ms", "p99_ms")}
        figures["errors"] = sum(r[mode]["errors"] for r in rounds)
        if mode != "in-process":
            figures["throughput_ratio"] = statistics.median(
                r[mode]["throughput_rps"] / r["in-process"]["throughput_rps"] for r in rounds
            )
            figures["p50_ratio"] = statistics.median(r[mode]["p50_ms"] / r["in-process"]["p50_ms"] for r in rounds)
        out[mode] = figures
    return out


def table(doc: dict[str, Any]) -> Table:
    out = Table(
        title=f"{doc['model']}: served vs in-process, concurrency {doc['concurrency']}, batch {doc['batch']}, "
        f"median of {len(doc['rounds'])} rounds of {doc['duration_s']:g} s",
        title_justify="left",
    )
    for title in (
        "mode",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "req/s served / in-process",
        "p50 served / in-process",
    ):
        out.add_column(title, justify="left" if title == "mode" else "right")
    for mode, figures in doc["median"].items():
        out.add_row(
            mode,
            f"{figures['throughput_rps']:.1f}",
            f"{figures['p50_ms']:.3f}",
            f"{figures['p99_ms']:.3f}",
            f"{figures['errors']:.0f}",
            f"{figures['throughput_ratio']:.3f}" if "throughput_ratio" in figures else "1",
            f"{figures['p50_ratio']:.2f}x" if "p50_ratio" in figures else "1",
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="local model store folder")
    parser.add_argument("--model", required=True, help="model to measure")
    parser.add_argument("--version", type=int, help="version folder (default: the highest)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads in-process = requests in flight served")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per mode and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--batch", type=int, default=1, help="size given to a free batch dimension")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order of the modes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for the gateway")
    parser.add_argument("--json", type=Path, help="write rounds and medians as JSON here")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.rounds < 1 or args.batch < 1:
        parser.error("--concurrency, --rounds and --batch must be >= 1 and --duration > 0")
    console = Console(stderr=True)
    doc = measure(args, console)
    out = Console()
    if not out.is_terminal:  # piped or captured: room for every column instead of 80
        out = Console(width=160)
    out.print(table(doc))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
