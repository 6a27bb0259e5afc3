"""The primary's p99 with shadow traffic on vs off (target: within 10%), and what the shadow measured.

Starts ``tensorgate serve`` on a local store holding an MLP (the primary) and a candidate exported from perturbed
weights, with two routes over the same primary: ``direct`` (no shadow) and ``mirrored`` (``--share`` of its
requests mirrored to the candidate). A closed-loop gRPC client drives the two routes in alternating windows, so
both see the same machine; prints the p99 medians and their ratio, then the shadow's latency and divergence as
the gateway's /metrics reports them.

    .venv/bin/python bench/shadow_p99.py [--rounds 4] [--window 4] [--concurrency 4] [--share 0.1]
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

import httpx
import numpy as np
import onnx
from hot_swap import drive, p99  # bench/ is the script's folder: the same closed-loop gRPC client
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families


def build_mlp(folder: Path, perturb: float = 0.0) -> None:
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((784, 512)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((512, 10)).astype(np.float32) * 0.05
    if perturb:
        w2 = (w2 + np.random.default_rng(2).standard_normal(w2.shape) * perturb).astype(np.float32)
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


def shadow_report(http: str) -> list[str]:
    """The shadow's figures from /metrics: calls by outcome, comparisons, mean latency, divergence per output."""
    text = httpx.get(f"http://{http}/metrics", timeout=10).text
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("tensorgate_shadow_"):
                values.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    lines = []
    for key, value in sorted(values.get("tensorgate_shadow_requests_total", {}).items()):
        lines.append(f"shadow calls {dict(key)}: {value:.0f}")
    for key, value in sorted(values.get("tensorgate_shadow_comparisons_total", {}).items()):
        lines.append(f"comparisons {dict(key)}: {value:.0f}")
    total = sum(values.get("tensorgate_shadow_duration_seconds_sum", {}).values())
    count = sum(values.get("tensorgate_shadow_duration_seconds_count", {}).values())
    if count:
        lines.append(f"shadow mean latency: {total / count * 1000:.2f} ms over {count:.0f} calls")
    for key, value in sorted(values.get("tensorgate_shadow_max_abs_error", {}).items()):
        rel = values.get("tensorgate_shadow_max_rel_error", {}).get(key, 0.0)
        lines.append(f"max abs error {dict(key)}: {value:.4g} (max rel {rel:.4g})")
    for key, value in sorted(values.get("tensorgate_shadow_argmax_rows_total", {}).items()):
        lines.append(f"argmax rows {dict(key)}: {value:.0f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=4.0, help="seconds per measurement window")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--share", type=float, default=0.1, help="share of the mirrored route's requests shadowed")
    parser.add_argument("--perturb", type=float, default=0.01, help="noise on the candidate's output weights")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tg-shadow-"))
    store = tmp / "store"
    build_mlp(store / "mlp" / "1")
    build_mlp(store / "candidate" / "1", perturb=args.perturb)
    for name, text in (
        ("direct", "policy: fixed\nvariants: [mlp]\n"),
        ("mirrored", f"policy: fixed\nvariants: [mlp]\nshadow: {{model: candidate, share: {args.share}}}\n"),
    ):
        (store / name).mkdir()
        (store / name / "route.yaml").write_text(text)
    port_file = tmp / "ports.json"
    cmd = [sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1",
           "--http-port", "0", "--grpc-port", "0", "--poll-interval", "0", "--port-file", str(port_file),
           "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        while not port_file.exists():
            time.sleep(0.1)
        ports = json.loads(port_file.read_text())
        address, http = f"127.0.0.1:{ports['grpc']}", f"127.0.0.1:{ports['http']}"
        while httpx.get(f"http://{http}/v2/health/ready", timeout=5).status_code != 200:
            time.sleep(0.2)
        for route in ("direct", "mirrored"):
            asyncio.run(drive(address, args.concurrency, 1.0, route))  # warm the client and server
        off, on, errors = [], [], 0
        for round_ in range(args.rounds):
            order = ("direct", "mirrored") if round_ % 2 == 0 else ("mirrored", "direct")
            for route in order:
                lat, err = asyncio.run(drive(address, args.concurrency, args.window, route))
                (off if route == "direct" else on).append(p99(lat))
                errors += err
            print(f"round {round_ + 1}: shadow off p99 {off[-1]:.2f} ms, on p99 {on[-1]:.2f} ms", flush=True)
        ratio = statistics.median(on) / statistics.median(off)
        print()
        print("| windows | shadow share | p99 off (median) | p99 on (median) | ratio | failed requests |")
        print("|---|---|---|---|---|---|")
        p99_off, p99_on = statistics.median(off), statistics.median(on)
        print(f"| {args.rounds} x {args.window:.0f} s, c{args.concurrency} | {args.share:g} | "
              f"{p99_off:.2f} ms | {p99_on:.2f} ms | {ratio:.2f}x | {errors} |")  # fmt: skip
        print(f"\ntarget: p99 with shadowing within 10% of without -> {'MET' if ratio <= 1.10 else 'NOT MET'}\n")
        for line in shadow_report(http):
            print(line)
        return 0 if errors == 0 else 1
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
