"""SlaPolicy: traffic goes to the first variant, in the route's preference order, whose recent latency meets the
route's SLA (every objective: p50/p90/p95/p99 over the sliding window the gateway measured itself).

- Exploration: ``explore`` of the requests go, at random, to the other variants, so that their latency stays known.
- Hysteresis: the current variant keeps the traffic while it meets the SLA. A variant earlier in the preference
  order takes it back only when it meets the SLA less ``margin`` (20 ms SLA, margin 0.1: 18 ms), has at least
  ``min_samples`` in the window, and ``hold_s`` has passed since the last move. A current variant that breaks
  the SLA loses the traffic at the next evaluation to the first variant that meets it.
- None meets: the best one (the smallest ratio of measured to target latency, worst objective) keeps or takes
  the traffic, moving only when it is better by ``margin``; ``sla_met`` turns False (a metric, and an alert).
- A variant with fewer than ``min_samples`` in the window is unknown: it is never moved to (except when nothing
  else can serve), and an unknown current variant keeps the traffic.

The choice is re-evaluated every ``interval_s``, not per request: a request costs a clock read and a random draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from gateway.routing.window import QUANTILES, LatencyWindow
from model_store.route import Choice


class Judgement(NamedTuple):
    known: bool  # enough samples in the window
    meets: bool  # every objective within its target
    comfortably: bool  # every objective within (1 - margin) of its target
    ratio: float  # the worst objective's measured / target latency (0 without objectives)


class SlaPolicy:
    def __init__(
        self,
        names: Sequence[str],
        windows: Sequence[LatencyWindow],
        targets: dict[str, float],
        choice: Choice,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.names = list(names)
        self.windows = windows
        self.objectives = [(QUANTILES[name], seconds) for name, seconds in targets.items()]
        self.choice = choice
        self.clock = clock
        self.rng = rng
        self.chosen = 0
        self.sla_met = True
        self.switches = 0
        self._since = float("-inf")  # when the choice last moved
        self._next = float("-inf")  # when to evaluate again

    @staticmethod
    def extra_bounds(targets: dict[str, float], margin: float) -> list[float]:
        """The window bucket boundaries that make this policy's comparisons exact."""
        return [b for t in targets.values() for b in (t, t * (1.0 - margin))]

    def choose(self, eligible: Sequence[int], key: str | None) -> int:
        now = self.clock()
        if now >= self._next or self.chosen not in eligible:
            self._evaluate(eligible, now)
            self._next = now + self.choice.interval_s
        chosen = self.chosen
        explore = self.choice.explore
        if explore and len(eligible) > 1 and self.rng.random() < explore:
            others = [i for i in eligible if i != chosen]
            return others[int(self.rng.random() * len(others))]
        return chosen

    def judge(self, i: int) -> Judgement:
        window = self.windows[i]
        counts = window.counts()
        known = sum(counts) >= self.choice.min_samples
        meets = comfortably = True
        ratio = 0.0
        keep = 1.0 - self.choice.margin
        for q, target in self.objectives:
            meets = meets and window.share_within(target, counts) >= q
            comfortably = comfortably and window.share_within(target * keep, counts) >= q
            measured = window.quantile(q, counts)
            if measured is not None:
                ratio = max(ratio, measured / target)
        return Judgement(known, meets, comfortably, ratio)

    def _move(self, i: int, now: float) -> None:
        if i != self.chosen:
            self.chosen = i
            self._since = now
            self.switches += 1

    def _evaluate(self, eligible: Sequence[int], now: float) -> None:
        judged = {i: self.judge(i) for i in eligible}
        current = self.chosen
        if current not in judged:  # unloaded, failing (breaker open): the first that meets, else the best known
            meeting = [i for i in eligible if judged[i].known and judged[i].meets]
            known = [i for i in eligible if judged[i].known]
            target = meeting[0] if meeting else min(known, key=lambda i: judged[i].ratio) if known else eligible[0]
            self._move(target, now)
            self.sla_met = bool(meeting) or not known
            return
        mine = judged[current]
        if not mine.known or mine.meets:
            self.sla_met = True
            if now - self._since >= self.choice.hold_s:
                for i in eligible:
                    if i >= current:
                        break
                    if judged[i].known and judged[i].comfortably:
                        self._move(i, now)
                        break
            return
        meeting = [i for i in eligible if judged[i].known and judged[i].meets]
        if meeting:
            self._move(meeting[0], now)
            self.sla_met = True
            return
        self.sla_met = False
        best = min((i for i in eligible if judged[i].known), key=lambda i: judged[i].ratio)
        if judged[best].ratio < mine.ratio * (1.0 - self.choice.margin):
            self._move(best, now)

    def current(self) -> int | None:
        return self.chosen

    def describe(self) -> dict[str, Any]:
        return {
            "choice": self.names[self.chosen],
            "sla_met": self.sla_met,
            "explore": self.choice.explore,
            "switches": self.switches,
        }
