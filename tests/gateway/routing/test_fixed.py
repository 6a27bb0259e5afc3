"""FixedPolicy: one variant; the first that can serve when it cannot."""

from __future__ import annotations

from gateway.routing.fixed import FixedPolicy


def test_every_request_goes_to_the_fixed_variant() -> None:
    policy = FixedPolicy(["a", "b", "c"], target=1)
    assert {policy.choose([0, 1, 2], None) for _ in range(100)} == {1}
    assert policy.current() == 1
    assert policy.describe() == {"variant": "b"}


def test_when_the_fixed_variant_cannot_serve_the_first_that_can_does() -> None:
    policy = FixedPolicy(["a", "b", "c"], target=0)
    assert policy.choose([1, 2], None) == 1
    assert policy.choose([2], "key") == 2
