"""A/B: the same ``tensorgate bench`` run against two checkouts of tensorgate serving one store, in alternating
rounds so that the machine's drift hits both alike; prints each round, the medians and the B/A ratios.

    python bench/ab.py --a ../old-checkout --b . --store demo_store --models mlp_onnx --rounds 3

Each checkout's server is started from its own folder (``python -m gateway serve``), on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table


def start(checkout: Path, store: Path, tmp: Path, tag: str) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    port_file = tmp / f"ports-{tag}.json"
    log = open(tmp / f"server-{tag}.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--store", str(store.resolve()), "--host", "127.0.0.1",
         "--http-port", "0", "--grpc-port", "0", "--poll-interval", "0", "--port-file", str(port_file)],
        cwd=checkout, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(checkout.resolve())},
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server {tag} did not start: see {tmp / f'server-{tag}.log'}")
        time.sleep(0.1)
    ports: dict[str, int] = json.loads(port_file.read_text())
    while httpx.get(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server {tag} not ready")
        time.sleep(0.2)
    return proc, ports


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(ports: dict[str, int], args: argparse.Namespace, out: Path) -> list[dict[str, object]]:
    cmd = [
        sys.executable, "-m", "gateway", "bench", "--url", f"127.0.0.1:{ports['http']}",
        "--grpc-url", f"127.0.0.1:{ports['grpc']}", "--models", args.models, "--concurrency", args.concurrency,
        "--duration", str(args.duration), "--warmup", "0", "--json", str(out), "--no-progress",
        "--protocol", args.protocol,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    runs: list[dict[str, object]] = json.loads(out.read_text())["runs"]
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. the previous version)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (e.g. this one)")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--models", default="mlp_onnx")
    parser.add_argument("--concurrency", default="16")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocol", choices=["rest", "grpc", "both"], default="both")
    args = parser.parse_args()
    console = Console()
    rows: dict[tuple[str, str, str, int], dict[str, list[tuple[float, float]]]] = {}
    cpu: dict[str, list[float]] = {"A": [], "B": []}  # server CPU ms per request, per round
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers = {tag: start(path, args.store, tmp, tag) for tag, path in (("A", args.a), ("B", args.b))}
        try:
            for k in range(args.rounds):
                for tag in ("A", "B") if k % 2 == 0 else ("B", "A"):
                    console.print(f"round {k + 1}/{args.rounds}: {tag}", style="dim")
                    proc, ports = servers[tag]
                    before = cpu_seconds(proc.pid)
                    runs = bench(ports, args, tmp / f"{tag}-{k}.json")
                    requests = sum(int(run["requests"]) for run in runs)  # type: ignore[call-overload]
                    cpu[tag].append((cpu_seconds(proc.pid) - before) * 1000 / max(requests, 1))
                    for run in runs:
                        key = (str(run["model"]), str(run["protocol"]), str(run["runtime"]), int(run["concurrency"]))  # type: ignore[call-overload]
                        p99 = float(run["latency_ms"]["p99"])  # type: ignore[index]
                        rows.setdefault(key, {"A": [], "B": []})[tag].append((float(run["throughput_rps"]), p99))  # type: ignore[arg-type]
        finally:
            for proc, _ports in servers.values():
                proc.terminate()
                proc.wait(30)
    table = Table(title=f"A = {args.a}, B = {args.b}: medians of {args.rounds} alternating rounds")
    for column in ("model", "protocol", "c", "A req/s (rounds)", "B req/s (rounds)", "B/A", "A p99 ms", "B p99 ms"):
        table.add_column(column)
    for (model, protocol, _runtime, conc), seen in sorted(rows.items()):
        a_rps, b_rps = (statistics.median(r for r, _ in seen[t]) for t in ("A", "B"))
        a_p99, b_p99 = (statistics.median(p for _, p in seen[t]) for t in ("A", "B"))
        table.add_row(
            model, protocol, str(conc),
            f"{a_rps:.0f} ({', '.join(f'{r:.0f}' for r, _ in seen['A'])})",
            f"{b_rps:.0f} ({', '.join(f'{r:.0f}' for r, _ in seen['B'])})",
            f"{b_rps / a_rps:.3f}", f"{a_p99:.2f}", f"{b_p99:.2f}",
        )  # fmt: skip
    console.print(table)
    a_cpu, b_cpu = statistics.median(cpu["A"]), statistics.median(cpu["B"])
    console.print(
        f"server CPU per request (all protocols, median of rounds): A {a_cpu:.3f} ms, B {b_cpu:.3f} ms, "
        f"B/A {b_cpu / a_cpu:.3f}  (A rounds {', '.join(f'{c:.3f}' for c in cpu['A'])}; "
        f"B rounds {', '.join(f'{c:.3f}' for c in cpu['B'])})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
