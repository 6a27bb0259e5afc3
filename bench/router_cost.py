"""What routing costs per request, in-process: resolving a plain model (VersionRouter) against planning a request
on a route of three variants under each policy (RouteRouter: route lookup, the variants' READY versions and
signature check, breakers, the policy's choice, the plan object), and the plan's bookkeeping once the request
is answered (breaker, latency window, route metrics). Medians of timeit-style repeats, in microseconds.

    .venv/bin/python bench/router_cost.py [--loops 20000] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.lifecycle.model import READY, ModelEntry, ModelVersion, RouteEntry, VersionStatus
from gateway.routing.router import VersionRouter
from gateway.routing.routes import RouteRouter
from gateway.telemetry.metrics import Metrics
from model_store import ModelConfig
from model_store.route import RouteConfig
from runtimes import Signature, TensorSpec

SIGNATURE = Signature(inputs=(TensorSpec("x", "FP32", (-1, 16)),), outputs=(TensorSpec("y", "FP32", (-1, 4)),))


class Catalog:
    """The host's two published maps, as the routers read them."""

    def __init__(self) -> None:
        self.models: dict[str, ModelEntry] = {}
        self._routes: dict[str, RouteEntry] = {}

    @property
    def routes(self) -> Mapping[str, RouteEntry]:
        return self._routes

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def route(self, name: str) -> RouteEntry | None:
        return self._routes.get(name)


def build() -> tuple[Catalog, RouteRouter]:
    catalog = Catalog()
    for name in ("v_onnx", "v_torch_export", "v_torch_aoti", "plain"):
        entry = catalog.models[name] = ModelEntry(name, ModelConfig())
        for version in (1, 2):
            entry.versions[version] = ModelVersion(
                name, version, entry.config, signature=SIGNATURE, status=VersionStatus(READY)
            )
    variants = "[v_onnx, v_torch_export, v_torch_aoti]"
    for policy, extra in (
        ("fixed", ""),
        ("weighted", ""),
        ("sla", "sla: {p99_ms: 20, p50_ms: 5}\n"),
    ):
        config = RouteConfig.parse(f"policy: {policy}\nvariants: {variants}\n{extra}")
        catalog._routes[policy] = RouteEntry(policy, config, "store")
    return catalog, RouteRouter(catalog, Metrics().routes)


def per_call_us(fn: Callable[[], object], loops: int, repeats: int) -> float:
    times = timeit.repeat(fn, number=loops, repeat=repeats)
    return statistics.median(times) / loops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    catalog, router = build()
    versions = VersionRouter(catalog)
    rows: dict[str, float] = {
        "model: VersionRouter.resolve": per_call_us(lambda: versions.resolve("plain"), args.loops, args.repeats),
        "model: RouteRouter.plan": per_call_us(lambda: router.plan("plain"), args.loops, args.repeats),
    }
    for policy in ("fixed", "weighted", "sla"):
        rows[f"route {policy}: plan"] = per_call_us(lambda p=policy: router.plan(p), args.loops, args.repeats)  # type: ignore[misc]

        def whole(p: str = policy) -> None:
            _model, plan = router.plan(p, key=None)
            assert plan is not None
            plan.served(0.002)

        rows[f"route {policy}: plan + served"] = per_call_us(whole, args.loops, args.repeats)
    rows["route weighted: plan with a sticky key"] = per_call_us(
        lambda: router.plan("weighted", key="customer-42"), args.loops, args.repeats
    )
    width = max(len(k) for k in rows)
    print(f"{'per request':<{width}}  median µs ({args.repeats} x {args.loops})")
    for name, us in rows.items():
        print(f"{name:<{width}}  {us:8.2f}")
    worst = max(v for k, v in rows.items() if k.startswith("route"))
    print(f"\nworst route: {worst:.2f} µs (target < 20 µs): {'met' if worst < 20 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
