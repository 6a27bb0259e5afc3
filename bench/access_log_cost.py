"""What the access log costs: the same model through gateways that differ only in their access log.

Starts one gateway per mode on the same store — no access log, a JSON line for every request, logfmt text for
every request, JSON for 10% of requests — and drives them one at a time, closed-loop over REST at a fixed
concurrency, in rounds that rotate which mode goes first. The table shows each mode's median throughput and
latency over rounds and its throughput relative to no access log (the target: > 0.95 at full sampling). Lines go
to each gateway's log file, a real file on disk.

    .venv/bin/python bench/access_log_cost.py --store STORE --model mlp_onnx --concurrency 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cli.bench.load import LoadWindow, RestLoad, closed_loop, random_inputs
from gateway.cli.bench.server import GatewayProcess

MODES: dict[str, list[str]] = {
    "off": [],
    "json, every request": ["--access-log", "--log-format", "json"],
    "text, every request": ["--access-log", "--log-format", "text"],
    "json, 10% sampled": ["--access-log", "--log-format", "json", "--access-log-sample", "0.1"],
}


async def measure(servers: dict[str, GatewayProcess], args: argparse.Namespace) -> dict[str, list[LoadWindow]]:
    async with httpx.AsyncClient(timeout=10) as client:
        meta = (await client.get(f"{next(iter(servers.values())).http_url}/v2/models/{args.model}")).json()
    inputs = random_inputs(meta["inputs"], args.batch)
    loads = {mode: RestLoad(s.http_url) for mode, s in servers.items()}
    out: dict[str, list[LoadWindow]] = {mode: [] for mode in servers}
    try:
        sends = {mode: load.sender(args.model, inputs) for mode, load in loads.items()}
        for mode in servers:  # warm each server and its connections
            await closed_loop(sends[mode], args.concurrency, 1.0)
        order = list(servers)
        for r in range(args.rounds):
            shift = r % len(order)
            for mode in order[shift:] + order[:shift]:
                out[mode].append(await closed_loop(sends[mode], args.concurrency, args.duration))
    finally:
        for load in loads.values():
            await load.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default="mlp_onnx")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    servers: dict[str, GatewayProcess] = {}
    try:
        for mode, extra in MODES.items():
            servers[mode] = GatewayProcess(args.store, ["--grpc-port", "-1", *extra]).start()
        windows = asyncio.run(measure(servers, args))
        lines = {mode: s.log_path.read_text(errors="replace").count("tensorgate.access") for mode, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    rows: dict[str, dict[str, Any]] = {}
    for mode, ws in windows.items():
        rows[mode] = {
            "rps": statistics.median(w.throughput for w in ws),
            "p50": statistics.median(w.percentiles_ms()["p50"] for w in ws),
            "p99": statistics.median(w.percentiles_ms()["p99"] for w in ws),
            "requests": sum(w.requests for w in ws),
        }
    base = rows["off"]["rps"]
    ratios = {
        mode: statistics.median(w.throughput / o.throughput for w, o in zip(windows[mode], windows["off"], strict=True))
        for mode in windows
    }
    print(f"{args.model}, REST, concurrency {args.concurrency}, {args.rounds} rounds x {args.duration:g} s per mode")
    print(f"{'access log':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs off':>7} {'per-round':>10} {'lines':>9}")
    for mode, r in rows.items():
        print(
            f"{mode:<22} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['rps'] / base:>7.3f} "
            f"{ratios[mode]:>10.3f} {lines[mode]:>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
