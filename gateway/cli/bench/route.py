"""``tensorgate bench --route NAME``: drives one route under closed-loop load over REST and shows the policy act —
which variant served each second next to each variant's latency (the clients' own p99 per variant per second,
and the router's sliding-window p99 it decides on), with the route's SLA target. Terminal summary, JSON, and an
HTML page with the two plots stacked on one time axis.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import numpy as np
from rich.table import Table

from gateway.cli.bench.load import random_inputs, rest_payload

VARIANT_HEADER = "tensorgate-variant"


class RouteBenchError(RuntimeError):
    """The route cannot be driven (not a route, not reachable)."""


async def drive_route(
    base_url: str, route: str, concurrency: int, duration: float, *, batch: int = 1, seed: int = 0, poll: float = 0.5
) -> dict[str, Any]:
    """Closed-loop load for ``duration`` seconds; every request's (time, variant, latency) and the route's state
    polled every ``poll`` seconds."""
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30.0, limits=httpx.Limits(max_connections=concurrency + 2)
    ) as client:
        meta = await client.get(f"/v2/models/{route}")
        if meta.status_code != 200:
            raise RouteBenchError(f"GET /v2/models/{route}: HTTP {meta.status_code} {meta.text[:200]}")
        doc = meta.json()
        described = (doc.get("parameters") or {}).get("route")
        if not described:
            raise RouteBenchError(f"{route!r} is a model, not a route")
        body, headers = rest_payload(random_inputs(doc["inputs"], batch, seed))
        requests: list[tuple[float, str, float, str]] = []  # (t, variant, seconds, error)
        states: list[tuple[float, dict[str, Any]]] = []
        start = time.perf_counter()
        stop = start + duration

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    reply = await client.post(f"/v2/models/{route}/infer", content=body, headers=headers)
                    error = "" if reply.status_code == 200 else f"HTTP {reply.status_code}"
                    variant = reply.headers.get(VARIANT_HEADER, "")
                except httpx.HTTPError as exc:
                    error, variant = type(exc).__name__, ""
                t1 = time.perf_counter()
                requests.append((t1 - start, variant, t1 - t0, error))

        async def poller() -> None:
            while time.perf_counter() < stop:
                try:
                    reply = await client.get(f"/v2/models/{route}")
                    states.append((time.perf_counter() - start, reply.json()["parameters"]["route"]))
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                await asyncio.sleep(poll)

        await asyncio.gather(poller(), *(worker() for _ in range(concurrency)))
        await asyncio.sleep(0.5)  # the last mirrored calls finish
        metrics = await client.get("/metrics")
    doc = summarize(route, described, requests, states, concurrency, duration)
    doc["shadow"] = shadow_figures(metrics.text if metrics.status_code == 200 else "", route)
    return doc


def shadow_figures(exposition: str, route: str) -> dict[str, Any]:
    """The route's shadow traffic as /metrics reports it (cumulative since the gateway started): calls by outcome,
    comparisons within/beyond tolerance, mean latency, and per output the largest abs/rel error and argmax rows."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.startswith("tensorgate_shadow_") or labels.get("route") != route:
                continue
            variant = out.setdefault(labels["variant"], {"outputs": {}})
            name = sample.name[len("tensorgate_shadow_") :]
            if name == "requests_total":
                variant.setdefault("calls", {})[labels["outcome"]] = sample.value
            elif name == "comparisons_total":
                variant.setdefault("comparisons", {})[labels["result"]] = sample.value
            elif name in ("duration_seconds_sum", "duration_seconds_count"):
                variant[name] = sample.value
            elif name in ("max_abs_error", "max_rel_error"):
                variant["outputs"].setdefault(labels["output"], {})[name] = sample.value
            elif name == "argmax_rows_total":
                rows = variant["outputs"].setdefault(labels["output"], {}).setdefault("argmax_rows", {})
                rows[labels["agree"]] = sample.value
    for variant in out.values():
        count = variant.pop("duration_seconds_count", 0.0)
        total = variant.pop("duration_seconds_sum", 0.0)
        variant["mean_ms"] = total / count * 1000 if count else None
    return out


def summarize(
    route: str,
    described: dict[str, Any],
    requests: list[tuple[float, str, float, str]],
    states: list[tuple[float, dict[str, Any]]],
    concurrency: int,
    duration: float,
) -> dict[str, Any]:
    variants = [v["name"] for v in described.get("variants", [])]
    seconds = int(np.ceil(duration))
    served: dict[str, list[int]] = {v: [0] * seconds for v in variants}
    latency: dict[str, list[list[float]]] = {v: [[] for _ in range(seconds)] for v in variants}
    for t, variant, spent, error in requests:
        if error or variant not in served:
            continue
        second = min(int(t), seconds - 1)
        served[variant][second] += 1
        latency[variant][second].append(spent)
    counts = Counter(v for _t, v, _s, e in requests if not e)
    total = sum(counts.values())
    per_variant: dict[str, dict[str, Any]] = {}
    for v in variants:
        took = [s for _t, name, s, e in requests if name == v and not e]
        per_variant[v] = {
            "requests": counts.get(v, 0),
            "share": counts.get(v, 0) / total if total else 0.0,
            "p50_ms": float(np.percentile(took, 50)) * 1000 if took else None,
            "p99_ms": float(np.percentile(took, 99)) * 1000 if took else None,
        }
    choices = [(t, s.get("choice") or s.get("variant") or "") for t, s in states]
    switches = [(t, c) for (t, c), (_t0, before) in zip(choices[1:], choices, strict=False) if c != before]
    window: defaultdict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for t, s in states:
        for row in s.get("variants", []):
            window[row["name"]].append((t, row.get("latency_ms", {}).get("p99")))
    return {
        "route": route,
        "policy": described.get("policy"),
        "sla_ms": described.get("sla", {}),
        "concurrency": concurrency,
        "duration_s": duration,
        "requests": len(requests),
        "errors": sum(1 for r in requests if r[3]),
        "variants": per_variant,
        "timeline": {
            "served": served,
            "client_p99_ms": {
                v: [float(np.percentile(b, 99)) * 1000 if b else None for b in latency[v]] for v in variants
            },
            "window_p99_ms": {v: window.get(v, []) for v in variants},
            "choice": choices,
        },
        "switches": switches,
    }


def route_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title=f"route {doc['route']} ({doc['policy']}): {doc['requests']} requests in {doc['duration_s']:.0f}s at "
        f"concurrency {doc['concurrency']}, {doc['errors']} failed, {len(doc['switches'])} switches"
    )
    for column in ("variant", "requests", "share", "client p50 ms", "client p99 ms"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, row in doc["variants"].items():
        p50, p99 = row["p50_ms"], row["p99_ms"]
        table.add_row(
            name, str(row["requests"]), f"{100 * row['share']:.1f}%", _ms(p50), _ms(p99)
        )  # fmt: skip
    return table


def shadow_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for variant, figures in doc.get("shadow", {}).items():
        calls = ", ".join(f"{k} {v:.0f}" for k, v in sorted(figures.get("calls", {}).items()))
        results = ", ".join(f"{k} {v:.0f}" for k, v in sorted(figures.get("comparisons", {}).items()))
        mean = figures.get("mean_ms")
        lines.append(
            f"shadow {variant}: calls {calls or '-'}; comparisons {results or '-'}"
            + (f"; mean {mean:.2f} ms" if mean is not None else "")
        )
        for output, o in sorted(figures["outputs"].items()):
            rows = o.get("argmax_rows", {})
            agree = f"; argmax agrees on {rows.get('true', 0):.0f} of {sum(rows.values()):.0f} rows" if rows else ""
            lines.append(
                f"  output {output}: max abs error {o.get('max_abs_error', 0):.4g}, "
                f"max rel error {o.get('max_rel_error', 0):.4g}{agree}"
            )
    return lines


def route_svg(doc: dict[str, Any]) -> str:
    """Stacked requests per second by serving variant, above each variant's p99 (client per second, router
    window) with the route's p99 SLA target, on one time axis."""
    from matplotlib.figure import Figure

    from gateway.cli.bench.plots import _svg

    timeline = doc["timeline"]
    variants = list(timeline["served"])
    fig = Figure(figsize=(10, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    seconds = np.arange(len(next(iter(timeline["served"].values()), [])))
    colors = {v: f"C{i}" for i, v in enumerate(variants)}
    top.stackplot(
        seconds, *[timeline["served"][v] for v in variants], labels=variants, colors=[colors[v] for v in variants],
        step="post", alpha=0.8,
    )  # fmt: skip
    for t, choice in doc["switches"]:
        top.axvline(t, color="black", linestyle=":", linewidth=1)
        top.annotate(f"→ {choice}", (t, 0), xytext=(3, 3), textcoords="offset points", fontsize=8)
    top.set_ylabel("requests / s by serving variant")
    top.legend(loc="upper right", fontsize=8)
    top.grid(True, alpha=0.3)
    for v in variants:
        client = [np.nan if x is None else x for x in timeline["client_p99_ms"][v]]
        bottom.plot(
            seconds + 0.5, client, marker="o", markersize=3, linestyle="-", color=colors[v], label=f"{v} client p99"
        )
        window = [(t, np.nan if x is None else x) for t, x in timeline["window_p99_ms"][v]]
        if window:
            ts, xs = zip(*window, strict=True)
            bottom.plot(ts, xs, linestyle="--", color=colors[v], alpha=0.7, label=f"{v} router window p99")
    if doc["sla_ms"].get("p99"):
        bottom.axhline(doc["sla_ms"]["p99"], color="red", linestyle="-.", label="route SLA p99")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since the start")
    bottom.legend(loc="upper right", fontsize=7)
    bottom.grid(True, alpha=0.3)
    return _svg(fig)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def route_html(doc: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{name}</td><td>{row['requests']}</td><td>{100 * row['share']:.1f}%</td>"
        f"<td>{_ms(row['p50_ms'])}</td><td>{_ms(row['p99_ms'])}</td></tr>"
        for name, row in doc["variants"].items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tensorgate bench: route "
        f"{doc['route']}</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px}}</style>"
        f"</head><body><h1>Route {doc['route']} ({doc['policy']})</h1><p>{doc['requests']} requests in "
        f"{doc['duration_s']:.0f}s at concurrency {doc['concurrency']}, {doc['errors']} failed, "
        f"{len(doc['switches'])} switches of the policy's choice.</p><table><tr><th>variant</th><th>requests</th>"
        f"<th>share</th><th>client p50 ms</th><th>client p99 ms</th></tr>{rows}</table>"
        + "".join(f"<pre>{line}</pre>" for line in shadow_lines(doc))
        + f"{route_svg(doc)}</body></html>"
    )
