"""What many small models cost an idle gateway: time to ready, memory, threads and the CPU of following the store.

For each model count (default 200 and 1,000), a store of that many tiny dense ONNX models (16 -> 4, each with a
``config.yaml``) is built in a temporary folder and ``tensorgate serve`` started on it (strict readiness: ready
means every model is READY). The table shows per model count: seconds from start to ready, the server's RSS and
thread count (``/proc/<pid>/status``, ``/proc/<pid>/task``) once idle, the same after one request to every model
(and again once idle executors have retired), and the server's CPU while idle with the store polled every
``--poll-interval`` seconds, as CPU seconds per minute (``/proc/<pid>/stat`` over ``--window`` seconds).

    .venv/bin/python bench/many_models.py --models 200,1000
    # before/after in one run: the server from each checkout in turn, per model count
    .venv/bin/python bench/many_models.py --models 200,1000 --checkouts /path/to/main,.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cli.bench.server import GatewayProcess
from tests.onnx_models import dense_copies

TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def touch_all(url: str, names: list[str]) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": np.ones(16).tolist()}]}
    with httpx.Client(timeout=30) as client:
        for name in names:
            reply = client.post(f"{url}/v2/models/{name}/infer", json=body)
            reply.raise_for_status()


def measure(count: int, args: argparse.Namespace, checkout: str | None) -> dict[str, float]:
    if checkout is not None:  # the server runs that checkout's code (python -m gateway looks in its cwd first)
        os.environ["PYTHONPATH"] = str(Path(checkout).resolve())
        os.chdir(checkout)
    with tempfile.TemporaryDirectory(prefix="many-models-") as tmp:
        names = dense_copies(Path(tmp), count, args.config)
        server = GatewayProcess(
            tmp, ["--strict-readiness", "--poll-interval", str(args.poll_interval), *args.server_args]
        )
        start = time.perf_counter()
        server.start(timeout=1800)
        ready = time.perf_counter() - start
        assert server.proc is not None
        pid = server.proc.pid
        try:
            time.sleep(args.settle)
            row = {"models": count, "ready_s": ready, "rss_mb": rss_mb(pid), "threads": threads(pid)}
            before = cpu_seconds(pid)
            t0 = time.perf_counter()
            time.sleep(args.window)
            row["poll_cpu_s_per_min"] = (cpu_seconds(pid) - before) / (time.perf_counter() - t0) * 60
            touch_all(server.http_url, names)
            row["threads_after_use"] = threads(pid)
            row["rss_after_use_mb"] = rss_mb(pid)
            time.sleep(args.idle_wait)
            row["threads_idle_again"] = threads(pid)
            return row
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="200,1000", help="model counts, comma-separated (default 200,1000)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="store poll interval, s (default 5)")
    parser.add_argument("--window", type=float, default=30.0, help="idle CPU window, s (default 30)")
    parser.add_argument("--settle", type=float, default=3.0, help="wait after ready before measuring, s (default 3)")
    parser.add_argument("--idle-wait", type=float, default=35.0, help="wait after the requests, s (default 35)")
    parser.add_argument("--config", default="sla: {p99_ms: 20}\n", help="every model's config.yaml")
    parser.add_argument("--checkouts", help="comma-separated source checkouts to serve from, alternating")
    parser.add_argument("--server-arg", dest="server_args", action="append", default=[], help="extra serve flag")
    args = parser.parse_args()
    checkouts: list[str | None] = list(args.checkouts.split(",")) if args.checkouts else [None]
    checkouts = [str(Path(c).resolve()) if c else None for c in checkouts]
    header = (
        f"{'checkout':<28} {'models':>7} {'ready s':>8} {'RSS MB':>7} {'threads':>8} {'poll CPU s/min':>15} "
        f"{'threads used':>13} {'RSS used MB':>12} {'threads idle':>13}"
    )
    print(header)
    for count in (int(c) for c in args.models.split(",")):
        for checkout in checkouts:
            r = measure(count, args, checkout)
            print(
                f"{(checkout or '.')[-28:]:<28} {count:>7} {r['ready_s']:>8.1f} {r['rss_mb']:>7.0f} {r['threads']:>8} "
                f"{r['poll_cpu_s_per_min']:>15.2f} "
                f"{r['threads_after_use']:>13} {r['rss_after_use_mb']:>12.0f} {r['threads_idle_again']:>13}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
