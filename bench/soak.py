"""Soak: a gateway with API keys and mTLS under closed-loop load (half REST, half gRPC) at concurrency 32 for 10
minutes; counts every error and samples the server's RSS, reporting its growth after the first minute's warm-up
(target: zero errors, RSS growth under 5%).

    .venv/bin/python bench/soak.py [--minutes 10] [--concurrency 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from secured_gateway import SecuredGateway, Tally, drive, percentile


async def soak(gw: SecuredGateway, minutes: float, concurrency: int, window: float) -> dict[str, object]:
    samples: list[tuple[float, int]] = []
    total = Tally()
    start = time.monotonic()
    while time.monotonic() - start < minutes * 60:
        tally = await drive(gw, "both", concurrency, window)
        total.latencies.extend(tally.latencies)
        for what, n in tally.errors.items():
            total.errors[what] = total.errors.get(what, 0) + n
        samples.append((time.monotonic() - start, gw.rss_bytes()))
        print(f"{samples[-1][0]:6.0f}s  {len(tally.latencies) / window:7.0f} req/s  "
              f"p99 {percentile(tally.latencies, 99) * 1000:6.1f} ms  rss {samples[-1][1] / 2**20:7.1f} MiB  "
              f"errors {sum(total.errors.values())}", flush=True)  # fmt: skip
    warm = [rss for t, rss in samples if t >= 60] or [rss for _, rss in samples]
    return {
        "minutes": minutes, "concurrency": concurrency, "requests": len(total.latencies),
        "errors": total.errors, "p50_ms": percentile(total.latencies, 50) * 1000,
        "p99_ms": percentile(total.latencies, 99) * 1000,
        "rss_after_warmup_mib": warm[0] / 2**20, "rss_end_mib": warm[-1] / 2**20,
        "rss_growth_percent": 100.0 * (warm[-1] - warm[0]) / warm[0],
        "rss_samples_mib": [round(r / 2**20, 1) for _, r in samples],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--window", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gw = SecuredGateway(auth=True, tls=True).start()
    try:
        result = asyncio.run(soak(gw, args.minutes, args.concurrency, args.window))
    finally:
        gw.stop()
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples_mib"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    ok = not result["errors"] and float(result["rss_growth_percent"]) < 5.0  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
