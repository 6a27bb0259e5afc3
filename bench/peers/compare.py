"""Side-by-side comparison of tensorgate with Seldon MLServer and KServe on the same ONNX models.

For each model and protocol the servers run in the order peer, tensorgate, peer (for every peer), one at a time,
each a subprocess on 127.0.0.1 free ports. Before timing, each server's reply is checked against the ONNX model
run in-process; before each window the script waits for the machine to be quiet. REST is driven by ``wrk`` (JSON
bodies for everyone, plus binary-extension bodies for tensorgate), gRPC by ``h2load`` posting a framed
ModelInferRequest over 16 connections (``--grpc-connections``). Per window: throughput, p50/p90/p99, and CPU seconds
per request of the server's process tree and of the load generator. ``--overload`` instead drives tensorgate at
concurrency 256 on a model whose queue holds 8 and reports the share of rejections, the p99 of accepted requests and
whether the server still answers.

    bench/peers/setup.sh
    .venv/bin/python bench/peers/compare.py --models mlp --protocols rest,grpc --duration 12
    .venv/bin/python bench/peers/compare.py --overload --models cnn
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
from tritonclient.grpc import service_pb2_grpc

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import machine  # noqa: E402
import models  # noqa: E402
import payloads  # noqa: E402
import servers  # noqa: E402

ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results"
PEERS = ("mlserver", "kserve")


@dataclass
class Bodies:
    """One model's request in every encoding, written to files for the load generators, and the expected output."""

    model: str
    x: np.ndarray
    expected: np.ndarray
    json_path: Path
    binary_path: Path
    binary_header_length: int
    grpc_frame_path: Path
    grpc_request: Any


def session(onnx: Path) -> ort.InferenceSession:
    """The reference session: the same settings every server uses (1 intra-op thread, sequential)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(onnx), sess_options=options, providers=["CPUExecutionProvider"])


def prepare_bodies(store: Path, model: str, workdir: Path) -> Bodies:
    x = models.sample_input(model)
    (expected,) = session(store / model / "1" / "model.onnx").run([payloads.OUTPUT], {payloads.INPUT: x})
    workdir.mkdir(parents=True, exist_ok=True)
    json_path = workdir / f"{model}.json.body"
    json_path.write_bytes(payloads.json_body(x))
    binary, header_length = payloads.binary_body(x)
    binary_path = workdir / f"{model}.binary.body"
    binary_path.write_bytes(binary)
    request = payloads.grpc_request(model, x)
    frame_path = workdir / f"{model}.grpc.body"
    frame_path.write_bytes(payloads.grpc_frame(request.SerializeToString()))
    return Bodies(model, x, expected, json_path, binary_path, header_length, frame_path, request)


def variants(kind: str, protocols: list[str]) -> list[str]:
    """The request encodings a server is measured with: peers have no binary tensor extension over REST."""
    out: list[str] = []
    if "rest" in protocols:
        out += ["rest-json", "rest-binary"] if kind == "tensorgate" else ["rest-json"]
    if "grpc" in protocols:
        out.append("grpc")
    return out


def rest_headers(variant: str, bodies: Bodies) -> dict[str, str]:
    if variant == "rest-binary":
        return {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(bodies.binary_header_length),
        }
    return {"Content-Type": "application/json"}


def verify(server: servers.Server, bodies: Bodies, variant: str) -> dict[str, Any]:
    """Send one request and compare the reply with the in-process ONNX output. For gRPC, also the number of
    DATA bytes of a good reply (what h2load should receive per request)."""
    result: dict[str, Any] = {"variant": variant}
    try:
        if variant == "grpc":
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                response, call = stub.ModelInfer.with_call(bodies.grpc_request, timeout=30)
                result["grpc_status"] = call.code().name
            got = payloads.decode_grpc(response)
            result["data_bytes"] = len(response.SerializeToString()) + 5
        else:
            body = bodies.binary_path if variant == "rest-binary" else bodies.json_path
            url = f"{server.base_url}/v2/models/{server.model}/infer"
            r = httpx.post(url, content=body.read_bytes(), headers=rest_headers(variant, bodies), timeout=30)
            result["http_status"] = r.status_code
            if r.status_code != 200:
                raise ValueError(f"HTTP {r.status_code}: {r.text[:300]}")
            got = payloads.decode_rest(r.content, r.headers.get("inference-header-content-length"))
    except (grpc.RpcError, httpx.HTTPError, ValueError, KeyError) as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        return result
    same_shape = tuple(got.shape) == tuple(bodies.expected.shape)
    err = float(np.max(np.abs(got - bodies.expected))) if same_shape else float("inf")
    result.update(ok=same_shape and bool(np.allclose(got, bodies.expected, atol=1e-4, rtol=1e-3)), max_abs_err=err)
    if not same_shape:
        result["error"] = f"shape {list(got.shape)} != {list(bodies.expected.shape)}"
    return result


def drive(
    server: servers.Server,
    bodies: Bodies,
    variant: str,
    concurrency: int,
    duration: float,
    workdir: Path,
    name: str,
    data_bytes: int | None,
    grpc_connections: int = 1,
) -> loadgen.Window:
    if variant == "grpc":
        url = f"http://127.0.0.1:{server.grpc_port}/inference.GRPCInferenceService/ModelInfer"
        return loadgen.h2load(
            url, bodies.grpc_frame_path, concurrency, duration, workdir, name, data_bytes, grpc_connections
        )
    body = bodies.binary_path if variant == "rest-binary" else bodies.json_path
    url = f"{server.base_url}/v2/models/{server.model}/infer"
    return loadgen.wrk(url, body, rest_headers(variant, bodies), concurrency, duration, workdir, name)


def measure(
    server: servers.Server,
    bodies: Bodies,
    variant: str,
    args: argparse.Namespace,
    workdir: Path,
    name: str,
    data_bytes: int | None,
) -> dict[str, Any]:
    """Quiet wait, a short warm-up, then one timed window with the server's and the client's CPU."""
    waited, busy = machine.wait_quiet(args.quiet_cores, args.quiet_timeout)
    drive(
        server, bodies, variant, args.concurrency, args.warmup, workdir, f"{name}.warmup", data_bytes,
        args.grpc_connections,
    )  # fmt: skip
    with machine.CpuWindow(server.pid) as cpu:
        window = drive(
            server, bodies, variant, args.concurrency, args.duration, workdir, name, data_bytes, args.grpc_connections
        )
    ok = max(1, window.ok)
    row: dict[str, Any] = {
        "rps": window.rps,
        "p50_ms": window.p50_ms,
        "p90_ms": window.p90_ms,
        "p99_ms": window.p99_ms,
        "mean_ms": window.mean_ms,
        "requests": window.requests,
        "errors": window.errors,
        "server_cpu_ms_per_req": cpu.server_s / ok * 1e3,
        "client_cpu_ms_per_req": cpu.client_s / ok * 1e3,
        "server_cores": cpu.server_s / cpu.wall_s,
        "client_cores": cpu.client_s / cpu.wall_s,
        "other_cores": cpu.other_cores,
        "quiet_wait_s": round(waited, 1),
        "busy_cores_before": round(busy, 2),
        "server_processes": machine.tree_size(server.pid),
        "window": window.to_dict(),
        "notes": list(window.notes),
    }
    if busy > args.quiet_cores:
        row["notes"].append(f"machine not quiet: {busy:.2f} cores busy before the window")
    if not server.alive():
        row["notes"].append(f"server died during the window (exit code {server.proc.returncode})")
    return row


def inprocess_limit(onnx: Path, x: np.ndarray, n_sessions: int, duration: float) -> dict[str, Any]:
    """Requests/s of ``n_sessions`` ORT sessions (same settings), each called in a loop from its own thread."""
    sessions = [session(onnx) for _ in range(n_sessions)]
    for s in sessions:
        for _ in range(5):
            s.run([payloads.OUTPUT], {payloads.INPUT: x})
    counts = [0] * n_sessions
    stop = threading.Event()

    def loop(i: int) -> None:
        s = sessions[i]
        while not stop.is_set():
            s.run([payloads.OUTPUT], {payloads.INPUT: x})
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n_sessions)]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    total = sum(counts)
    return {
        "sessions": n_sessions,
        "rps": total / seconds,
        "cpu_ms_per_req": cpu / max(1, total) * 1e3,
        "latency_ms": seconds / max(1, total) * n_sessions * 1e3,
    }


def label(kind: str, workers: int) -> str:
    """A server at one worker setting, as rows and tables name it: ``kserve/w2``."""
    return f"{kind}/w{workers}"


def kind_of(server_label: str) -> str:
    return server_label.split("/", 1)[0]


def run_slot(
    kind: str,
    workers: int,
    model: str,
    store: Path,
    bodies: Bodies,
    args: argparse.Namespace,
    workdir: Path,
    slot: int,
    log: Any,
) -> list[dict[str, Any]]:
    """Start one server, verify every variant, measure every verified one, stop it."""
    batching = models.MODELS[models.base_name(model)].batching if model.endswith("_batched") else None
    base = {"model": model, "server": label(kind, workers), "workers": workers, "slot": slot}
    t0 = time.monotonic()
    try:
        server = servers.start(kind, store, model, workdir, batching, workers)
    except (servers.ServerFailed, subprocess.CalledProcessError) as exc:
        log(f"  {kind}: did not start: {exc}")
        return [{**base, "variant": v, "error": f"did not start: {exc}"[:2000]} for v in variants(kind, args.protocols)]
    rows: list[dict[str, Any]] = []
    try:
        log(f"  [{slot}] {label(kind, workers)} ready in {time.monotonic() - t0:.1f}s (pid {server.pid})")
        for variant in variants(kind, args.protocols):
            check = verify(server, bodies, variant)
            row: dict[str, Any] = {**base, "variant": variant, "verify": check, "settings": server.settings}
            if not check["ok"]:
                log(f"    {variant}: reply does not match the model: {check.get('error', check)}")
                row["error"] = "reply does not match the model"
                rows.append(row)
                continue
            try:
                name = f"{model}.{slot}-{kind}-w{workers}.{variant}"
                row.update(measure(server, bodies, variant, args, workdir, name, check.get("data_bytes")))
            except RuntimeError as exc:
                row["error"] = str(exc)[:2000]
                log(f"    {variant}: load generator failed: {exc}")
            else:
                log(
                    f"    {variant:<11} {row['rps']:8.0f} req/s  p50 {_fmt(row['p50_ms'])}  p99 {_fmt(row['p99_ms'])}"
                    f"  server {row['server_cpu_ms_per_req']:.2f} ms CPU/req  client {row['client_cores']:.2f} cores"
                    + (f"  [{'; '.join(row['notes'])}]" if row["notes"] else "")
                )
            rows.append(row)
    finally:
        server.stop()
    return rows


def _fmt(ms: float | None) -> str:
    return "     -  " if ms is None else f"{ms:6.2f}ms"


def compare(args: argparse.Namespace, store: Path, workdir: Path, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"inprocess": [], "runs": []}
    for model in args.models:
        bodies = prepare_bodies(store, model, workdir)
        onnx = store / model / "1" / "model.onnx"
        machine.wait_quiet(args.quiet_cores, args.quiet_timeout)
        for n in (1, 2):
            limit = inprocess_limit(onnx, bodies.x, n, args.inprocess_duration)
            out["inprocess"].append({"model": model, **limit})
            log(f"{model}: in-process limit with {n} ORT session(s): {limit['rps']:.0f} req/s")
        for slot, (kind, workers) in enumerate(slot_order(args)):
            out["runs"] += run_slot(kind, workers, model, store, bodies, args, workdir, slot, log)
    return out


def slot_order(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Per peer: the peer at each of its worker settings, tensorgate at each of its settings, the peer again in
    reverse order, so every tensorgate window sits between two windows of each peer setting (drift cancels).
    ``--peers ""`` measures tensorgate alone (against the in-process limit)."""
    ours = [("tensorgate", w) for w in args.workers["tensorgate"]]
    order: list[tuple[str, int]] = []
    for peer in args.peers:
        theirs = [(peer, w) for w in args.workers[peer]]
        order += theirs + ours + theirs[::-1]
    return order or ours


def overload(args: argparse.Namespace, store: Path, workdir: Path, log: Any) -> list[dict[str, Any]]:
    """tensorgate at high concurrency on a model whose queue holds 8: rejections, accepted p99, survival."""
    rows: list[dict[str, Any]] = []
    for base_model in args.models:
        model = f"{models.base_name(base_model)}_q8"
        bodies = prepare_bodies(store, model, workdir)
        server = servers.start("tensorgate", store, model, workdir, None, args.workers["tensorgate"][-1])
        try:
            for protocol in args.protocols:
                variant = "rest-binary" if protocol == "rest" else "grpc"
                row: dict[str, Any] = {
                    "model": model,
                    "variant": variant,
                    "concurrency": args.overload_concurrency,
                    "max_queue_size": models.OVERLOAD_QUEUE,
                    "verify_before": verify(server, bodies, variant),
                }
                waited, busy = machine.wait_quiet(args.quiet_cores, args.quiet_timeout)
                with machine.CpuWindow(server.pid) as cpu:
                    if protocol == "rest":
                        url = f"{server.base_url}/v2/models/{model}/infer"
                        headers = rest_headers(variant, bodies)
                        window = loadgen.wrk_by_status(
                            url,
                            bodies.binary_path,
                            headers,
                            args.overload_concurrency,
                            args.duration,
                            workdir,
                            f"{model}.overload.{variant}",
                        )
                        rejected = window.codes.get("429", 0)
                    else:
                        window, client_cpu = loadgen.grpc_by_status(
                            server.grpc_port, bodies.grpc_request, args.overload_concurrency, args.duration
                        )
                        cpu.add_client_seconds(client_cpu)
                        rejected = window.codes.get("RESOURCE_EXHAUSTED", 0)
                t_health = time.perf_counter()
                health: dict[str, int | str] = {}
                for path in ("/v2/health/live", "/v2/health/ready"):
                    try:
                        health[path] = httpx.get(server.base_url + path, timeout=5).status_code
                    except httpx.HTTPError as exc:
                        health[path] = f"{type(exc).__name__}: {exc}"
                health_ms = (time.perf_counter() - t_health) * 1e3
                row.update(
                    window=window.to_dict(),
                    requests=window.requests,
                    accepted=window.ok,
                    rejected=rejected,
                    rejected_share=rejected / max(1, window.requests),
                    other_errors=window.requests - window.ok - rejected,
                    accepted_rps=window.rps,
                    accepted_p50_ms=window.p50_ms,
                    accepted_p99_ms=window.p99_ms,
                    server_cores=cpu.server_s / cpu.wall_s,
                    client_cores=cpu.client_s / cpu.wall_s,
                    other_cores=cpu.other_cores,
                    busy_cores_before=round(busy, 2),
                    quiet_wait_s=round(waited, 1),
                    alive_after=server.alive(),
                    health_after=health,
                    health_after_ms=health_ms,
                    verify_after=verify(server, bodies, variant),
                )
                rows.append(row)
                log(
                    f"overload {model} {variant} c{args.overload_concurrency}: {row['requests']} requests, "
                    f"{row['rejected_share']:.1%} rejected, {row['other_errors']} other errors, accepted "
                    f"{row['accepted_rps']:.0f}/s p99 {_fmt(row['accepted_p99_ms'])}; after: alive "
                    f"{row['alive_after']}, health {health} in {health_ms:.0f} ms, "
                    f"inference ok {row['verify_after']['ok']}"
                )
        finally:
            server.stop()
    return rows


# --- report ---------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(result: dict[str, Any], peers: list[str]) -> list[dict[str, Any]]:
    """Per model, variant and server: the mean of its windows; plus tensorgate's ratio to each bracketing peer."""
    rows: list[dict[str, Any]] = []
    runs = [r for r in result["runs"] if "rps" in r]
    keys = sorted({(r["model"], r["variant"], r["server"]) for r in runs}, key=lambda k: (k[0], k[1], k[2]))
    for model, variant, server in keys:
        group = [r for r in runs if (r["model"], r["variant"], r["server"]) == (model, variant, server)]
        rows.append(
            {
                "model": model,
                "variant": variant,
                "server": server,
                "windows": len(group),
                "rps": _mean([r["rps"] for r in group]),
                "rps_runs": [round(r["rps"], 1) for r in group],
                "p50_ms": _mean([r["p50_ms"] for r in group if r["p50_ms"] is not None]),
                "p99_ms": _mean([r["p99_ms"] for r in group if r["p99_ms"] is not None]),
                "server_cpu_ms_per_req": _mean([r["server_cpu_ms_per_req"] for r in group]),
                "client_cpu_ms_per_req": _mean([r["client_cpu_ms_per_req"] for r in group]),
                "client_cores": _mean([r["client_cores"] for r in group]),
                "other_cores": _mean([r["other_cores"] for r in group]),
                "errors": sum(r["errors"] for r in group),
            }
        )
    # Each tensorgate setting against each peer at that peer's best worker setting: tensorgate's windows that sit
    # between the peer's windows, against the mean of the best peer setting's windows.
    for row in rows:
        if kind_of(row["server"]) != "tensorgate":
            continue
        ratios = {}
        for peer in peers:
            peer_variant = "rest-json" if row["variant"].startswith("rest") else "grpc"
            peer_runs = [
                r
                for r in runs
                if kind_of(r["server"]) == peer and r["model"] == row["model"] and r["variant"] == peer_variant
            ]
            if not peer_runs:
                continue
            by_setting: dict[str, list[float]] = {}
            for r in peer_runs:
                by_setting.setdefault(r["server"], []).append(r["rps"])
            best_label, best_rps = max(((k, statistics.fmean(v)) for k, v in by_setting.items()), key=lambda kv: kv[1])
            slots = sorted(r["slot"] for r in peer_runs)
            between = [
                r
                for r in runs
                if r["server"] == row["server"]
                and r["model"] == row["model"]
                and r["variant"] == row["variant"]
                and slots[0] < r["slot"] < slots[-1]
            ]
            if between and best_rps:
                ratios[best_label] = _mean([r["rps"] for r in between]) / best_rps  # type: ignore[operator]
        row["throughput_vs_peer"] = ratios
    return rows


def print_tables(result: dict[str, Any], summary: list[dict[str, Any]]) -> None:
    print()
    print("In-process limit (ORT sessions called from threads, 1 intra-op thread each):")
    for r in result.get("inprocess", []):
        print(f"  {r['model']:<20} {r['sessions']} session(s): {r['rps']:9.0f} req/s  ({r['latency_ms']:.3f} ms/call)")
    print()
    header = (
        f"{'model':<20} {'variant':<11} {'server':<13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv CPU ms/req':>14} {'client cores':>12} {'other cores':>11} {'errors':>6}  runs (req/s) / vs peer"
    )
    print(header)
    print("-" * len(header))
    for r in summary:
        vs = r.get("throughput_vs_peer")
        tail = " ".join(f"{x:.0f}" for x in r["rps_runs"])
        if vs:
            tail += "  " + ", ".join(f"{v:.2f}x {p}" for p, v in vs.items())
        print(
            f"{r['model']:<20} {r['variant']:<11} {r['server']:<13} {r['rps']:8.0f} {_num(r['p50_ms'])} "
            f"{_num(r['p99_ms'])} {r['server_cpu_ms_per_req']:14.2f} {r['client_cores']:12.2f} "
            f"{r['other_cores']:11.2f} {r['errors']:6d}  {tail}"
        )
    failed = [r for r in result.get("runs", []) if "error" in r]
    for r in failed:
        print(f"FAILED {r['model']} {r['server']} {r['variant']} (slot {r['slot']}): {r['error'][:300]}")


def _num(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:8.2f}"


def environment() -> dict[str, Any]:
    def first_line(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable: {exc}"
        return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else ""

    peers = {}
    for kind in PEERS:
        stamp = servers.PEERS_TOOLS / kind / ".stamp"
        peers[kind] = stamp.read_text().strip() if stamp.exists() else "not installed"
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    return {
        "cores": machine.cores(),
        "loadavg": loadavg,
        "onnxruntime": ort.__version__,
        "peers": peers,
        "wrk": first_line(["wrk", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "git_commit": first_line(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "python": sys.version.split()[0],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,cnn,transformer", help="store entries, e.g. mlp,cnn,cnn_batched")
    p.add_argument("--protocols", default="rest,grpc")
    p.add_argument("--peers", default="mlserver,kserve")
    p.add_argument(
        "--workers",
        default="tensorgate=1;mlserver=0;kserve=1",
        help="worker settings per server, e.g. 'tensorgate=1,2;mlserver=0,2;kserve=1,2' (tensorgate --workers, "
        "MLServer parallel_workers (0: inference in the serving process), KServe --workers)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (connections / streams)")
    p.add_argument(
        "--grpc-connections", type=int, default=16,
        help="gRPC connections sharing --concurrency streams (servers with several processes on one port spread "
        "connections, not calls: with one connection only one process would serve)",
    )  # fmt: skip
    p.add_argument("--duration", type=float, default=12.0, help="seconds per measured window")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each window")
    p.add_argument("--inprocess-duration", type=float, default=3.0)
    p.add_argument("--quiet-cores", type=float, default=0.3, help="busy cores below which the machine is quiet")
    p.add_argument("--quiet-timeout", type=float, default=20.0, help="longest wait for quiet before measuring")
    p.add_argument("--store", type=Path, default=RESULTS / "peers-store", help="where the models are built")
    p.add_argument("--overload", action="store_true", help="run the overload check on tensorgate instead")
    p.add_argument("--overload-concurrency", type=int, default=256)
    p.add_argument("--out", type=Path, help="JSON result path (default bench/results/peers-<timestamp>.json)")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.protocols = [x for x in args.protocols.split(",") if x]
    args.peers = [x for x in args.peers.split(",") if x]
    for m in args.models:
        if models.base_name(m) not in models.MODELS:
            p.error(f"unknown model {m!r}; known: {list(models.MODELS)} (+ _batched, _q8 variants)")
    if set(args.protocols) - {"rest", "grpc"}:
        p.error("--protocols takes rest and/or grpc")
    if set(args.peers) - set(PEERS):
        p.error(f"--peers takes {', '.join(PEERS)}")
    args.workers = parse_workers(args.workers, p)
    return args


def parse_workers(text: str, p: argparse.ArgumentParser) -> dict[str, list[int]]:
    out = {"tensorgate": [1], "mlserver": [0], "kserve": [1]}
    for part in filter(None, (x.strip() for x in text.split(";"))):
        kind, _, values = part.partition("=")
        if kind not in out:
            p.error(f"--workers: unknown server {kind!r}; known: {', '.join(out)}")
        try:
            settings = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            p.error(f"--workers: {part!r}: expected {kind}=N[,N...] with integers")
        if not settings or min(settings) < (0 if kind == "mlserver" else 1):
            p.error(f"--workers: {part!r}: give at least one setting, >= {0 if kind == 'mlserver' else 1}")
        out[kind] = settings
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen.require("wrk")
    loadgen.require("h2load")
    if not args.overload:
        for peer in args.peers:
            servers.peer_python(peer)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = args.out or RESULTS / f"peers-{stamp}.json"
    workdir = RESULTS / f"peers-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)

    store = models.build_store(args.store, sorted({models.base_name(m) for m in args.models}), log)
    result: dict[str, Any] = {"started": stamp, "args": _jsonable(vars(args)), "environment": environment()}
    log(f"store {store}; logs and bodies in {workdir}")
    if args.overload:
        result["overload"] = overload(args, store, workdir, log)
    else:
        result.update(compare(args, store, workdir, log))
        result["summary"] = summarize(result, args.peers)
        print_tables(result, result["summary"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {out_path}")
    return 0


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
