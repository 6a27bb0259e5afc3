"""RouteConfig: a route's declaration — one logical model name served by several variants (models of the store).

A route is declared by ``<store>/<route>/route.yaml`` (a folder with no version folders), by an override file
``<route>.route.yaml`` in the ``--config-overrides`` folder (the Helm chart's ``routes:`` values), or implicitly:
the variants ``tensorgate export`` writes for one source model (``source: {model: <source>}`` in their
config.yaml) form the route ``<source>`` without any file (see ``auto_route``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from model_store.config import SLA, ConfigError, ModelConfig, _Strict

ROUTE_FILE = "route.yaml"
OVERRIDE_SUFFIX = ".route.yaml"
POLICIES = ("fixed", "weighted", "sla")


class RouteVariant(_Strict):
    """One variant: a model of the store, its latest READY version unless ``version`` pins one."""

    model: str
    version: int | None = Field(default=None, ge=0)
    weight: float | None = Field(default=None, ge=0)  # the weighted policy's share (percent or any scale)


class Choice(_Strict):
    """How the ``sla`` policy measures and decides (the gateway's own latencies over a sliding window)."""

    window_s: float = Field(default=10.0, gt=0)  # the sliding window each objective is measured over
    min_samples: int = Field(default=10, ge=1)  # fewer samples in the window: the variant's latency is unknown
    explore: float = Field(default=0.05, ge=0, le=0.5)  # share of requests sent to the other variants
    margin: float = Field(default=0.1, ge=0, lt=1)  # a variant takes traffic back only under (1 - margin) * SLA
    hold_s: float = Field(default=5.0, ge=0)  # at least this long between two moves to a preferred variant
    interval_s: float = Field(default=0.25, gt=0)  # how often the choice is re-evaluated


class Breaker(_Strict):
    """Circuit breaker per variant: ``failures`` consecutive failures open it for ``open_s``, then one trial."""

    failures: int = Field(default=3, ge=1)
    open_s: float = Field(default=5.0, gt=0)


class ShadowConfig(_Strict):
    """Mirror ``share`` of the route's requests to ``model``; its answers are compared, never returned."""

    model: str
    version: int | None = Field(default=None, ge=0)
    share: float = Field(default=0.1, gt=0, le=1)
    max_inflight: int = Field(default=2, ge=1)  # shadow calls running at once; beyond it they are dropped
    atol: float = Field(default=1e-4, ge=0)
    rtol: float = Field(default=1e-3, ge=0)


class RouteConfig(_Strict):
    """Everything a route.yaml may say; ``variants`` is required, in preference order."""

    policy: Literal["fixed", "weighted", "sla"] = "sla"
    variants: list[RouteVariant] = Field(min_length=1)
    variant: str | None = None  # the fixed policy's variant (default: the first)
    sla: SLA = Field(default_factory=SLA)
    choice: Choice = Field(default_factory=Choice)
    breaker: Breaker = Field(default_factory=Breaker)
    fallback: bool = True
    shadow: ShadowConfig | None = None

    @field_validator("variants", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        names = [v.model for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variants: {', '.join(duplicates)} listed more than once")
        if self.variant is not None and self.variant not in names:
            raise ValueError(f"variant: {self.variant!r} is not one of the variants ({', '.join(names)})")
        if self.policy == "weighted":
            weights = [v.weight for v in self.variants]
            if any(w is None for w in weights) and any(w is not None for w in weights):
                raise ValueError("variants: the weighted policy needs a weight on every variant, or on none")
            if all(w is not None for w in weights) and not sum(w or 0.0 for w in weights) > 0:
                raise ValueError("variants: the weights add up to 0")
        return self

    @property
    def names(self) -> list[str]:
        return [v.model for v in self.variants]

    @classmethod
    def parse(cls, text: str | bytes, where: str = ROUTE_FILE) -> RouteConfig:
        """Parse YAML (or JSON) text; ConfigError names the file and the offending field."""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"{where}: {problems}") from exc


def auto_routes(configs: Mapping[str, ModelConfig], formats: Sequence[str]) -> dict[str, RouteConfig]:
    """The routes formed by exported variants: every ``source.model`` named by two or more models' config.yaml
    becomes a route of those models, in the order of ``formats`` (then by name). Its policy is ``sla`` over the
    first SLA a variant declares, or ``fixed`` (the first variant, with fallback to the others) when none does."""
    groups: dict[str, list[str]] = {}
    for name, config in configs.items():
        source = config.source.get("model")
        if isinstance(source, str) and source and source != name:
            groups.setdefault(source, []).append(name)
    rank = {fmt: i for i, fmt in enumerate(formats)}
    routes: dict[str, RouteConfig] = {}
    for source, names in groups.items():
        if len(names) < 2:
            continue
        names.sort(key=lambda n: (rank.get(configs[n].runtime or "", len(rank)), n))
        sla = next((configs[n].sla for n in names if configs[n].sla.targets()), None)
        routes[source] = RouteConfig(
            policy="sla" if sla is not None else "fixed",
            variants=[RouteVariant(model=n) for n in names],
            sla=sla or SLA(),
        )
    return routes
