"""ModelConfig: the per-model settings read from ``<store>/<model>/config.yaml`` (or a Triton ``config.pbtxt``,
see model_store.triton_config)."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model_store.base import CONFIG_FILE, PBTXT_FILE, ConfigFile

#: formats whose compiled native code can abort the process on a bad input: isolated unless the config says otherwise
ISOLATED_BY_DEFAULT = frozenset({"torch_aoti"})


class ConfigError(ValueError):
    """A model's config.yaml is malformed; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionPolicy(_Strict):
    """Which versions are served: the latest N (default 1), all, or a specific list."""

    latest: int | None = None
    all: bool = False
    specific: list[int] | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> VersionPolicy:
        chosen = sum([self.latest is not None, self.all, self.specific is not None])
        if chosen > 1:
            raise ValueError("version_policy takes one of latest, all, specific")
        if chosen == 0:
            self.latest = 1
        if self.latest is not None and self.latest < 1:
            raise ValueError("version_policy.latest must be >= 1")
        return self

    def select(self, versions: list[int]) -> list[int]:
        ordered = sorted(versions)
        if self.all:
            return ordered
        if self.specific is not None:
            wanted = set(self.specific)
            return [v for v in ordered if v in wanted]
        return ordered[-(self.latest or 1) :]

    def to_triton(self) -> dict[str, Any]:
        if self.all:
            return {"all": {}}
        if self.specific is not None:
            return {"specific": {"versions": [str(v) for v in self.specific]}}
        return {"latest": {"num_versions": self.latest or 1}}


class Batching(_Strict):
    """Dynamic batching: requests are stacked along dim 0 up to max_batch_size or max_queue_delay_ms."""

    max_batch_size: int = Field(default=8, ge=1)
    max_queue_delay_ms: float = Field(default=1.0, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)


class SLA(_Strict):
    """Latency objectives in milliseconds, as seen by the gateway."""

    p50_ms: float | None = Field(default=None, gt=0)
    p90_ms: float | None = Field(default=None, gt=0)
    p95_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)

    def targets(self) -> dict[str, float]:
        """objective name (p50, p99 ...) -> target in seconds."""
        out: dict[str, float] = {}
        for key in ("p50", "p90", "p95", "p99"):
            value = getattr(self, f"{key}_ms")
            if value is not None:
                out[key] = value / 1000.0
        return out


class WarmupInput(_Strict):
    """One input of a declared warm-up sample: zeros, random values, or a file in ``<model>/warmup/``."""

    name: str
    datatype: str
    shape: list[int]
    source: Literal["zero", "random", "file"] = "zero"
    file: str | None = None

    @model_validator(mode="after")
    def _file(self) -> WarmupInput:
        if (self.source == "file") != (self.file is not None):
            raise ValueError("file is given exactly when source is file")
        if any(d < 0 for d in self.shape):
            raise ValueError("every dim of a warm-up input must be given (>= 0)")
        return self


class WarmupSample(_Strict):
    """A declared warm-up request (Triton's ``model_warmup``), run ``count`` times; its failure fails the load."""

    name: str
    count: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=1, ge=0)
    inputs: list[WarmupInput] = Field(default_factory=list)


class Warmup(_Strict):
    """Requests run before a version turns READY: the declared ``samples`` when there are any, else ``requests``
    synthetic ones shaped from the signature (a synthetic request that fails is logged and the version serves)."""

    enabled: bool = True
    requests: int = Field(default=2, ge=0)
    batch_size: int = Field(default=1, ge=1)
    samples: list[WarmupSample] = Field(default_factory=list)


class Verify(_Strict):
    """Tolerances for golden samples (written by ``tensorgate export``) and whether to check them at load."""

    atol: float = 1e-4
    rtol: float = 1e-3
    on_load: bool = True


class TensorOverride(_Strict):
    name: str
    datatype: str
    shape: list[int]


class ModelConfig(_Strict):
    """Everything a model's config.yaml may say; every field is optional."""

    runtime: str | None = None  # one of runtimes.RUNTIMES (the one list of formats)
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    version_labels: dict[str, int] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    max_batch_size: int | None = Field(default=None, ge=0)
    batching: Batching | None = None
    instances: int = Field(default=2, ge=1)
    # "process": the runtime runs in a child process (README "Isolation and the memory budget"); unset: "process"
    # for the formats in ISOLATED_BY_DEFAULT, "none" for the others
    isolation: Literal["none", "process"] | None = None
    max_queue_size: int = Field(default=256, ge=1)
    timeout_ms: float | None = Field(default=None, gt=0)
    sla: SLA = Field(default_factory=SLA)
    warmup: Warmup = Field(default_factory=Warmup)
    verify: Verify = Field(default_factory=Verify)
    inputs: list[TensorOverride] | None = None
    outputs: list[TensorOverride] | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)  # Triton's model parameters, shown in the config

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str | None) -> str | None:
        from runtimes import RUNTIMES

        if value is not None and value not in RUNTIMES:
            raise ValueError(f"unknown runtime {value!r}; expected one of: {', '.join(RUNTIMES)}")
        return value

    @field_validator("version_labels")
    @classmethod
    def _labels(cls, value: dict[str, int]) -> dict[str, int]:
        for label in value:
            if not label or "/" in label or ":" in label or label.isdigit():
                raise ValueError(f"version label {label!r} must be a non-numeric name without '/' or ':'")
        return value

    @classmethod
    def parse(cls, text: str | bytes | None, where: str = "config.yaml") -> ModelConfig:
        """Parse YAML (or JSON) text; ConfigError names the file and the offending field."""
        return cls.from_dict(_mapping(text, where), where)

    @classmethod
    def merged(
        cls, base: str | bytes | None, override: str | bytes, where: str = "config.yaml", override_where: str = ""
    ) -> ModelConfig:
        """The store's config with an override merged in field by field: mappings merge key by key (an override of
        ``sla.p99_ms`` keeps ``sla.p50_ms``, ``options`` and ``batching``), anything else is replaced; a null
        removes the field."""
        data = merge(_mapping(base, where), _mapping(override, override_where or where))
        return cls.from_dict(data, f"{where} with {override_where}" if override_where else where)

    @classmethod
    def from_file(
        cls, file: ConfigFile | None, model: str, override: bytes | None = None, override_where: str = ""
    ) -> ModelConfig:
        """A model's config as the store holds it (config.yaml, or Triton's config.pbtxt), with an override in
        config.yaml's form merged in field by field (see ``merged``)."""
        where = (file.where if file is not None else "") or f"{model}/{file.name if file is not None else CONFIG_FILE}"
        if file is not None and file.name == PBTXT_FILE:
            from model_store.triton_config import to_mapping

            base = to_mapping(file.data, model, where)
        else:
            base = _mapping(file.data if file is not None else None, where)
        if override is None:
            return cls.from_dict(base, where)
        data = merge(base, _mapping(override, override_where or where))
        return cls.from_dict(data, f"{where} with {override_where}" if override_where else where)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> ModelConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"{where}: {problems}") from exc

    def isolated(self, fmt: str) -> bool:
        """Whether a version in format ``fmt`` runs in its own process."""
        if self.isolation is None:
            return fmt in ISOLATED_BY_DEFAULT
        return self.isolation == "process"

    def runtime_options(self) -> dict[str, Any]:
        """What a Runtime's ``load`` gets: ``options`` plus the ``inputs``/``outputs`` signature overrides."""
        options = dict(self.options)
        if self.inputs is not None:
            options["inputs"] = [o.model_dump() for o in self.inputs]
        if self.outputs is not None:
            options["outputs"] = [o.model_dump() for o in self.outputs]
        return options

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_defaults=True), sort_keys=False)


def _mapping(text: str | bytes | None, where: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, recursively for mappings; a None value removes the key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
