"""What API keys and TLS cost: the same MLP (784 -> 512 -> 10, ONNX, batch 1) served plain, with API keys, with
mTLS and with both, driven closed-loop over REST and gRPC at one concurrency; rounds alternate the order, and the
table shows medians over rounds and each configuration's throughput and p50 relative to plain, from one run.

    .venv/bin/python bench/security_cost.py [--rounds 3] [--duration 5] [--concurrency 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from secured_gateway import SecuredGateway, drive, percentile

CONFIGS = ((False, False), (True, False), (False, True), (True, True))


async def measure(gateways: list[SecuredGateway], rounds: int, duration: float, concurrency: int) -> dict[str, list]:
    rows: dict[str, list[dict[str, float]]] = {}
    for r in range(rounds):
        order = gateways[r % len(gateways) :] + gateways[: r % len(gateways)]
        for gw in order:
            for protocol in ("rest", "grpc"):
                await drive(gw, protocol, concurrency, 1.0)  # warm the connections
                tally = await drive(gw, protocol, concurrency, duration)
                rows.setdefault(f"{gw.label}/{protocol}", []).append({
                    "rps": len(tally.latencies) / duration, "p50_ms": percentile(tally.latencies, 50) * 1000,
                    "p99_ms": percentile(tally.latencies, 99) * 1000, "errors": sum(tally.errors.values()),
                })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gateways = [SecuredGateway(auth=a, tls=t).start() for a, t in CONFIGS]
    try:
        rows = asyncio.run(measure(gateways, args.rounds, args.duration, args.concurrency))
    finally:
        for gw in gateways:
            gw.stop()
    summary = {}
    head = f"{'config/protocol':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    print(head + f" {'req/s vs plain':>15} {'p50 vs plain':>13}")
    for protocol in ("rest", "grpc"):
        base = rows[f"plain/{protocol}"]
        base_rps = statistics.median(r["rps"] for r in base)
        base_p50 = statistics.median(r["p50_ms"] for r in base)
        for gw in gateways:
            key = f"{gw.label}/{protocol}"
            rps = statistics.median(r["rps"] for r in rows[key])
            p50 = statistics.median(r["p50_ms"] for r in rows[key])
            p99 = statistics.median(r["p99_ms"] for r in rows[key])
            errors = sum(r["errors"] for r in rows[key])
            summary[key] = {"rps": rps, "p50_ms": p50, "p99_ms": p99, "rps_ratio": rps / base_rps,
                            "p50_ratio": p50 / base_p50, "errors": errors}  # fmt: skip
            print(f"{key:22} {rps:8.0f} {p50:8.2f} {p99:8.2f} {rps / base_rps:15.2f} {p50 / base_p50:13.2f}"
                  + (f"  errors {errors}" if errors else ""))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "summary": summary,
                                         "rounds": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
