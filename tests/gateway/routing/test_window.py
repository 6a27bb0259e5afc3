"""LatencyWindow: exact shares at the SLA boundaries, quantiles, and samples sliding out of the window."""

from __future__ import annotations

from gateway.routing.window import LatencyWindow
from tests.gateway.routing.fakes import FakeClock


def test_share_within_a_target_boundary_is_exact_and_the_quantile_is_its_bucket() -> None:
    clock = FakeClock()
    window = LatencyWindow(10.0, clock, extra_bounds=[0.0123])
    for _ in range(98):
        window.record(0.012)
    for _ in range(2):
        window.record(0.013)
    assert window.count() == 100
    assert window.share_within(0.0123) == 0.98
    assert window.quantile(0.98) == 0.0123
    assert window.quantile(0.99) is not None and window.quantile(0.99) > 0.0123


def test_samples_leave_the_window_as_time_passes() -> None:
    clock = FakeClock()
    window = LatencyWindow(10.0, clock)
    for _ in range(10):
        window.record(0.5)
    clock.advance(5.0)
    for _ in range(10):
        window.record(0.001)
    assert window.count() == 20
    clock.advance(5.5)
    assert window.count() == 10
    assert window.quantile(0.99) == 0.001
    clock.advance(60.0)
    assert window.count() == 0
    assert window.quantile(0.5) is None
    assert window.share_within(0.001) == 1.0
