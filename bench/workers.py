"""Workers: the demo MLP and CNN served by ``tensorgate serve --workers 1`` and ``--workers 2`` in alternating rounds,
under C load generators — wrk for REST (V2 JSON and the binary tensor extension), h2load for gRPC (raw frames over
several connections, which SO_REUSEPORT spreads over the workers) — with throughput, p99 and the server's CPU per
request (the supervisor's whole process tree, from /proc).

    python bench/workers.py --rounds 2 --duration 10 --json bench/results/workers.json
    python bench/workers.py --memory          # memory of workers x isolation (MLP as ONNX and AOTInductor)

The store holds only mlp_onnx and cnn_onnx, copied from the demo store (built by ``tensorgate demo`` when absent):
each worker loads every model of the store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

import loadgen  # noqa: E402
import machine  # noqa: E402
import orjson  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

MODELS = {"mlp_onnx": ("x", (1, 784)), "cnn_onnx": ("image", (1, 3, 64, 64))}
CASES = [  # (model, protocol)
    ("mlp_onnx", "rest-json"),
    ("mlp_onnx", "rest-binary"),
    ("mlp_onnx", "grpc"),
    ("cnn_onnx", "rest-binary"),
    ("cnn_onnx", "grpc"),
]


@dataclass
class Row:
    round: int
    workers: int
    model: str
    protocol: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    server_cpu_ms_per_request: float
    client_cpu_ms_per_request: float
    notes: list[str]


def build_store(root: Path, demo: Path) -> Path:
    if not all((demo / m / "1" / "model.onnx").exists() for m in MODELS):
        subprocess.run([sys.executable, "-m", "gateway", "demo", "--store", str(demo), "--formats", "onnx"], check=True)
    for model in MODELS:
        shutil.copytree(demo / model, root / model, ignore=shutil.ignore_patterns("golden"))
    return root


MEMORY_MODELS = ("mlp_onnx", "mlp_torch_aoti")


def process_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def memory_of(pid: int) -> tuple[str, float, float]:
    """(role, RSS MiB, PSS MiB): PSS shares each shared page among the processes mapping it, so it sums honestly."""
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    role = "runtime process" if "runtimes.isolation.child" in cmd else "worker" if "server.worker" in cmd else "server"
    fields = dict(
        (line.split(":")[0], float(line.split()[1]) / 1024)
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    )
    return role, fields["Rss"], fields["Pss"]


def memory(args: argparse.Namespace, tmp: Path) -> int:
    """Memory of every workers x isolation combination: one store with the MLP as ONNX and as AOTInductor, all
    versions served once, then each process of the server's tree measured."""
    demo = Path(args.demo_store)
    if not all((demo / m / "1").exists() for m in MEMORY_MODELS):
        subprocess.run([sys.executable, "-m", "gateway", "demo", "--store", str(demo)], check=True)
    rows = []
    for isolation in ("none", "process"):
        store = tmp / f"store-{isolation}"
        for model in MEMORY_MODELS:
            shutil.copytree(demo / model, store / model, ignore=shutil.ignore_patterns("golden"))
            config = store / model / "config.yaml"
            config.write_text(config.read_text() + f"isolation: {isolation}\n")
        for workers in [int(n) for n in args.workers.split(",")]:
            proc, ports = start(store, tmp, workers)
            try:
                x = {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]}
                for _ in range(4):  # every worker (connections spread) has run each model
                    for model in MEMORY_MODELS:
                        with httpx.Client() as client:
                            url = f"http://127.0.0.1:{ports['http']}/v2/models/{model}/infer"
                            client.post(url, json=x, timeout=60).raise_for_status()
                time.sleep(1.0)
                by_role: dict[str, list[tuple[float, float]]] = {}
                for pid in process_tree(proc.pid):
                    role, rss, pss = memory_of(pid)
                    by_role.setdefault(role, []).append((rss, pss))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            total_rss = sum(r for v in by_role.values() for r, _ in v)
            total_pss = sum(p for v in by_role.values() for _, p in v)
            parts = ", ".join(
                f"{len(v)} {role}{'es' if role.endswith('ss') and len(v) > 1 else 's' if len(v) > 1 else ''} "
                f"{sum(p for _, p in v):.0f}"
                for role, v in sorted(by_role.items())
            )
            rows.append({"isolation": isolation, "workers": workers, "rss_mib": total_rss, "pss_mib": total_pss,
                         "processes": {k: v for k, v in by_role.items()}})  # fmt: skip
            print(
                f"isolation {isolation:7s} workers {workers}: PSS {total_pss:6.0f} MiB (RSS {total_rss:6.0f})  "
                f"PSS by role: {parts}",
                flush=True,
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def start(store: Path, tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    port_file = tmp / f"ports-{workers}-{time.monotonic_ns()}.json"
    log = open(tmp / f"server-{workers}.log", "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1", "--http-port", "0",
         "--grpc-port", "0", "--poll-interval", "0", "--port-file", str(port_file), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: see {log.name}")
        time.sleep(0.1)
    ports: dict[str, int] = json.loads(port_file.read_text())
    while httpx.get(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("server not ready")
        time.sleep(0.2)
    return proc, ports


def per_worker(ports: dict[str, int]) -> dict[str, float]:
    """Requests answered so far by each worker (all protocols), from the summed /metrics."""
    text = httpx.get(f"http://127.0.0.1:{ports['http']}/metrics", timeout=30).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tensorgate_worker_requests_total{"):
            worker = line.split('worker="', 1)[1].split('"', 1)[0]
            out[worker] = out.get(worker, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def bodies(work: Path, model: str) -> dict[str, tuple[Path, dict[str, str]]]:
    name, shape = MODELS[model]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    raw = x.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {"name": name, "shape": list(shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    )
    out: dict[str, tuple[Path, dict[str, str]]] = {}
    path = work / f"{model}.json"
    path.write_bytes(
        orjson.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
    )
    out["rest-json"] = (path, {"Content-Type": "application/json"})
    path = work / f"{model}.bin"
    path.write_bytes(header + raw)
    out["rest-binary"] = (
        path,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, "FP32"
    tensor.shape.extend(shape)
    request.raw_input_contents.append(raw)
    path = work / f"{model}.grpc"
    path.write_bytes(loadgen_frame(request.SerializeToString()))
    out["grpc"] = (path, {})
    return out


def loadgen_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(
    url: str, frame: Path, connections: int, streams: int, duration: float, work: Path, name: str
) -> loadgen.Window:
    """h2load over ``connections`` connections (the workers share the port: one connection reaches one worker)."""
    log = work / f"{name}.h2load.log"
    log.unlink(missing_ok=True)
    cmd = [
        loadgen.require("h2load"), "-c", str(connections), "-m", str(streams), "-D", str(max(1, round(duration))),
        "-d", str(frame), "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log), url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    req, finished = loadgen._REQUESTS.search(proc.stdout), loadgen._FINISHED.search(proc.stdout)
    if proc.returncode != 0 or req is None or finished is None:
        raise RuntimeError(f"h2load failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    ok_us = np.array([float(r[2]) for r in rows if r[1].startswith("2")])
    span = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    ok = int(req.group(4))
    pct = lambda q: float(np.percentile(ok_us, q)) / 1e3 if ok_us.size else None  # noqa: E731
    return loadgen.Window(
        tool="h2load", concurrency=connections * streams, duration_s=span, requests=int(req.group(1)), ok=ok,
        errors=int(req.group(5)) + int(req.group(6)), rps=ok / span, p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99),
        mean_ms=float(ok_us.mean()) / 1e3 if ok_us.size else None,
    )  # fmt: skip


def measure(
    ports: dict[str, int], pid: int, model: str, protocol: str, args: argparse.Namespace, work: Path
) -> tuple[loadgen.Window, machine.CpuWindow]:
    path, headers = bodies(work, model)[protocol]
    name = f"{model}-{protocol}"
    with machine.CpuWindow(pid) as cpu:
        if protocol == "grpc":
            window = h2load(
                f"http://127.0.0.1:{ports['grpc']}/inference.GRPCInferenceService/ModelInfer",
                path, args.grpc_connections, max(1, args.concurrency // args.grpc_connections), args.duration, work,
                name,
            )  # fmt: skip
        else:
            window = loadgen.wrk(
                f"http://127.0.0.1:{ports['http']}/v2/models/{model}/infer", path, headers, args.concurrency,
                args.duration, work, name, threads=args.connections if args.concurrency >= args.connections else 1,
            )  # fmt: skip
    return window, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-store", default="demo_store", help="the demo store (built when absent)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, alternating (default 1,2)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (wrk connections)")
    parser.add_argument("--connections", type=int, default=4, help="wrk threads")
    parser.add_argument(
        "--grpc-connections", type=int, default=16,
        help="gRPC connections (h2load -c; streams = concurrency / connections): SO_REUSEPORT spreads connections, "
        "not calls, so a few connections can land unevenly on the workers",
    )  # fmt: skip
    parser.add_argument("--cases", default=",".join(f"{m}:{p}" for m, p in CASES), help="model:protocol,...")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--memory", action="store_true", help="measure memory of workers x isolation instead")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    cases = [tuple(c.split(":", 1)) for c in args.cases.split(",")]
    rows: list[Row] = []
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="tg-workers-") as tmp_name:
            return memory(args, Path(tmp_name))
    with tempfile.TemporaryDirectory(prefix="tg-workers-") as tmp_name:
        tmp = Path(tmp_name)
        store = build_store(tmp / "store", Path(args.demo_store))
        for rnd in range(args.rounds):
            for workers in counts if rnd % 2 == 0 else counts[::-1]:
                proc, ports = start(store, tmp, workers)
                try:
                    for model, protocol in cases:
                        warm = argparse.Namespace(**{**vars(args), "duration": 1})  # not recorded
                        measure(ports, proc.pid, model, protocol, warm, tmp)
                        before = per_worker(ports)
                        window, cpu = measure(ports, proc.pid, model, protocol, args, tmp)
                        if workers > 1:
                            after = per_worker(ports)
                            shares = [after.get(w, 0) - before.get(w, 0) for w in sorted(after)]
                            window.notes.append("spread " + "/".join(f"{n / max(1, sum(shares)):.0%}" for n in shares))
                        row = Row(
                            rnd, workers, model, protocol, window.rps, window.p50_ms, window.p99_ms, window.errors,
                            1e3 * cpu.server_s / max(1, window.ok), 1e3 * cpu.client_s / max(1, window.ok),
                            window.notes,
                        )  # fmt: skip
                        rows.append(row)
                        print(
                            f"round {rnd} workers {workers} {model:9s} {protocol:11s} {row.rps:8.0f} req/s  "
                            f"p99 {row.p99_ms or 0:6.2f} ms  server CPU {row.server_cpu_ms_per_request:.3f} ms/req  "
                            f"errors {row.errors} {' '.join(row.notes)}",
                            flush=True,
                        )
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
    print("\nmedians over rounds (ratio: vs the first worker count)")
    for model, protocol in cases:
        base = None
        for workers in counts:
            mine = [r for r in rows if (r.model, r.protocol, r.workers) == (model, protocol, workers)]
            rps = statistics.median(r.rps for r in mine)
            p99 = statistics.median(r.p99_ms or 0 for r in mine)
            cpu = statistics.median(r.server_cpu_ms_per_request for r in mine)
            base = base or rps
            print(
                f"{model:9s} {protocol:11s} workers {workers}: {rps:8.0f} req/s ({rps / base:.2f}x)  "
                f"p99 {p99:6.2f} ms  server CPU {cpu:.3f} ms/req"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
