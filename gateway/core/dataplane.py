"""DataPlane: the only object front ends call (health, metadata, config, statistics, repository, infer).

``infer`` is the one request path: a front end hands it a decoder and an encoder, and it resolves the model
(through the injected Router), decodes, validates, admits, applies the deadline, runs the version's Executor,
encodes — and records the outcome once (``Outcomes``), on the way out, whatever the protocol and wherever it failed.
For a route, the Router also returns a Plan: the one seam around the runtime call, where a failed variant moves
the request to the next one and an answered request may be mirrored to the route's shadow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.core.auth import check_model
from gateway.core.classification import apply_classification
from gateway.core.errors import (
    DeadlineExceeded,
    GatewayError,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RegionNotFound,
    ServerUnavailable,
    Unsupported,
)
from gateway.core.exchange import ROUTE_KEY_PARAMETER, VARIANT_PARAMETER, Exchange, Origin, request_id
from gateway.core.metadata import model_config, model_metadata
from gateway.core.outcome import Outcomes
from gateway.core.shared_memory import CUDA_UNSUPPORTED, Lease, SharedMemoryRegistry, wants_shared_memory
from gateway.core.types import InferRequest, InferResponse, ModelMetadata, Tensor
from gateway.core.validation import validate
from gateway.execution.executor import Call
from gateway.lifecycle.model import READY, ModelEntry, ModelVersion
from gateway.routing.router import Router
from gateway.telemetry.access import AccessLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.stats import ModelStats
from gateway.telemetry.tracing import Tracing
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

    def all_loaded(self) -> Iterable[ModelVersion]: ...


class Control(Protocol):
    """The repository API's two verbs (the lifecycle controller)."""

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None: ...

    async def unload(self, name: str) -> None: ...


class Fleet(Protocol):
    """The other server processes of a ``--workers N`` server (its supervisor): what a client changes or reads
    through one of them must hold for all of them."""

    async def shared_memory_registered(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Registers a region this process registered on every other one; AlreadyExists when another process
        registered that name meanwhile (this process then holds the fleet's region of that name)."""

    async def shared_memory_unregistered(self, name: str) -> None:
        """Unregisters ``name`` (every region when empty) on every other process."""

    async def statistics(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ModelStats]:
        """The statistics of these (model, version) summed over every process."""


class OnDemand(Protocol):
    """Models kept unloaded by the memory budget until a request comes (the lifecycle controller)."""

    def parked(self, name: str) -> bool: ...

    def load_parked(self, name: str) -> Awaitable[None]: ...


class DataPlane:
    """Protocol-neutral operations; every transport calls exactly these."""

    def __init__(
        self,
        models: Models,
        router: Router,
        metrics: Metrics,
        control: Control,
        info: ServerInfo | None = None,
        *,
        access_log: AccessLog | None = None,
        tracing: Tracing | None = None,
        shared_memory: SharedMemoryRegistry | None = None,
    ) -> None:
        self.shared_memory = shared_memory or SharedMemoryRegistry(enabled=False)  # Triton's system shared memory
        self.access_log = access_log  # one line per request when set
        self.tracing = tracing  # a span per request when set (gateway.telemetry.tracing imports OpenTelemetry)
        self.models = models
        self.router = router
        self.metrics = metrics
        self.control = control
        self.info = info or ServerInfo()
        self.outcomes = Outcomes(models, router, metrics, access_log, tracing)
        self.started = False  # set once the initial load finished
        self.stopping = False  # shutting down: not ready, but still serving (load balancers are catching up)
        self.draining = False  # past the shutdown delay: new requests are refused, in-flight ones finish
        self.readiness: Callable[[], str | None] | None = None  # why not ready (None: ready); strict readiness
        self.on_demand: OnDemand | None = None  # with a memory budget: loads a parked model for its request
        self.fleet: Fleet | None = None  # a worker's supervisor: shared memory and statistics span every worker

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
        origin: Origin | None = None,
    ) -> T:
        """One request, start to finish. ``name``/``version`` are what the front end knows before decoding (they
        label the outcome if decoding fails); ``received`` is when its first byte arrived; ``origin`` carries the
        request ID, trace context, peer and sizes, and holds the request ID afterwards (also on a raised error's
        ``request_id``)."""
        start = time.perf_counter() if received is None else received
        x = Exchange(self.router, protocol, name, version, start, origin)
        queue = compute = 0.0
        lease: Lease | None = None
        try:
            if self.draining:
                raise ServerUnavailable("server is shutting down")
            if self.on_demand is not None and name:
                await self._load_on_demand(name)
            try:
                request = await decode(x)
            except ModelNotReady:
                # a model named only inside the body (TF Serving gRPC resolves it while decoding), parked by the
                # memory budget: it loads, then the request is decoded again (decoders only read what they got)
                if self.on_demand is None or not x.name or not self.on_demand.parked(x.name):
                    raise
                await self._load_on_demand(x.name)
                request = await decode(x)
            if wants_shared_memory(request):
                lease = self.shared_memory.lease()
                await lease.read_inputs(request)
            if x.origin.request_id is None and request.id:
                x.origin.request_id = request_id(request.id)
            if self.tracing is not None:
                x.trace = self.outcomes.begin_trace(x)
                x.trace.decoded = time.perf_counter()
            model = x.model
            if model is None:
                if x.key is None:
                    x.key = _route_key(request.parameters)
                try:
                    model = x.resolve(request.model, request.version)
                except ModelNotReady:
                    if self.on_demand is None or not self.on_demand.parked(request.model):
                        raise
                    await self._load_on_demand(request.model)
                    model = x.resolve(request.model, request.version)
            inputs, outputs, rows = validate(model, request)
            plan = x.plan
            while True:  # one attempt for a model; a route's plan may move the request to its next variant
                try:
                    call = Call(inputs, outputs, request.signature, self._deadline(model, request), rows, x.trace)
                    results, queue, compute = await self._run(model, call, x.trace)
                    break
                except GatewayError as exc:
                    following = plan.next(exc.code, request.deadline) if plan is not None else None
                    if following is None:
                        raise
                    x.model = model = following
                    inputs, outputs, rows = validate(model, request)
            response = InferResponse(
                model=model.name if plan is None else plan.route,
                version=str(model.version),
                outputs=[Tensor(n, results[n]) for n in outputs],
                id=request.id,
                requested={o.name: o for o in request.outputs or []},
                signature=request.signature,
            )
            if plan is not None:
                response.parameters[VARIANT_PARAMETER] = model.name
                plan.mirror(call, results)
            if lease is not None and lease.writes:
                await lease.write_outputs(response)
            apply_classification(response)
            encoded = encode(response)
        except GatewayError as exc:
            self.outcomes.failed(x, exc.code, exc.message)
            exc.request_id = x.origin.request_id
            raise
        except Exception as exc:
            log.exception("unexpected failure serving %s", x.name)
            error = InferenceFailed(f"internal error serving {x.name!r}: {type(exc).__name__}: {exc}")
            self.outcomes.failed(x, "INTERNAL", error.message)
            error.request_id = x.origin.request_id
            raise error from exc
        finally:
            if lease is not None:
                lease.release()
        self.outcomes.ok(x, model, rows, queue, compute)
        return encoded

    async def _load_on_demand(self, name: str) -> None:
        """A model parked by the memory budget loads now; the request waits up to the model's timeout."""
        on_demand = self.on_demand
        if on_demand is None or not on_demand.parked(name):
            return
        check_model(name)  # a key that may not call the model does not get to load it (and unload others)
        entry = self.models.get(name)
        timeout_ms = entry.config.timeout_ms if entry is not None else None
        try:
            async with asyncio.timeout(timeout_ms / 1000.0 if timeout_ms is not None else None):
                await on_demand.load_parked(name)
        except TimeoutError:
            raise DeadlineExceeded(
                f"model {name!r} was loading on request (memory budget) and did not finish within its timeout "
                f"({timeout_ms:g} ms); it keeps loading"
            ) from None

    @staticmethod
    def _deadline(model: ModelVersion, request: InferRequest) -> float | None:
        deadline = request.deadline
        if model.config.timeout_ms is not None:
            own = time.monotonic() + model.config.timeout_ms / 1000.0
            deadline = own if deadline is None else min(deadline, own)
        return deadline

    async def _run(self, model: ModelVersion, call: Call, trace: Any) -> tuple[dict[str, Any], float, float]:
        """Admit ``call`` to ``model`` (its queue bound) and run it on the version's executor."""
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
        inflight.begin()
        self.metrics.inflight_add(model.labels, 1)
        try:
            if trace is not None:
                trace.submitted = time.perf_counter()
            result = await executor.run(call)
            if trace is not None:
                trace.ran = time.perf_counter()
            return result
        finally:
            inflight.end()
            self.metrics.inflight_add(model.labels, -1)

    # -- health ------------------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if not self.started or self.stopping or self.draining:
            return False
        return self.readiness is None or self.readiness() is None

    def model_ready(self, name: str, version: str | None = None, label: str | None = None) -> bool:
        """Whether ``name`` (``version``) can serve now; NOT_FOUND for a model the server does not know."""
        self.router.entry(name)
        if self.stopping or self.draining:
            return False
        try:
            self.router.resolve(name, version, label)
        except ModelNotFound:
            raise  # a version or label that does not exist is 404, as for its metadata
        except GatewayError:
            return False
        return True

    def knows(self, name: str) -> bool:
        return self.models.get(name) is not None or self.router.describe(name) is not None

    # -- metadata ----------------------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        extensions = list(self.info.extensions)
        if self.shared_memory.enabled and "system_shared_memory" not in extensions:
            extensions.append("system_shared_memory")
        return {"name": self.info.name, "version": self.info.version, "extensions": extensions}

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        meta = model_metadata(name, self.router.resolve(name, version), self.router.entry(name))
        route = self.router.describe(name)
        if route is not None:
            meta.parameters["route"] = route
        return meta

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
            raise ModelNotFound.version(name, version)
        return rows

    async def statistics(self, name: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
        """The statistics extension's rows (a worker's: the sums over every worker)."""
        if name is None:
            rows = [(m.name, str(m.version), m) for m in self.models.all_loaded()]
        else:
            entry = self.router.entry(name)
            if version:
                model = entry.versions.get(int(version)) if version.isascii() and version.isdigit() else None
                if model is None:
                    raise ModelNotFound.version(name, version)
                rows = [(name, version, model)]
            else:
                rows = [(name, str(m.version), m) for m in entry.versions.values()]
        if self.fleet is None:
            return [m.stats.to_json(row_name, v) for row_name, v, m in rows]
        summed = await self.fleet.statistics(sorted({(m.name, str(m.version)) for _, _, m in rows}))
        return [summed.get((m.name, str(m.version)), m.stats).to_json(row_name, v) for row_name, v, m in rows]

    # -- shared memory (Triton's extension; CUDA regions are refused) -------------------------------------------
    async def register_shared_memory(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        """Registers here (checking the name, key and slice), then on every other worker of a fleet."""
        self.shared_memory.register(name, key, offset, byte_size)
        if self.fleet is None:
            return
        held = self.shared_memory.held(name)
        assert held is not None
        await self.fleet.shared_memory_registered(name, *held)

    async def unregister_shared_memory(self, name: str = "") -> None:
        self.shared_memory.unregister(name)
        if self.fleet is not None:
            await self.fleet.shared_memory_unregistered(name)

    def shared_memory_status(self, name: str = "") -> list[dict[str, Any]]:
        return self.shared_memory.status(name)

    def register_cuda_shared_memory(self, name: str) -> None:
        raise Unsupported(CUDA_UNSUPPORTED)

    def cuda_shared_memory_status(self, name: str = "") -> list[dict[str, Any]]:
        """No CUDA region can exist: all of them is none, a named one is not found."""
        if name:
            raise RegionNotFound(f"Unable to find cuda shared memory region: {name!r} ({CUDA_UNSUPPORTED})")
        return []

    def unregister_cuda_shared_memory(self, name: str = "") -> None:
        """Nothing to unregister (perf_analyzer unregisters every region at startup; that must succeed)."""

    # -- repository --------------------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self.models.index() + self.router.index()
        if ready_only:
            rows = [r for r in rows if r["state"] == READY]
        return rows

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        await self.control.load(name, parameters)

    async def unload(self, name: str) -> None:
        await self.control.unload(name)


def _route_key(parameters: dict[str, Any]) -> str | None:
    """The V2 parameter ``route_key``: a string (or an integer) naming the client, session or entity to stick to."""
    key = parameters.get(ROUTE_KEY_PARAMETER)
    if key is None or isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise InvalidInput(f"parameter {ROUTE_KEY_PARAMETER!r} must be a string, got {type(key).__name__}")
