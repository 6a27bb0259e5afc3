"""SlaPolicy with a fake clock and synthetic latencies: choice, exploration share, hysteresis, none meeting."""

from __future__ import annotations

import random
from collections import Counter

from gateway.routing.sla import SlaPolicy
from gateway.routing.window import LatencyWindow
from model_store.route import Choice
from tests.gateway.routing.fakes import FakeClock

TARGET = 0.020  # p99 20 ms


class Bench:
    """Two or three variants' windows under one fake clock, and the policy over them."""

    def __init__(self, n: int = 2, **choice: float) -> None:
        self.clock = FakeClock()
        settings = {"explore": 0.0, "hold_s": 5.0, "margin": 0.1, "min_samples": 10, "window_s": 10.0, **choice}
        self.choice = Choice(**settings)  # type: ignore[arg-type]
        targets = {"p99": TARGET}
        bounds = SlaPolicy.extra_bounds(targets, self.choice.margin)
        self.windows = [LatencyWindow(self.choice.window_s, self.clock, bounds) for _ in range(n)]
        self.policy = SlaPolicy(
            [f"v{i}" for i in range(n)], self.windows, targets, self.choice, self.clock, random.Random(3)
        )
        self.eligible = list(range(n))

    def latency(self, i: int, seconds: float, count: int = 50) -> None:
        for _ in range(count):
            self.windows[i].record(seconds)

    def step(self, seconds: float = 0.5) -> int:
        """Time passes; one request chooses."""
        self.clock.advance(seconds)
        return self.policy.choose(self.eligible, None)


def test_the_first_variant_serves_while_nothing_is_known_and_while_it_meets_the_sla() -> None:
    b = Bench()
    assert b.step() == 0
    b.latency(0, 0.010)
    b.latency(1, 0.002)  # faster, but the first in preference order meets the SLA: it keeps the traffic
    assert b.step() == 0
    assert b.policy.sla_met


def test_a_variant_that_breaks_the_sla_loses_the_traffic_at_the_next_evaluation() -> None:
    b = Bench(interval_s=1.0)
    b.latency(0, 0.010)
    b.latency(1, 0.012)
    assert b.step() == 0
    b.latency(0, 0.080, count=200)  # v0 turns slow: p99 of the window far above 20 ms
    b.clock.advance(0.5)
    assert b.policy.choose(b.eligible, None) == 0  # not re-evaluated within interval_s
    assert b.step(0.6) == 1
    assert b.policy.sla_met
    assert b.policy.describe()["choice"] == "v1"


def test_hysteresis_the_preferred_variant_takes_the_traffic_back_only_comfortably_under_the_sla_after_hold() -> None:
    b = Bench(hold_s=5.0, margin=0.1, window_s=10.0)
    b.latency(0, 0.080)
    b.latency(1, 0.005)
    assert b.step() == 1
    b.clock.advance(11.0)  # v0's slow samples leave the window
    b.latency(1, 0.005)
    b.latency(0, 0.019)  # meets 20 ms, but not under 18 ms: no move back
    assert all(b.step(0.5) == 1 for _ in range(12))
    b.clock.advance(11.0)
    b.latency(1, 0.005)
    b.latency(0, 0.010)  # comfortably under: back to the preferred variant (hold_s has long passed)
    assert b.step() == 0
    assert b.policy.switches == 2


def test_hold_keeps_a_fresh_choice_even_if_the_preferred_variant_recovers_at_once() -> None:
    b = Bench(hold_s=5.0, window_s=2.0)
    b.latency(0, 0.080)
    b.latency(1, 0.005)
    assert b.step() == 1  # moved at t
    b.clock.advance(2.5)  # v0's slow samples are gone
    b.latency(0, 0.005)
    b.latency(1, 0.005)
    assert b.step(0.5) == 1  # t + 3 s: within hold_s
    b.clock.advance(2.5)
    b.latency(0, 0.005)
    b.latency(1, 0.005)
    assert b.step(0.0) == 0  # t + 5.5 s


def test_exploration_sends_its_share_to_the_others() -> None:
    b = Bench(n=3, explore=0.1, min_samples=1)
    b.latency(0, 0.005)
    counts = Counter(b.policy.choose(b.eligible, None) for _ in range(20_000))
    assert abs(counts[0] / 20_000 - 0.90) < 0.01
    assert abs(counts[1] / 20_000 - 0.05) < 0.01
    assert abs(counts[2] / 20_000 - 0.05) < 0.01


def test_when_none_meets_the_best_serves_and_the_policy_says_so() -> None:
    b = Bench(n=3)
    b.latency(0, 0.200)
    b.latency(1, 0.050)
    b.latency(2, 0.090)
    assert b.step() == 1
    assert not b.policy.sla_met
    b.latency(2, 0.045, count=1000)  # v2 a little better than v1 (not by the margin): no move
    assert b.step() == 1
    b.latency(1, 0.010, count=5000)  # v1 meets again
    b.clock.advance(10.5)
    b.latency(1, 0.010)
    assert b.step() == 1
    assert b.policy.sla_met


def test_a_chosen_variant_that_can_no_longer_serve_is_replaced_at_once() -> None:
    b = Bench(interval_s=60.0)
    b.latency(0, 0.005)
    b.latency(1, 0.005)
    assert b.step() == 0
    assert b.policy.choose([1], None) == 1  # v0 unloaded or its breaker open: no waiting for interval_s
    assert b.policy.current() == 1


def test_an_unknown_variant_is_not_moved_to() -> None:
    b = Bench(min_samples=10)
    b.latency(0, 0.080)
    b.latency(1, 0.001, count=3)  # too few samples to trust
    assert b.step() == 0
    assert not b.policy.sla_met
