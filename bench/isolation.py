"""What isolation costs: one model served in-process vs the same model in its own runtime process.

Two levels, each in alternating rounds within one run:

* runtime: ``Runtime.infer`` in this process vs ``ProcessRuntime.infer`` (the shared-memory hop alone), back to back
  from one thread, with the spin before blocking (``isolated``) and without it (``blocking``: both ends block in
  ``recvmsg`` at once);
* served: one gateway serving the model twice — ``<model>`` (``isolation: none``) and ``<model>_isolated``
  (``isolation: process``), and ``<model>_isolated`` again from a second gateway without the spin (``blocking``) —
  over REST (binary extension), closed loop at concurrency 1 (latency) and at ``--concurrency`` (throughput), with
  the server's CPU per request (the server and its runtime processes, /proc).

It also reports the resident memory of an idle runtime process for each model of ``--rss-model``.

    .venv/bin/python bench/isolation.py                       # builds the demo MLP (ONNX) in a temporary store
    .venv/bin/python bench/isolation.py --store STORE --model mlp_onnx --rss-model mlp_torch_aoti --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gateway.cli.bench.load import InputTensor, RestLoad, closed_loop, random_inputs
from gateway.cli.bench.server import GatewayProcess
from gateway.core.types import DATATYPES
from model_store.config import ModelConfig
from runtimes import Runtime, detect_format, runtime_class
from runtimes.isolation import ProcessRuntime
from runtimes.isolation.process import SPIN_ENV

TICKS = os.sysconf("SC_CLK_TCK")


def latest(store: Path, model: str) -> Path:
    versions = sorted(int(p.name) for p in (store / model).iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise SystemExit(f"{store / model} has no version folders")
    return store / model / str(versions[-1])


def model_config(store: Path, model: str) -> ModelConfig:
    path = store / model / "config.yaml"
    return ModelConfig.parse(path.read_bytes() if path.is_file() else None, str(path))


def both_ways(store: Path, model: str, into: Path) -> tuple[str, str]:
    """A store holding ``model`` twice: in-process and isolated (same files, same config otherwise)."""
    source = latest(store, model)
    raw = (
        yaml.safe_load((store / model / "config.yaml").read_text()) if (store / model / "config.yaml").is_file() else {}
    )
    names = (model, f"{model}_isolated")
    for name, isolation in zip(names, ("none", "process"), strict=True):
        shutil.copytree(source, into / name / "1")
        config = {k: v for k, v in (raw or {}).items() if k not in ("version_labels", "source")}
        (into / name / "config.yaml").write_text(yaml.safe_dump({**config, "isolation": isolation}))
    return names


def arrays_of(inputs: Sequence[InputTensor]) -> dict[str, np.ndarray]:
    return {t.name: np.frombuffer(t.data, DATATYPES[t.datatype].numpy).reshape(t.shape) for t in inputs}


def runtime_window(runtime: Runtime, arrays: dict[str, np.ndarray], calls: int) -> dict[str, float]:
    latencies = np.empty(calls)
    start = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        runtime.infer(arrays)
        latencies[i] = time.perf_counter() - t0
    elapsed = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e6
    return {"p50_us": float(p50), "p99_us": float(p99), "calls_per_s": calls / elapsed}


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(stat[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / TICKS
        todo.extend(children.get(current, []))
    return total


async def served_window(
    server: GatewayProcess, load: RestLoad, model: str, inputs: Sequence[InputTensor], n: int, seconds: float
) -> dict[str, float]:
    send = load.sender(model, inputs)
    await closed_loop(send, n, min(seconds, 1.0))  # warm-up
    assert server.proc is not None
    cpu0 = tree_cpu(server.proc.pid)
    window = await closed_loop(send, n, seconds)
    cpu = tree_cpu(server.proc.pid) - cpu0
    figures = window.percentiles_ms((50, 99))
    served = len(window.latencies_ns)
    return {
        "throughput_rps": window.throughput,
        "p50_us": figures["p50"] * 1000,
        "p99_us": figures["p99"] * 1000,
        "server_cpu_us_per_request": cpu / served * 1e6 if served else float("nan"),
        "errors": float(sum(window.errors.values())),
    }


def idle_rss(store: Path, model: str) -> dict[str, Any]:
    """Resident memory of a runtime process holding ``model`` after load and one call, idle."""
    config = model_config(store, model)
    path = latest(store, model)
    fmt = config.runtime or detect_format(path)
    runtime = ProcessRuntime(fmt, model, config.instances)
    runtime.load(path, config.runtime_options())
    specs = [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in runtime.signature().inputs]
    runtime.infer(arrays_of(random_inputs(specs, 1)))
    rss = runtime.rss()
    runtime.unload()
    return {"model": model, "format": fmt, "rss_mib": rss / 2**20}


@contextlib.contextmanager
def blocking_gateway(store: Path) -> Iterator[GatewayProcess]:
    """A second gateway on ``store`` whose isolated runtimes block at once (``TENSORGATE_ISOLATION_SPIN=0``)."""
    before = os.environ.get(SPIN_ENV)
    os.environ[SPIN_ENV] = "0"
    try:
        server = GatewayProcess(str(store), ["--grpc-port", "-1"]).start()
    finally:
        if before is None:
            del os.environ[SPIN_ENV]
        else:
            os.environ[SPIN_ENV] = before
    try:
        yield server
    finally:
        server.stop()


def alternating(rounds: int, modes: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [modes if i % 2 == 0 else modes[::-1] for i in range(rounds)]


def median_of(rows: list[dict[str, dict[str, float]]], mode: str) -> dict[str, float]:
    return {k: statistics.median(r[mode][k] for r in rows) for k in rows[0][mode]}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    store = Path(args.store) if args.store else None
    if store is None:
        from gateway.cli.demo import build_demo_store

        store = work / "demo"
        print("exporting the demo MLP (ONNX) ...", flush=True)
        from gateway.cli.demo import MLP

        build_demo_store(store, models=[MLP], formats=("onnx",))
    model = args.model
    config = model_config(store, model)
    path = latest(store, model)
    fmt = config.runtime or detect_format(path)
    inproc = runtime_class(fmt)()
    inproc.load(path, config.runtime_options())
    isolated = ProcessRuntime(fmt, model, 1)
    isolated.load(path, config.runtime_options())
    blocking = ProcessRuntime(fmt, model, 1, spin=False)
    blocking.load(path, config.runtime_options())
    runtimes = {"in-process": inproc, "isolated": isolated, "blocking": blocking}
    specs = [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in inproc.signature().inputs]
    wire = random_inputs(specs, args.batch, 0)
    arrays = arrays_of(wire)
    for other in (isolated, blocking):
        for a, b in zip(inproc.infer(arrays).values(), other.infer(arrays).values(), strict=True):
            np.testing.assert_array_equal(a, b)  # the same answer every way, before any timing
    runtime_rows = []
    for order in alternating(args.rounds, tuple(runtimes)):
        row = {}
        for mode in order:
            runtime_window(runtimes[mode], arrays, args.calls // 5)  # warm-up
            row[mode] = runtime_window(runtimes[mode], arrays, args.calls)
        runtime_rows.append(row)
        hops = "".join(
            f" (hop {m} {row[m]['p50_us'] - row['in-process']['p50_us']:.1f} us)" for m in runtimes if m != "in-process"
        )
        print("runtime: " + ", ".join(f"{m} p50 {row[m]['p50_us']:.1f} us" for m in runtimes) + hops, flush=True)
    for runtime in runtimes.values():
        runtime.unload()

    served_store = work / "served"
    plain, iso = both_ways(store, model, served_store)
    served_rows: dict[int, list[dict[str, dict[str, float]]]] = {1: [], args.concurrency: []}
    with GatewayProcess(str(served_store), ["--grpc-port", "-1"]) as server, blocking_gateway(served_store) as other:
        loads = {"in-process": RestLoad(server.http_url), "isolated": RestLoad(server.http_url)}
        loads["blocking"] = RestLoad(other.http_url)
        servers = {"in-process": server, "isolated": server, "blocking": other}
        names = {"in-process": plain, "isolated": iso, "blocking": iso}

        async def run() -> None:
            try:
                for mode in names:
                    await loads[mode].check(names[mode], wire)
                for order in alternating(args.rounds, tuple(names)):
                    for n in served_rows:
                        row = {}
                        for mode in order:
                            row[mode] = await served_window(
                                servers[mode], loads[mode], names[mode], wire, n, args.duration
                            )
                        served_rows[n].append(row)
                        print(f"served c={n}: " + ", ".join(
                            f"{mode} {f['throughput_rps']:.0f} req/s p50 {f['p50_us']:.0f} us "
                            f"cpu {f['server_cpu_us_per_request']:.0f} us/req" for mode, f in row.items()
                        ), flush=True)  # fmt: skip
            finally:
                for load in loads.values():
                    await load.close()

        asyncio.run(run())
    rss = [idle_rss(store, name) for name in [model, *args.rss_model]]
    return {
        "model": model,
        "format": fmt,
        "batch": args.batch,
        "rounds": args.rounds,
        "runtime": {"rounds": runtime_rows, "median": {m: median_of(runtime_rows, m) for m in runtime_rows[0]}},
        "served": {
            str(n): {"rounds": rows, "median": {m: median_of(rows, m) for m in rows[0]}}
            for n, rows in served_rows.items()
        },
        "idle_runtime_process": rss,
    }


def report(doc: dict[str, Any]) -> str:
    lines = [f"{doc['model']} ({doc['format']}), batch {doc['batch']}, median of {doc['rounds']} alternating rounds"]
    rt = doc["runtime"]["median"]
    lines.append(
        f"runtime call   in-process p50 {rt['in-process']['p50_us']:.1f} us p99 {rt['in-process']['p99_us']:.1f} us"
    )
    for mode in ("isolated", "blocking"):
        hop = statistics.median(r[mode]["p50_us"] - r["in-process"]["p50_us"] for r in doc["runtime"]["rounds"])
        hop99 = statistics.median(r[mode]["p99_us"] - r["in-process"]["p99_us"] for r in doc["runtime"]["rounds"])
        lines.append(
            f"runtime call   {mode:>10} p50 {rt[mode]['p50_us']:.1f} us p99 {rt[mode]['p99_us']:.1f} us"
            f" | hop p50 {hop:.1f} us p99 {hop99:.1f} us"
        )
    for n, block in doc["served"].items():
        med = block["median"]
        for mode, f in med.items():
            lines.append(
                f"served c={n:<3} {mode:>10}: {f['throughput_rps']:8.0f} req/s  p50 {f['p50_us']:7.0f} us  "
                f"p99 {f['p99_us']:7.0f} us  server CPU {f['server_cpu_us_per_request']:5.0f} us/req  "
                f"errors {f['errors']:.0f}"
            )
        for mode in ("isolated", "blocking"):
            added = statistics.median(r[mode]["p50_us"] - r["in-process"]["p50_us"] for r in block["rounds"])
            ratio = statistics.median(
                r[mode]["throughput_rps"] / r["in-process"]["throughput_rps"] for r in block["rounds"]
            )
            lines.append(f"served c={n:<3} {mode} adds p50 {added:.0f} us, throughput x{ratio:.2f}")
    for row in doc["idle_runtime_process"]:
        lines.append(f"idle runtime process: {row['model']} ({row['format']}) {row['rss_mib']:.0f} MiB resident")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="local model store (default: the demo MLP exported to a temporary folder)")
    parser.add_argument("--model", default="mlp_onnx", help="model to measure (default mlp_onnx)")
    parser.add_argument("--rss-model", action="append", default=[], help="also measure an idle runtime process of")
    parser.add_argument("--batch", type=int, default=1, help="size given to a free batch dimension")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating which mode goes first")
    parser.add_argument("--calls", type=int, default=5000, help="runtime calls per mode and round")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of served load per mode and round")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight for the throughput windows")
    parser.add_argument("--json", type=Path, help="write the rounds and medians as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tensorgate-isolation-") as tmp:
        doc = measure(args, Path(tmp))
    print(report(doc))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
