"""Server-side figures for a bench window: tensorgate_* latency histograms scraped before and after, differenced."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.metrics import STAGES


@dataclass
class Histogram:
    """A cumulative histogram: upper bounds (ascending, +Inf last) with counts, and the sum of observations."""

    bounds: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    total: float = 0.0

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def at(self, bound: float) -> float:
        """Cumulative count at ``bound`` (that of the largest own bound <= it)."""
        found = 0.0
        for b, c in zip(self.bounds, self.counts, strict=True):
            if b > bound:
                break
            found = c
        return found

    def merged(self, other: Histogram) -> Histogram:
        bounds = sorted(set(self.bounds) | set(other.bounds))
        return Histogram(bounds, [self.at(b) + other.at(b) for b in bounds], self.total + other.total)

    def minus(self, before: Histogram) -> Histogram:
        bounds = sorted(set(self.bounds) | set(before.bounds))
        counts = [max(0.0, self.at(b) - before.at(b)) for b in bounds]
        return Histogram(bounds, counts, max(0.0, self.total - before.total))

    def quantile(self, q: float) -> float:
        """Prometheus ``histogram_quantile``: linear interpolation inside the bucket holding rank q*count."""
        if not self.counts or self.count <= 0:
            return math.nan
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for b, c in zip(self.bounds, self.counts, strict=True):
            if c >= rank:
                if math.isinf(b):
                    return lower_bound  # beyond the last finite bucket: its bound is the best estimate
                if c == lower_count:
                    return b
                return lower_bound + (b - lower_bound) * (rank - lower_count) / (c - lower_count)
            lower_bound, lower_count = b, c
        return lower_bound


Snapshot = dict[str, Histogram]  # stage -> histogram of one model and protocol, summed over versions


def parse_snapshot(text: str, model: str, protocol: str) -> Snapshot:
    """The request/queue/compute/overhead histograms of ``model`` over ``protocol`` in a /metrics exposition."""
    model_label = f'model="{model}"'
    protocol_label = f'protocol="{protocol}"'
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("# TYPE tensorgate_")
        or (line.startswith("tensorgate_") and model_label in line and protocol_label in line)
    ]
    per_series: dict[tuple[str, tuple[tuple[str, str], ...]], Histogram] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        stage = family.name.removeprefix("tensorgate_").removesuffix("_duration_seconds")
        if stage not in STAGES or family.type != "histogram":
            continue
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            if labels.get("model") != model or labels.get("protocol") != protocol:
                continue
            key = (stage, tuple(sorted(labels.items())))
            hist = per_series.setdefault(key, Histogram())
            if sample.name.endswith("_bucket"):
                hist.bounds.append(float(sample.labels["le"]))
                hist.counts.append(float(sample.value))
            elif sample.name.endswith("_sum"):
                hist.total = float(sample.value)
    snapshot: Snapshot = {}
    for (stage, _labels), hist in per_series.items():
        order = sorted(range(len(hist.bounds)), key=hist.bounds.__getitem__)
        hist = Histogram([hist.bounds[i] for i in order], [hist.counts[i] for i in order], hist.total)
        snapshot[stage] = snapshot[stage].merged(hist) if stage in snapshot else hist
    return snapshot


@dataclass
class ServerWindow:
    """The gateway's own view of one window: request count, mean per stage and request-latency quantiles (ms)."""

    requests: int
    mean_ms: dict[str, float]
    quantiles_ms: dict[str, float]

    def to_json(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"requests": self.requests}
        for stage, value in self.mean_ms.items():
            out[f"{stage}_mean_ms"] = value
        for name, value in self.quantiles_ms.items():
            out[f"{name}_ms"] = value
        return out


def window(before: Snapshot, after: Snapshot, quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> ServerWindow:
    """Difference two snapshots of one model and protocol into the figures of the window between them."""
    deltas = {stage: after[stage].minus(before.get(stage, Histogram())) for stage in STAGES if stage in after}
    request = deltas.get("request", Histogram())
    means: dict[str, float] = {}
    for stage, hist in deltas.items():
        means[stage] = hist.total / hist.count * 1e3 if hist.count > 0 else math.nan
    qs = {f"p{round(q * 100):d}": request.quantile(q) * 1e3 for q in quantiles}
    return ServerWindow(round(request.count), means, qs)
