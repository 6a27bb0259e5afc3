"""WeightedPolicy: canary shares over many requests, sticky keys, variants leaving the scale."""

from __future__ import annotations

import random
from collections import Counter

from gateway.routing.weighted import WeightedPolicy


def test_random_requests_follow_the_weights() -> None:
    policy = WeightedPolicy(["stable", "canary"], [90, 10], random.Random(7))
    counts = Counter(policy.choose([0, 1], None) for _ in range(20_000))
    assert abs(counts[1] / 20_000 - 0.10) < 0.01
    assert policy.describe() == {"weights": {"stable": 90.0, "canary": 10.0}}
    assert policy.current() == 0


def test_a_key_always_lands_on_the_same_variant_and_keys_follow_the_weights() -> None:
    policy = WeightedPolicy(["stable", "canary"], [90, 10], random.Random(7))
    for key in ("user-1", "user-2", "session-abc", "42"):
        assert len({policy.choose([0, 1], key) for _ in range(50)}) == 1
    counts = Counter(policy.choose([0, 1], f"user-{n}") for n in range(5_000))
    assert abs(counts[1] / 5_000 - 0.10) < 0.02


def test_a_variant_that_cannot_serve_leaves_the_scale_and_zero_weight_is_never_chosen() -> None:
    policy = WeightedPolicy(["a", "b", "c"], [50, 50, 0], random.Random(1))
    assert {policy.choose([1, 2], None) for _ in range(1_000)} == {1}
    assert {policy.choose([0, 1, 2], f"k{n}") for n in range(1_000)} == {0, 1}
    assert policy.choose([2], None) == 2  # nothing with weight left: the one that can serve
