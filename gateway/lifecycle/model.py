"""ModelVersion: one loaded version as the host publishes it (read-only), with the small owned objects that do
change while it serves: its status (state and reason) and its in-flight count (admission and drain).
RouteEntry: a declared route (a name served by several models) as the controller publishes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.errors import InvalidInput, ServerUnavailable
from gateway.execution.executor import Executor
from gateway.telemetry.stats import ModelStats
from model_store import ModelConfig
from model_store.route import RouteConfig
from runtimes import Runtime, Signature

LOADING, READY, UNAVAILABLE, UNLOADING = "LOADING", "READY", "UNAVAILABLE", "UNLOADING"


class VersionStatus:
    """State (LOADING, READY, UNAVAILABLE, UNLOADING) and the reason shown in the repository index."""

    __slots__ = ("reason", "state")

    def __init__(self, state: str = LOADING, reason: str = "") -> None:
        self.state = state
        self.reason = reason


class Inflight:
    """Requests admitted and not yet answered; ``drained()`` waits until none is left."""

    __slots__ = ("_drained", "count")

    def __init__(self) -> None:
        self.count = 0
        self._drained: asyncio.Event | None = None

    def begin(self) -> None:
        self.count += 1

    def end(self) -> None:
        self.count -= 1
        if self.count == 0 and self._drained is not None:
            self._drained.set()

    async def drained(self) -> None:
        """Returns once no request is in flight (bound it with ``asyncio.timeout``)."""
        if self.count == 0:
            return
        self._drained = asyncio.Event()
        await self._drained.wait()


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One version of one model. A version that failed to load has no runtime and no executor."""

    name: str
    version: int
    config: ModelConfig
    fingerprint: str = ""
    runtime: Runtime | None = None
    format: str = ""
    platform: str = ""
    signature: Signature | None = None
    executor: Executor | None = None
    path: Path | None = None  # the store's copy it was loaded from, released when it is closed
    loaded_at: float = 0.0
    status: VersionStatus = field(default_factory=VersionStatus)
    inflight: Inflight = field(default_factory=Inflight)
    stats: ModelStats = field(default_factory=ModelStats)
    on_demand: bool = False  # not loaded to stay within the memory budget: loads on its first request

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def reason(self) -> str:
        return self.status.reason

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.name, str(self.version), self.format)

    @property
    def max_batch_size(self) -> int:
        """Triton's meaning: 0 = no batch dimension, else the largest batch accepted."""
        sig = self.signature
        if sig is None or not sig.batched:
            return 0
        if self.config.max_batch_size is not None:
            return self.config.max_batch_size
        if self.config.batching is not None:
            return max(self.config.batching.max_batch_size, 1024)
        return 1024

    def signature_for(self, name: str | None = None) -> Signature:
        """The default signature, or the one named; an unknown name is InvalidInput listing the available ones."""
        runtime = self.runtime
        if runtime is None:
            raise ServerUnavailable(f"model {self.name!r} is not loaded")
        if name is None and self.signature is not None:
            return self.signature
        try:
            return runtime.signature(name)
        except KeyError:
            names = sorted(runtime.signatures())
            raise InvalidInput(
                f"model {self.name!r} has no signature {name!r}; available: {', '.join(names)}"
            ) from None

    @property
    def artifact(self) -> str:
        """The artefact's file name: the runtime's default, or the one ``options.filename`` names."""
        if self.runtime is None:
            return ""
        named = self.config.options.get("filename")
        return named if isinstance(named, str) and named else str(getattr(self.runtime, "artifact", ""))


@dataclass(eq=False)
class ModelEntry:
    """Every version the host knows of one model name, and the model's config."""

    name: str
    config: ModelConfig
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def ready_versions(self) -> list[ModelVersion]:
        return sorted((m for m in self.versions.values() if m.state == READY), key=lambda m: m.version)

    def reasons(self) -> str:
        """`` (v1: why; v2: why)`` for the versions that have a reason, or an empty string."""
        reasons = [f"v{m.version}: {m.reason}" for m in self.versions.values() if m.reason]
        return f" ({'; '.join(reasons)})" if reasons else ""


@dataclass(frozen=True, eq=False)
class RouteEntry:
    """A route as declared: its config (None when the declaration is invalid: ``reason`` says why) and where it
    was declared (``store``: route.yaml, ``override``: the config overrides folder, ``export``: exported variants
    of one source model). Replaced, never changed, so the Router rebuilds its policy state only on a change."""

    name: str
    config: RouteConfig | None
    origin: str
    reason: str = ""
