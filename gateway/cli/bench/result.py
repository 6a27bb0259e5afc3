"""Bench results: one Run per variant x protocol x load (a closed-loop concurrency or an open-loop rate), the SLA
verdict of each, the winner, and the capacity (highest rate meeting the SLA) a sweep found."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gateway.cli.bench.load import LoadWindow
from gateway.cli.bench.scrape import ServerWindow

OBJECTIVES = ("p50", "p90", "p95", "p99")


@dataclass
class Variant:
    """A served model under test, as its V2 metadata describes it."""

    model: str
    runtime: str
    sla_ms: dict[str, float]  # objective (p50, p99 ...) -> target in ms; empty when the model has none
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    @classmethod
    def from_metadata(cls, doc: dict[str, Any], sla_default: dict[str, float] | None = None) -> Variant:
        params = doc.get("parameters") or {}
        sla_doc = params.get("sla") or {}
        sla = {k.removesuffix("_ms"): float(v) for k, v in sla_doc.items() if v is not None}
        if not sla and sla_default:
            sla = dict(sla_default)
        return cls(
            model=str(doc["name"]),
            runtime=str(params.get("runtime") or doc.get("platform") or "unknown"),
            sla_ms={k: sla[k] for k in OBJECTIVES if k in sla},
            inputs=list(doc.get("inputs") or []),
            outputs=list(doc.get("outputs") or []),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sla_verdict(latency_ms: dict[str, float], errors: int, sla_ms: dict[str, float]) -> tuple[bool | None, list[str]]:
    """(met, misses): met is None when there is no objective; any error fails the SLA."""
    if not sla_ms:
        return None, []
    misses: list[str] = []
    for objective, target in sla_ms.items():
        seen = latency_ms.get(objective, math.nan)
        if math.isnan(seen) or seen > target:
            misses.append(f"{objective} {seen:.2f} ms > {target:g} ms")
    if errors:
        misses.append(f"{errors} errors")
    return not misses, misses


@dataclass
class Run:
    """One measured window of one variant at one concurrency over one protocol."""

    model: str
    runtime: str
    protocol: str
    concurrency: int
    batch: int
    duration_s: float
    requests: int
    ok: int
    throughput_rps: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    server: dict[str, float | int]
    client_cpu_s: float
    sla_ms: dict[str, float] = field(default_factory=dict)
    sla_met: bool | None = None
    sla_misses: list[str] = field(default_factory=list)
    mode: str = "closed"  # closed: N in flight; open: requests sent at rate_rps; sweep: an open-loop sweep step
    rate_rps: float | None = None
    max_inflight: int = 0
    send_lag_p99_ms: float | None = None  # open loop: p99 of how late the client sent (its own backlog or stalls)

    @classmethod
    def measured(cls, variant: Variant, protocol: str, batch: int, load: LoadWindow, server: ServerWindow) -> Run:
        latency = load.percentiles_ms()
        errors = dict(load.errors)
        met, misses = sla_verdict(latency, sum(errors.values()), variant.sla_ms)
        return cls(
            model=variant.model,
            runtime=variant.runtime,
            protocol=protocol,
            concurrency=load.concurrency,
            batch=batch,
            duration_s=load.elapsed_s,
            requests=load.requests,
            ok=len(load.latencies_ns),
            throughput_rps=load.throughput,
            latency_ms=latency,
            errors=errors,
            server=server.to_json(),
            client_cpu_s=load.cpu_s,
            sla_ms=dict(variant.sla_ms),
            sla_met=met,
            sla_misses=misses,
            mode="closed" if load.rate is None else "open",
            rate_rps=load.rate,
            max_inflight=load.max_inflight,
            send_lag_p99_ms=float(np.percentile(load.lags_ns, 99) / 1e6) if load.lags_ns else None,
        )

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["error_count"] = self.error_count
        doc["items_per_s"] = self.throughput_rps * self.batch
        return doc


def verdict_runs(runs: list[Run], verdict: str = "open") -> list[Run]:
    """The runs the SLA verdict is taken from: the open loop's (sweep steps included) when there are any and
    ``verdict`` is "open" — a closed loop never queues more than its concurrency, so it hides backlog — else the
    closed loop's."""
    opened = [r for r in runs if r.mode != "closed"]
    return opened if verdict == "open" and opened else [r for r in runs if r.mode == "closed"]


def winner(runs: list[Run]) -> dict[str, Any] | None:
    """The run with the most throughput among those meeting their SLA.

    When no variant has an SLA at all, the error-free run with the most throughput wins (``basis`` says which).
    """
    met = [r for r in runs if r.sla_met]
    basis = "sla"
    if not met and all(not r.sla_ms for r in runs):
        met = [r for r in runs if r.error_count == 0 and r.ok > 0]
        basis = "throughput (no SLA configured)"
    if not met:
        return None
    best = max(met, key=lambda r: r.throughput_rps)
    return {
        "model": best.model,
        "runtime": best.runtime,
        "protocol": best.protocol,
        "concurrency": best.concurrency,
        "throughput_rps": best.throughput_rps,
        "p50_ms": best.latency_ms.get("p50"),
        "p99_ms": best.latency_ms.get("p99"),
        "sla_ms": best.sla_ms,
        "basis": basis,
        "mode": best.mode,
        "rate_rps": best.rate_rps,
    }


def capacity(steps: list[Run]) -> dict[str, Any]:
    """What a sweep of one variant and protocol found: the highest offered rate whose run met the SLA."""
    met = [r for r in steps if r.sla_met]
    best = max(met, key=lambda r: r.rate_rps or 0.0) if met else None
    first = steps[0]
    return {
        "model": first.model,
        "runtime": first.runtime,
        "protocol": first.protocol,
        "sla_ms": first.sla_ms,
        "max_rate_rps": best.rate_rps if best else None,
        "p99_ms": best.latency_ms.get("p99") if best else None,
        "throughput_rps": best.throughput_rps if best else None,
        "tried_rps": [r.rate_rps for r in steps],
    }
