"""What the access log costs: the same model through gateways that differ only in their access log.

Each round starts a fresh gateway per mode on the same store — no access log, a JSON line for every request,
logfmt text for every request, JSON for 10% of requests — and drives it closed-loop over REST at a fixed
concurrency; the order of the modes rotates from round to round. The table shows each mode's median throughput and
latency over rounds, its throughput relative to no access log (the target: > 0.95 at full sampling), and the
gateway process's CPU time per request (from /proc: on a machine shared with other work, throughput swings with
the neighbours while CPU per request does not — when the gateway is CPU-bound, 1 / that ratio is the throughput
it would lose). Lines go
to each gateway's log file, a real file on disk.

    .venv/bin/python bench/access_log_cost.py --store STORE --model mlp_onnx --concurrency 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_window(server: GatewayProcess, args: argparse.Namespace) -> tuple[LoadWindow, float]:
    """The client's window and the server's CPU seconds per successful request in it."""
    async with httpx.AsyncClient(timeout=10) as client:
        meta = (await client.get(f"{server.http_url}/v2/models/{args.model}")).json()
    load = RestLoad(server.http_url)
    assert server.proc is not None
    try:
        send = load.sender(args.model, random_inputs(meta["inputs"], args.batch))
        await closed_loop(send, args.concurrency, 1.0)  # warm the server and the connections
        cpu0 = cpu_seconds(server.proc.pid)
        window = await closed_loop(send, args.concurrency, args.duration)
        await asyncio.sleep(0.1)  # the access log's writer flushes every 50 ms: its work is counted too
        return window, (cpu_seconds(server.proc.pid) - cpu0) / max(len(window.latencies_ns), 1)
    finally:
        await load.close()


def measure(
    args: argparse.Namespace,
) -> tuple[dict[str, list[LoadWindow]], dict[str, list[float]], dict[str, int]]:
    """Each round starts a fresh gateway per mode (so no mode keeps a lucky or unlucky process), in an order that
    rotates from round to round."""
    out: dict[str, list[LoadWindow]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    lines = dict.fromkeys(MODES, 0)
    order = list(MODES)
    with tempfile.TemporaryDirectory() as logs:
        for r in range(args.rounds):
            shift = r % len(order)
            for mode in order[shift:] + order[:shift]:
                log = Path(logs) / f"{r}-{order.index(mode)}.log"
                server = GatewayProcess(args.store, ["--grpc-port", "-1", *MODES[mode]], log_path=log).start()
                try:
                    window, per_request = asyncio.run(one_window(server, args))
                    out[mode].append(window)
                    cpu[mode].append(per_request)
                finally:
                    server.stop()
                lines[mode] += log.read_text(errors="replace").count("tensorgate.access")
    return out, cpu, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default="mlp_onnx")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    windows, cpu, lines = measure(args)
    rows: dict[str, dict[str, Any]] = {}
    for mode, ws in windows.items():
        rows[mode] = {
            "rps": statistics.median(w.throughput for w in ws),
            "p50": statistics.median(w.percentiles_ms()["p50"] for w in ws),
            "p99": statistics.median(w.percentiles_ms()["p99"] for w in ws),
            "requests": sum(w.requests for w in ws),
            "cpu_us": statistics.median(cpu[mode]) * 1e6,
        }
    base = rows["off"]["rps"]
    ratios = {
        mode: statistics.median(w.throughput / o.throughput for w, o in zip(windows[mode], windows["off"], strict=True))
        for mode in windows
    }
    print(f"{args.model}, REST, concurrency {args.concurrency}, {args.rounds} rounds x {args.duration:g} s per mode")
    print(
        f"{'access log':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs off':>7} {'per-round':>10} "
        f"{'srv CPU us/req':>15} {'CPU vs off':>11} {'lines':>9}"
    )
    for mode, r in rows.items():
        print(
            f"{mode:<22} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['rps'] / base:>7.3f} "
            f"{ratios[mode]:>10.3f} {r['cpu_us']:>15.1f} {r['cpu_us'] / rows['off']['cpu_us']:>11.3f} {lines[mode]:>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
