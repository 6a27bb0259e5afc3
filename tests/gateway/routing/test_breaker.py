"""Breaker: closed -> open after consecutive failures -> half-open (one trial) -> closed or open again."""

from __future__ import annotations

from gateway.routing.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from tests.gateway.routing.fakes import FakeClock


def test_consecutive_failures_open_it_and_a_success_in_between_resets_the_count() -> None:
    clock = FakeClock()
    breaker = Breaker(clock, failures=3, open_s=5.0)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.available()
    breaker.failure()
    assert breaker.state == OPEN
    assert not breaker.available()
    assert breaker.failures == 5


def test_after_the_open_period_exactly_one_trial_goes_through_and_its_success_closes_it() -> None:
    clock = FakeClock()
    breaker = Breaker(clock, failures=1, open_s=5.0)
    breaker.failure()
    clock.advance(4.9)
    assert not breaker.available()
    clock.advance(0.2)
    assert breaker.available()
    breaker.acquire()
    assert breaker.state == HALF_OPEN
    assert not breaker.available()  # the trial is running: nobody else
    breaker.success()
    assert breaker.state == CLOSED and breaker.available()


def test_a_failed_trial_opens_it_again_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = Breaker(clock, failures=2, open_s=5.0)
    breaker.failure()
    breaker.failure()
    clock.advance(5.0)
    breaker.acquire()
    breaker.failure()  # one failure is enough while half-open
    assert breaker.state == OPEN
    clock.advance(4.0)
    assert not breaker.available()
    clock.advance(1.0)
    assert breaker.available()


def test_a_released_or_lost_trial_lets_another_one_through() -> None:
    clock = FakeClock()
    breaker = Breaker(clock, failures=1, open_s=2.0)
    breaker.failure()
    clock.advance(2.0)
    breaker.acquire()
    breaker.release()  # the trial ended with a client error: says nothing about the variant
    assert breaker.available()
    breaker.acquire()
    assert not breaker.available()
    clock.advance(2.0)  # that trial never reported back
    assert breaker.available()
