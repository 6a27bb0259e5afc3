"""What /metrics costs the requests it measures: a loaded model's latency while Prometheus scrapes every second.

For each model count (default 10, 200, 1,000 dense ONNX models, each of which has served traffic), a gateway is
started on a fresh store, every model is sent a few requests (so each has its series), then one model is driven
closed-loop at a fixed concurrency in alternating rounds with and without a scraper hitting ``/metrics`` on the
HTTP port once a second (as Prometheus does: OpenMetrics, gzip; the scraper is its own process). The table shows
per model count: the series in the exposition, its size (raw and gzipped), scrape time (first = nothing cached,
then the median), the loaded model's p50/p99 and throughput with and without scraping, and the ratios.

    .venv/bin/python bench/scrape_cost.py --models 10,200,1000 --duration 6 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cli.bench.load import LoadWindow, RestLoad, closed_loop, random_inputs
from gateway.cli.bench.server import GatewayProcess
from tests.onnx_models import dense_copies

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
INPUTS = [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]


def scraper(url: str, stop: Any, out: Any) -> None:
    """Scrape once a second until ``stop`` is set; put (wire bytes, seconds) per scrape. The body is read and not
    decompressed or parsed (this box's two cores are shared with the server and the load)."""
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            with client.stream("GET", url, headers={"accept": ACCEPT, "accept-encoding": "gzip"}) as r:
                wire = sum(len(chunk) for chunk in r.iter_raw())
            seconds = time.perf_counter() - t0
            out.put((wire, seconds))
            stop.wait(max(0.0, 1.0 - seconds))


def exposition_size(url: str) -> tuple[int, int]:
    """(series, raw bytes) of one uncompressed scrape."""
    text = httpx.get(url, headers={"accept": ACCEPT}, timeout=30).text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#")), len(text.encode())


async def drive(load: RestLoad, model: str, concurrency: int, duration: float) -> LoadWindow:
    send = load.sender(model, random_inputs(INPUTS, 1))
    return await closed_loop(send, concurrency, duration)


async def warm_all(base: str, names: list[str], per_model: int) -> None:
    load = RestLoad(base)
    try:
        for name in names:
            send = load.sender(name, random_inputs(INPUTS, 1))
            for _ in range(per_model):
                err = await send()
                if err is not None:
                    raise SystemExit(f"{name}: {err}")
    finally:
        await load.close()


def one_count(count: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        names = dense_copies(Path(tmp), count, "sla: {p99_ms: 20}\n")
        server = GatewayProcess(tmp, ["--poll-interval", "0", *args.server_arg])
        server.start(timeout=600)
        try:
            asyncio.run(warm_all(server.http_url, names, 3))
            ctx = multiprocessing.get_context("spawn")
            results: dict[str, list[LoadWindow]] = {"off": [], "on": []}
            scrapes: list[tuple[int, float]] = []
            load = RestLoad(server.http_url)
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(drive(load, names[0], args.concurrency, 1.0))  # warm the connection
                for r in range(args.rounds):
                    for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                        stop, out, proc = ctx.Event(), ctx.Queue(), None
                        if mode == "on":
                            proc = ctx.Process(target=scraper, args=(f"{server.http_url}/metrics", stop, out))
                            proc.start()
                            time.sleep(0.5)  # first scrape under way
                        window = loop.run_until_complete(drive(load, names[0], args.concurrency, args.duration))
                        results[mode].append(window)
                        if proc is not None:
                            stop.set()
                            proc.join(60)
                            while not out.empty():
                                scrapes.append(out.get())
            finally:
                loop.run_until_complete(load.close())
                loop.close()
            series, raw = exposition_size(f"{server.http_url}/metrics")
        finally:
            server.stop()

    def merged(windows: list[LoadWindow]) -> tuple[float, float, float]:
        lat = np.concatenate([np.asarray(w.latencies_ns, dtype=np.float64) for w in windows]) / 1e6
        rps = statistics.median(w.throughput for w in windows)
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), rps

    off, on = merged(results["off"]), merged(results["on"])
    return {
        "models": count,
        "series": series,
        "raw_kb": raw / 1024,
        "gzip_kb": scrapes[-1][0] / 1024 if scrapes else 0,
        "first_scrape_ms": scrapes[0][1] * 1e3 if scrapes else float("nan"),
        "scrape_ms": statistics.median(s[1] for s in scrapes[1:]) * 1e3 if len(scrapes) > 1 else float("nan"),
        "scrapes": len(scrapes),
        "p50_off": off[0], "p99_off": off[1], "rps_off": off[2],
        "p50_on": on[0], "p99_on": on[1], "rps_on": on[2],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="10,200,1000", help="comma-separated model counts")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per round and mode")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which mode goes first")
    parser.add_argument("--server-arg", action="append", default=[], help="extra gateway argument (repeatable)")
    args = parser.parse_args()
    rows = [one_count(int(c), args) for c in args.models.split(",")]
    head = (
        f"{'models':>7} {'series':>8} {'raw KB':>8} {'gzip KB':>8} {'1st ms':>7} {'scrape ms':>9} "
        f"{'p50 off':>8} {'p50 on':>8} {'p99 off':>8} {'p99 on':>8} {'p99 on/off':>10} {'rps on/off':>10}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['models']:>7} {r['series']:>8} {r['raw_kb']:>8.0f} {r['gzip_kb']:>8.0f} {r['first_scrape_ms']:>7.1f} "
            f"{r['scrape_ms']:>9.1f} {r['p50_off']:>8.2f} {r['p50_on']:>8.2f} {r['p99_off']:>8.2f} {r['p99_on']:>8.2f} "
            f"{r['p99_on'] / r['p99_off']:>10.2f} {r['rps_on'] / r['rps_off']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
