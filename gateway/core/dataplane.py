"""DataPlane: the only object front ends call (health, metadata, config, statistics, repository, infer).

``infer`` is the one request path: a front end hands it a decoder and an encoder, and it resolves the model
(through the injected Router), decodes, validates, admits, applies the deadline, runs the version's Executor,
encodes — and records the outcome once, on the way out, whatever the protocol and wherever it failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.core.classification import apply_classification
from gateway.core.errors import GatewayError, InferenceFailed, ModelNotFound, Overloaded, ServerUnavailable
from gateway.core.exchange import Exchange
from gateway.core.metadata import model_config, model_metadata
from gateway.core.types import InferRequest, InferResponse, ModelMetadata, Tensor
from gateway.core.validation import validate
from gateway.execution.executor import Call
from gateway.lifecycle.model import READY, ModelEntry, ModelVersion
from gateway.routing.router import Router
from gateway.telemetry.metrics import UNKNOWN, Metrics
from runtimes import Signature

log = logging.getLogger("tensorgate.dataplane")
T = TypeVar("T")
Decode = Callable[[Exchange], Awaitable[InferRequest]]

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "model_configuration",
    "statistics",
    "parameters",
    "schedule_policy",
]


@dataclass
class ServerInfo:
    name: str = "tensorgate"
    version: str = "0.1.0"
    extensions: list[str] = field(default_factory=lambda: list(EXTENSIONS))


class Models(Protocol):
    """What the data plane reads of the host: model entries by name, the index, every version."""

    def get(self, name: str) -> ModelEntry | None: ...

    def index(self) -> list[dict[str, str]]: ...

    def all_loaded(self) -> Any: ...


class Control(Protocol):
    """The repository API's two verbs (the lifecycle controller)."""

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None: ...

    async def unload(self, name: str) -> None: ...


class DataPlane:
    """Protocol-neutral operations; every transport calls exactly these."""

    def __init__(
        self, models: Models, router: Router, metrics: Metrics, control: Control, info: ServerInfo | None = None
    ) -> None:
        self.models = models
        self.router = router
        self.metrics = metrics
        self.control = control
        self.info = info or ServerInfo()
        self.started = False  # set once the initial load finished
        self.draining = False
        self.readiness: Callable[[], str | None] | None = None  # why not ready (None: ready); strict readiness

    # -- inference ---------------------------------------------------------------------------------------------
    async def infer(
        self,
        protocol: str,
        decode: Decode,
        encode: Callable[[InferResponse], T],
        *,
        name: str = "",
        version: str | None = None,
        received: float | None = None,
    ) -> T:
        """One request, start to finish. ``name``/``version`` are what the front end knows before decoding (they
        label the outcome if decoding fails); ``received`` is when its first byte arrived."""
        x = Exchange(self.router, protocol, name, version, time.perf_counter() if received is None else received)
        queue = compute = 0.0
        try:
            if self.draining:
                raise ServerUnavailable("server is shutting down")
            request = await decode(x)
            model = x.model or x.resolve(request.model, request.version)
            inputs, outputs, rows = validate(model, request)
            config = model.config
            inflight = model.inflight
            if inflight.count >= config.max_queue_size + config.instances:
                raise Overloaded(
                    f"model {model.name!r} is overloaded: {inflight.count} requests queued "
                    f"(max_queue_size {config.max_queue_size}); retry later"
                )
            executor = model.executor
            if executor is None:
                raise ServerUnavailable(f"model {model.name!r} is not loaded")
            deadline = request.deadline
            if config.timeout_ms is not None:
                own = time.monotonic() + config.timeout_ms / 1000.0
                deadline = own if deadline is None else min(deadline, own)
            inflight.begin()
            self.metrics.inflight_add(model.labels, 1)
            try:
                results, queue, compute = await executor.run(Call(inputs, outputs, request.signature, deadline, rows))
            finally:
                inflight.end()
                self.metrics.inflight_add(model.labels, -1)
            response = InferResponse(
                model=model.name,
                version=str(model.version),
                outputs=[Tensor(n, results[n]) for n in outputs],
                id=request.id,
                requested={o.name: o for o in request.outputs or []},
                signature=request.signature,
            )
            apply_classification(response)
            encoded = encode(response)
        except GatewayError as exc:
            self._record_failure(x, exc.code)
            raise
        except Exception as exc:
            log.exception("unexpected failure serving %s", x.name)
            self._record_failure(x, "INTERNAL")
            raise InferenceFailed(f"internal error serving {x.name!r}: {type(exc).__name__}: {exc}") from exc
        total = time.perf_counter() - x.received
        self.metrics.series(*model.labels, protocol).observe(
            "OK", total, queue, compute, max(total - queue - compute, 0.0)
        )
        model.stats.record_success(int(time.time() * 1000), rows, total, queue, compute)
        return encoded

    def _record_failure(self, x: Exchange, code: str) -> None:
        total = time.perf_counter() - x.received
        model = x.model
        if model is None and x.name:  # refused before resolving: labelled by what the request asked for
            try:
                model = self.router.resolve(x.name, x.version)
            except GatewayError:
                model = None
        if model is not None:
            self.metrics.series(*model.labels, x.protocol).observe(code, total, 0.0, 0.0, 0.0)
            model.stats.record_failure(total)
            return
        # A known model keeps its name; a version that is not loaded (or not READY) is labelled as far as the host
        # knows it. Names the host does not know all collapse into one series.
        entry = self.models.get(x.name)
        if entry is None:
            self.metrics.unknown(x.protocol).observe(code, total, 0.0, 0.0, 0.0)
            return
        version = x.version
        known = entry.versions.get(int(version)) if version and version.isdigit() else None
        labels = known.labels if known is not None else (x.name, UNKNOWN, "")
        self.metrics.series(*labels, x.protocol).observe(code, total, 0.0, 0.0, 0.0)

    # -- health ------------------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.started and not self.draining and (self.readiness is None or self.readiness() is None)

    def model_ready(self, name: str, version: str | None = None, label: str | None = None) -> bool:
        """Whether ``name`` (``version``) can serve now; NOT_FOUND for a model the server does not know."""
        self.router.entry(name)
        if self.draining:
            return False
        try:
            self.router.resolve(name, version, label)
        except ModelNotFound:
            raise  # a version or label that does not exist is 404, as for its metadata
        except GatewayError:
            return False
        return True

    def knows(self, name: str) -> bool:
        return self.models.get(name) is not None

    # -- metadata ----------------------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.info.name, "version": self.info.version, "extensions": list(self.info.extensions)}

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        return model_metadata(name, self.router.resolve(name, version), self.router.entry(name))

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's ModelConfig in its JSON form; perf_analyzer needs it."""
        return model_config(name, self.router.resolve(name, version))

    def signatures(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> tuple[ModelVersion, Mapping[str, Signature]]:
        """The resolved version and every signature its runtime serves (TF Serving metadata)."""
        model = self.router.resolve(name, version, label)
        if model.runtime is None:
            raise ServerUnavailable(f"model {name!r} was unloaded")
        return model, model.runtime.signatures()

    def version_status(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> list[tuple[int, str, str]]:
        """(version, state, reason) for every known version, or the one asked for."""
        entry = self.router.entry(name)
        if label:
            if label not in entry.config.version_labels:
                raise ModelNotFound(f"model {name!r} has no version label {label!r}")
            version = entry.config.version_labels[label]
        rows = [
            (m.version, m.state, m.reason)
            for m in sorted(entry.versions.values(), key=lambda m: m.version)
            if version is None or m.version == int(version)
        ]
        if not rows:
            raise ModelNotFound(f"model {name!r} has no version {version}")
        return rows

    def statistics(self, name: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
        if name is None:
            return [m.stats.to_json(m.name, str(m.version)) for m in self.models.all_loaded()]
        entry = self.router.entry(name)
        if version:
            model = entry.versions.get(int(version)) if version.isdigit() else None
            if model is None:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
            return [model.stats.to_json(name, version)]
        return [m.stats.to_json(name, str(m.version)) for m in entry.versions.values()]

    # -- repository --------------------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self.models.index()
        if ready_only:
            rows = [r for r in rows if r["state"] == READY]
        return rows

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        await self.control.load(name, parameters)

    async def unload(self, name: str) -> None:
        await self.control.unload(name)
