"""Shadow: mirrors a share of a route's requests to a candidate variant after the primary has answered, and
compares the two answers. The shadow's answer is never returned and never waited for: at most ``max_inflight``
mirrored calls run at once (the bounded queue), a request beyond that is dropped and counted, and a shadow that
fails is counted, never reported to the client. Recorded in the shadow's own metrics, never as client requests:
its latency, and per output the largest absolute and relative difference and, for a classifier's scores
([batch, classes]), whether each row's argmax agrees.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping

import numpy as np

from gateway.execution.executor import Call
from gateway.lifecycle.model import ModelVersion
from gateway.telemetry.route_metrics import Divergence, ShadowSeries
from model_store.route import ShadowConfig

log = logging.getLogger("tensorgate.shadow")


class Shadow:
    def __init__(
        self,
        config: ShadowConfig,
        series: ShadowSeries,
        lookup: Callable[[], ModelVersion | None],
        rng: random.Random,
    ) -> None:
        self.config = config
        self.series = series
        self.lookup = lookup  # the shadow variant's serving version (None when it cannot serve)
        self.rng = rng
        self.inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(self, primary: ModelVersion, call: Call, answer: Mapping[str, np.ndarray]) -> None:
        """Maybe mirror one answered request (``call`` as the primary ran it, ``answer`` its outputs)."""
        if self.rng.random() >= self.config.share:
            return
        model = self.lookup()
        if model is None or model is primary or model.executor is None:
            return
        if self.inflight >= self.config.max_inflight:
            self.series.count("dropped")
            return
        self.inflight += 1
        model.inflight.begin()  # the shadow's host waits for it before unloading
        task = asyncio.get_running_loop().create_task(self._run(model, call, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, model: ModelVersion, call: Call, answer: Mapping[str, np.ndarray]) -> None:
        try:
            start = time.perf_counter()
            assert model.executor is not None
            outputs, _queue, _compute = await model.executor.run(
                Call(call.inputs, call.outputs, call.signature, None, call.rows)
            )
            self.series.duration.observe(time.perf_counter() - start)
            within = compare(answer, outputs, self.series, self.config.atol, self.config.rtol)
            self.series.count("compared")
            self.series.results["within" if within else "beyond"] = (
                self.series.results.get("within" if within else "beyond", 0) + 1
            )
        except Exception as exc:  # a shadow never fails anything but itself
            log.debug("shadow call to %s failed: %s", model.name, exc)
            self.series.count("failed")
        finally:
            self.inflight -= 1
            model.inflight.end()


def compare(
    primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray], series: ShadowSeries, atol: float, rtol: float
) -> bool:
    """Record each output's divergence in ``series``; whether every output is within ``atol + rtol * |primary|``."""
    within = True
    for name, expected in primary.items():
        found = shadow.get(name)
        d = series.outputs.get(name)
        if d is None:
            d = series.outputs[name] = Divergence()
        if found is None or found.shape != expected.shape:
            d.abs_error.observe(float("inf"))
            d.rel_error.observe(float("inf"))
            d.max_abs = d.max_rel = float("inf")
            within = False
            continue
        if expected.dtype.kind not in "fiu" or found.dtype.kind not in "fiu":
            same = bool(np.array_equal(expected, found))
            error = 0.0 if same else float("inf")
            d.abs_error.observe(error)
            d.rel_error.observe(error)
            d.max_abs, d.max_rel = max(d.max_abs, error), max(d.max_rel, error)
            within = within and same
            continue
        a = expected.astype(np.float64, copy=False)
        b = found.astype(np.float64, copy=False)
        diff = np.abs(a - b)
        scale = np.abs(a)
        abs_error = float(diff.max()) if diff.size else 0.0
        rel_error = float((diff / np.maximum(scale, np.finfo(np.float64).tiny)).max()) if diff.size else 0.0
        d.abs_error.observe(abs_error)
        d.rel_error.observe(rel_error)
        d.max_abs, d.max_rel = max(d.max_abs, abs_error), max(d.max_rel, rel_error)
        within = within and bool(np.all(diff <= atol + rtol * scale))
        if a.ndim >= 2 and a.shape[-1] > 1 and expected.dtype.kind == "f":
            agree = np.argmax(a, axis=-1) == np.argmax(b, axis=-1)
            yes = int(agree.sum())
            d.argmax_rows["true"] = d.argmax_rows.get("true", 0) + yes
            d.argmax_rows["false"] = d.argmax_rows.get("false", 0) + int(agree.size) - yes
    return within
