"""Policy: how a route picks the variant for one request among those that can serve now.

Implementations, one module each: ``fixed`` (one variant), ``weighted`` (canary shares, sticky per request key),
``sla`` (the preferred variant that meets the route's latency SLA). ``make_policy`` builds a route's policy from
its config. Policies see variants as indices into the route's variant list (its preference order); fallback and
the circuit breaker are the route's, whatever the policy.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.routing.window import LatencyWindow
from model_store.route import RouteConfig


class Policy(Protocol):
    def choose(self, eligible: Sequence[int], key: str | None) -> int:
        """The variant for one request; ``eligible`` (never empty) are the indices that can serve, in order."""
        ...

    def current(self) -> int | None:
        """The variant the policy sends most traffic to now (None when that depends on each request)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ``/v2/models/<route>`` and the repository index show of the policy's state."""
        ...


def make_policy(
    config: RouteConfig,
    windows: Sequence[LatencyWindow],
    clock: Callable[[], float],
    rng: random.Random,
) -> Policy:
    from gateway.routing.fixed import FixedPolicy
    from gateway.routing.sla import SlaPolicy
    from gateway.routing.weighted import WeightedPolicy

    names = config.names
    if config.policy == "fixed":
        return FixedPolicy(names, names.index(config.variant) if config.variant else 0)
    if config.policy == "weighted":
        weights = [v.weight if v.weight is not None else 1.0 for v in config.variants]
        return WeightedPolicy(names, weights, rng)
    return SlaPolicy(names, windows, config.sla.targets(), config.choice, clock, rng)
