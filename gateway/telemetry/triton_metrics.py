"""TritonFamilies: Triton's per-model metric families (``nv_inference_*``, labels ``model`` and ``version``) for
``--metrics-compat triton``, derived at scrape time from what is recorded anyway, so requests pay nothing for them.

Where each number comes from (Triton derives the same ones from the same statistics):

- request success, inference count (batch items), execution count (runtime calls) and the cumulative request,
  queue and compute durations: the statistics each loaded version keeps for the V2 statistics extension
  (``gateway.telemetry.stats.ModelStats``), in microseconds as Triton reports them;
- request failures by Triton's ``reason`` (REJECTED, CANCELED, BACKEND, OTHER; every reason shown from the first
  scrape at 0, as Triton does): the gateway's own request counters by outcome code for that version, summed over
  protocols. A full queue or a passed deadline is REJECTED, a cancelled call CANCELED, a runtime error BACKEND and
  anything else (bad input, a model not ready) OTHER.

Counters are typed ``counter`` in the Prometheus text format, as Triton's exporter writes them, and ``unknown`` in
OpenMetrics, whose counters must end in ``_total``: either way Prometheus stores them under Triton's names, so
``rate(nv_inference_request_success[1m])`` works unchanged. Each version's lines are rendered once and reused
until one of its numbers moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.telemetry.metrics import PROTOCOLS

if TYPE_CHECKING:
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.stats import ModelStats

#: The loaded versions, each as ((model, version, runtime), its statistics); called from the rendering thread.
LoadedStats = Callable[[], Iterable[tuple[tuple[str, str, str], "ModelStats"]]]

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
#: outcome code -> Triton's failure reason (anything not listed is OTHER)
REASON_OF_CODE = {
    "RESOURCE_EXHAUSTED": "REJECTED",
    "DEADLINE_EXCEEDED": "REJECTED",
    "CANCELLED": "CANCELED",
    "INTERNAL": "BACKEND",
}

#: (name, help) in Triton's order and wording
FAMILIES: tuple[tuple[str, str], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)"),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)"),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
    ),
)  # fmt: skip
_FAILURE = 1  # index of the failure family in FAMILIES


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class TritonFamilies:
    """Renders the ``nv_inference_*`` families of every loaded version; one per Metrics, any thread."""

    def __init__(self, loaded: LoadedStats) -> None:
        self.loaded = loaded
        # (model, version, runtime) -> (what the text was rendered at, one text per family)
        self._cache: dict[tuple[str, str, str], tuple[tuple[int, ...], tuple[str, ...]]] = {}

    def render(self, metrics: Metrics, om: bool) -> bytes:
        kind = "unknown" if om else "counter"
        per_version: dict[tuple[str, str], tuple[str, ...]] = {}
        live: set[tuple[str, str, str]] = set()
        for labels, stats in list(self.loaded()):
            if (labels[0], labels[1]) in per_version:
                continue  # one series per (model, version), as Triton's labels allow
            live.add(labels)
            per_version[(labels[0], labels[1])] = self._texts(metrics, labels, stats)
        for gone in [k for k in list(self._cache) if k not in live]:
            self._cache.pop(gone, None)
        out: list[str] = []
        for i, (name, doc) in enumerate(FAMILIES):
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            out.extend(texts[i] for texts in per_version.values())
        return "".join(out).encode()

    def _texts(self, metrics: Metrics, labels: tuple[str, str, str], stats: ModelStats) -> tuple[str, ...]:
        # What changes whenever a number shown changes, read before the numbers: the last field a success writes
        # (ModelStats.record_success), the execution count, and the stamp each request series moves after its
        # counts. A request recorded while this reads changes the key, so the next scrape renders it.
        series = [metrics._series.get((*labels, protocol)) for protocol in PROTOCOLS]
        key = (stats.compute_output.count, stats.execution_count, *(s.stamp if s is not None else -1 for s in series))
        cached = self._cache.get(labels)
        if cached is not None and cached[0] == key:
            return cached[1]
        failures = dict.fromkeys(FAILURE_REASONS, 0)
        for found in series:
            for code, count in list(found.codes.items()) if found is not None else ():
                if code != "OK":
                    failures[REASON_OF_CODE.get(code, "OTHER")] += count
        values = (
            stats.success.count,
            None,  # the failure family: one line per reason
            stats.inference_count,
            stats.execution_count,
            stats.success.ns // 1000,
            stats.queue.ns // 1000,
            stats.compute_input.ns // 1000,
            stats.compute_infer.ns // 1000,
            stats.compute_output.ns // 1000,
        )
        tags = f'model="{_escape(labels[0])}",version="{_escape(labels[1])}"'
        texts = tuple(
            "".join(f'{name}{{{tags},reason="{r}"}} {failures[r]}\n' for r in FAILURE_REASONS)
            if i == _FAILURE
            else f"{name}{{{tags}}} {values[i]}\n"
            for i, (name, _doc) in enumerate(FAMILIES)
        )
        self._cache[labels] = (key, texts)
        return texts
