"""The bench report's plots as inline SVG: latency vs concurrency, throughput vs concurrency, server breakdown."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import Any

from matplotlib import rc_context, rcParams
from matplotlib.figure import Figure

PERCENTILES = (("p50", "#1f77b4"), ("p90", "#ff7f0e"), ("p99", "#d62728"))
LINESTYLES = {"rest": "-", "grpc": "--"}
MARKERS = {"rest": "o", "grpc": "s"}
STAGE_COLORS = {"queue": "#9ecae1", "compute": "#3182bd", "overhead": "#fd8d3c"}
# Text stays text (small, selectable) and ids are stable, so reports diff cleanly.
_SVG_SETTINGS: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "tensorgate-bench"}


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with rc_context(_SVG_SETTINGS):  # type: ignore[arg-type]  # keys are valid rcParams
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _series(runs: Iterable[dict[str, Any]], model: str, protocol: str) -> list[dict[str, Any]]:
    chosen = [
        r for r in runs if r["model"] == model and r["protocol"] == protocol and r.get("mode", "closed") == "closed"
    ]
    return sorted(chosen, key=lambda r: r["concurrency"])


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _concurrency_axis(ax: Any, levels: list[int]) -> None:
    if len(levels) > 2 and max(levels) / min(levels) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels)
    ax.set_xticklabels([str(n) for n in levels])
    ax.set_xlabel("concurrency (requests in flight)")
    ax.grid(True, alpha=0.3)


def latency_svg(doc: dict[str, Any]) -> str:
    """One panel per variant: client p50/p90/p99 against concurrency per protocol, with the SLA targets."""
    variants = doc["variants"]
    protocols = doc["settings"]["protocols"]
    levels = doc["settings"]["concurrency"]
    cols = min(3, max(1, len(variants)))
    rows = math.ceil(len(variants) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, variant in enumerate(variants):
        ax = axes[i // cols][i % cols]
        for protocol in protocols:
            series = _series(doc["runs"], variant["model"], protocol)
            xs = [r["concurrency"] for r in series]
            for name, color in PERCENTILES:
                ys = [_nan(r["latency_ms"].get(name)) for r in series]
                ax.plot(xs, ys, LINESTYLES.get(protocol, "-"), color=color, marker=MARKERS.get(protocol, "o"),
                        markersize=4, label=f"{name} {protocol}")  # fmt: skip
        for objective, color in (("p50", "#1f77b4"), ("p99", "#d62728")):
            target = variant["sla_ms"].get(objective)
            if target is not None:
                ax.axhline(target, color=color, linestyle=":", linewidth=1.5, label=f"SLA {objective} {target:g} ms")
        ax.set_title(f"{variant['model']} ({variant['runtime']})", fontsize=10)
        ax.set_ylabel("client latency (ms)")
        ax.set_ylim(bottom=0)
        _concurrency_axis(ax, levels)
        ax.legend(fontsize=7, ncol=2)
    for j in range(len(variants), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    return _svg(fig)


def throughput_svg(doc: dict[str, Any]) -> str:
    """Requests per second against concurrency, one line per variant and protocol; hollow markers miss the SLA."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(doc["variants"]):
        color = colors[i % len(colors)]
        for protocol in doc["settings"]["protocols"]:
            series = _series(doc["runs"], variant["model"], protocol)
            xs = [r["concurrency"] for r in series]
            ys = [r["throughput_rps"] for r in series]
            ax.plot(xs, ys, LINESTYLES.get(protocol, "-"), color=color, label=f"{variant['model']} {protocol}")
            for r in series:
                filled = r["sla_met"] is not False
                ax.plot([r["concurrency"]], [r["throughput_rps"]], MARKERS.get(protocol, "o"), color=color,
                        markerfacecolor=color if filled else "white", markersize=7)  # fmt: skip
    best = doc.get("winner")
    if best:
        ax.plot([best["concurrency"]], [best["throughput_rps"]], "*", color="gold", markersize=18,
                markeredgecolor="black", label=f"winner: {best['model']} {best['protocol']}")  # fmt: skip
    ax.set_ylabel("throughput (req/s)")
    ax.set_ylim(bottom=0)
    _concurrency_axis(ax, doc["settings"]["concurrency"])
    ax.legend(fontsize=8)
    ax.set_title("throughput (filled marker: SLA met, hollow: missed)", fontsize=10)
    return _svg(fig)


def breakdown_svg(doc: dict[str, Any]) -> str:
    """Per run: the gateway's mean queue + compute + overhead, and the client's mean latency around it."""
    runs = sorted(
        (r for r in doc["runs"] if r.get("mode", "closed") == "closed"),
        key=lambda r: (r["model"], r["protocol"], r["concurrency"]),
    )
    fig = Figure(figsize=(10.0, 1.4 + 0.32 * len(runs)), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r['model']} {r['protocol']} c={r['concurrency']}" for r in runs]
    ys = list(range(len(runs)))
    left = [0.0] * len(runs)
    for stage, color in STAGE_COLORS.items():
        widths = [_nan(r["server"].get(f"{stage}_mean_ms")) for r in runs]
        widths = [0.0 if math.isnan(w) else w for w in widths]
        ax.barh(ys, widths, left=left, color=color, height=0.6, label=f"server {stage}")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    client = [_nan(r["latency_ms"].get("mean")) for r in runs]
    ax.plot(client, ys, "k|", markersize=14, markeredgewidth=2, label="client mean (incl. network, client)")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean latency (ms)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("where the time goes: gateway overhead vs runtime compute", fontsize=10)
    return _svg(fig)
