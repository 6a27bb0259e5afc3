"""DataPlane: the only object front ends call (health, metadata, config, statistics, repository, infer).

It validates inputs once against the model's signature, runs the runtime in the model's bounded thread pool (or its
dynamic batcher), and records metrics once per request, whatever the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    ServerUnavailable,
)
from gateway.metrics import UNKNOWN, Metrics
from gateway.registry import READY, LoadedModel, ModelRegistry
from gateway.router import Router
from gateway.types import (
    DATATYPES,
    InferRequest,
    InferResponse,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    TensorMetadata,
)
from runtimes import RuntimeInputError, Signature

log = logging.getLogger("tensorgate.dataplane")
T = TypeVar("T")

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


class DataPlane:
    """Protocol-neutral operations over the registry; every transport calls exactly these."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics, info: ServerInfo | None = None) -> None:
        self.registry = registry
        self.router = Router(registry)
        self.metrics = metrics
        self.info = info or ServerInfo()
        self.started = False  # set once the initial load finished
        self.draining = False

    # -- health ------------------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.started and not self.draining

    def model_ready(self, name: str, version: str | None = None, label: str | None = None) -> bool:
        if self.draining:
            return False
        try:
            self.router.resolve(name, version, label)
        except GatewayError:
            return False
        return True

    # -- metadata ----------------------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "version": self.info.version,
            "extensions": list(self.info.extensions),
        }

    def model(self, name: str, version: str | int | None = None, label: str | None = None) -> LoadedModel:
        return self.router.resolve(name, version, label)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self.router.resolve(name, version)
        entry = self.router.entry(name)
        sig = _signature(model)
        params: dict[str, Any] = {"runtime": model.format}
        source = model.config.source.get("model")
        if source:
            params["source"] = str(source)
        sla = {k: v for k, v in model.config.sla.model_dump().items() if v is not None}
        if sla:
            params["sla"] = sla
        return ModelMetadata(
            name=name,
            versions=[str(m.version) for m in entry.ready_versions()],
            platform=model.platform,
            inputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in sig.inputs],
            outputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in sig.outputs],
            parameters=params,
        )

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's ModelConfig in its JSON form (proto field names, enum names); perf_analyzer needs it."""
        model = self.router.resolve(name, version)
        sig = _signature(model)
        mbs = model.max_batch_size
        drop = 1 if mbs > 0 else 0

        def tensor(spec: Any, key: str) -> dict[str, Any]:
            return {
                "name": spec.name,
                "data_type": DATATYPES[spec.datatype].triton,
                key: list(spec.shape[drop:]),
            }

        cfg = model.config
        config: dict[str, Any] = {
            "name": name,
            "platform": model.platform,
            "backend": model.format,
            "version_policy": cfg.version_policy.to_triton(),
            "max_batch_size": mbs,
            "input": [tensor(s, "dims") for s in sig.inputs],
            "output": [tensor(s, "dims") for s in sig.outputs],
            "instance_group": [{"name": name, "kind": "KIND_CPU", "count": cfg.instances}],
            "default_model_filename": _artifact(model),
            "parameters": {
                **{f"sla.{k}": {"string_value": str(v)} for k, v in cfg.sla.model_dump().items() if v is not None},
                "runtime": {"string_value": model.format},
            },
        }
        if cfg.batching is not None and mbs > 0:
            config["dynamic_batching"] = {
                "preferred_batch_size": list(cfg.batching.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(cfg.batching.max_queue_delay_ms * 1000),
            }
        return config

    def signatures(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> tuple[LoadedModel, Mapping[str, Signature]]:
        """The resolved version and every signature its runtime serves (TF Serving metadata)."""
        model = self.router.resolve(name, version, label)
        runtime = model.runtime
        if runtime is None:
            raise ServerUnavailable(f"model {name!r} was unloaded")
        return model, runtime.signatures()

    def signature(self, model: LoadedModel, name: str | None) -> Signature:
        """One signature of a resolved model; an unknown name is InvalidInput listing the available ones."""
        return _signature(model, name)

    def version_status(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> list[tuple[int, str, str]]:
        """(version, registry state, reason) for every known version, or the one asked for."""
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
            return [m.stats.to_json(m.name, str(m.version)) for m in self.registry.all_loaded()]
        entry = self.router.entry(name)
        if version:
            model = entry.versions.get(int(version)) if version.isdigit() else None
            if model is None:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
            return [model.stats.to_json(name, version)]
        return [m.stats.to_json(name, str(m.version)) for m in entry.versions.values()]

    # -- repository --------------------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self.registry.index()
        if ready_only:
            rows = [r for r in rows if r["state"] == READY]
        return rows

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        await self.registry.load(name, parameters)

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)

    # -- inference ---------------------------------------------------------------------------------------------
    async def infer(self, request: InferRequest, encode: Callable[[InferResponse], T]) -> T:
        """Validate, run and encode one request; metrics and statistics are recorded here, once."""
        model: LoadedModel | None = None
        queue = compute = 0.0
        protocol = request.protocol
        try:
            if self.draining:
                raise ServerUnavailable("server is shutting down")
            model = self.router.resolve(request.model, request.version)
            signature, inputs, outputs = validate(model, request)
            if model.pending >= model.config.max_queue_size + model.config.instances:
                raise Overloaded(
                    f"model {model.name!r} is overloaded: {model.pending} requests queued "
                    f"(max_queue_size {model.config.max_queue_size}); retry later"
                )
            deadline = request.deadline
            timeout_ms = model.config.timeout_ms
            if timeout_ms is not None:
                own = time.monotonic() + timeout_ms / 1000.0
                deadline = own if deadline is None else min(deadline, own)
            model.begin()
            self.metrics.inflight_add(model.labels, 1)
            try:
                results, queue, compute = await self._run(model, inputs, outputs, signature, deadline)
            finally:
                model.end()
                self.metrics.inflight_add(model.labels, -1)
            response = InferResponse(
                model=model.name,
                version=str(model.version),
                outputs=[Tensor(n, results[n]) for n in outputs],
                id=request.id,
                requested={o.name: o for o in request.outputs or []},
            )
            apply_classification(response)
            encoded = encode(response)
        except GatewayError as exc:
            self._record_failure(model, protocol, exc.code, request.received, request.model, request.version)
            exc.recorded = True
            raise
        except Exception as exc:
            log.exception("unexpected failure serving %s", request.model)
            self._record_failure(model, protocol, "INTERNAL", request.received, request.model, request.version)
            failure = InferenceFailed(f"internal error serving {request.model!r}: {type(exc).__name__}: {exc}")
            failure.recorded = True
            raise failure from exc
        now = time.perf_counter()
        total = now - request.received
        overhead = max(total - queue - compute, 0.0)
        self.metrics.series(*model.labels, protocol).observe("OK", total, queue, compute, overhead)
        batch = _batch_of(model, inputs)
        model.stats.record_success(int(time.time() * 1000), batch, total, queue, compute)
        if model.batcher is None:
            model.stats.record_execution(batch, compute)
        return encoded

    async def _run(
        self,
        model: LoadedModel,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        signature: str | None,
        deadline: float | None,
    ) -> tuple[dict[str, np.ndarray], float, float]:
        default = model.signature.name if model.signature is not None else None
        if model.batcher is not None and signature in (None, default):  # other signatures are never batched
            result: tuple[dict[str, np.ndarray], float, float] = await model.batcher.submit(inputs, outputs, deadline)
            return result
        pool = model.executor
        if pool is None:
            raise ServerUnavailable(f"model {model.name!r} was unloaded")
        future = pool.run(_call, model, inputs, outputs, signature, deadline, time.perf_counter())
        if deadline is None:
            return await future
        remaining = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(remaining, 0.0))
        except TimeoutError:
            future.cancel()  # a queued call is skipped; a late result or error is dropped, not logged as lost
            raise DeadlineExceeded(f"deadline exceeded while running {model.name!r}") from None

    def reject(self, name: str, version: str | None, protocol: str, exc: GatewayError, received: float) -> None:
        """Count a request a front end refused before it reached ``infer`` (e.g. a body that does not decode)."""
        model: LoadedModel | None
        try:
            model = self.router.resolve(name, version)
        except GatewayError:
            model = None
        self._record_failure(model, protocol, exc.code, received, name, version)

    def _record_failure(
        self,
        model: LoadedModel | None,
        protocol: str,
        code: str,
        received: float,
        name: str = "",
        version: str | None = None,
    ) -> None:
        total = time.perf_counter() - received
        if model is None:
            # A known model keeps its name; a version that is not loaded (or not READY) is labelled as far as the
            # registry knows it. Names the registry does not know all collapse into one series.
            entry = self.router.registry.models.get(name)
            if entry is None:
                self.metrics.unknown(protocol).observe(code, total, 0.0, 0.0, 0.0)
                return
            known = entry.versions.get(int(version)) if version and version.isdigit() else None
            labels = known.labels if known is not None else (name, UNKNOWN, "")
            self.metrics.series(*labels, protocol).observe(code, total, 0.0, 0.0, 0.0)
            return
        self.metrics.series(*model.labels, protocol).observe(code, total, 0.0, 0.0, 0.0)
        model.stats.record_failure(total)


def _call(
    model: LoadedModel,
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    signature: str | None,
    deadline: float | None,
    enqueued: float,
) -> tuple[dict[str, np.ndarray], float, float]:
    """Runs in the model's worker thread: drop requests that can no longer meet their deadline, then infer."""
    start = time.perf_counter()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"deadline exceeded before {model.name!r} could run the request")
    runtime = model.runtime
    if runtime is None:
        raise ServerUnavailable(f"model {model.name!r} was unloaded")
    try:
        result = runtime.infer(inputs, outputs, signature)
    except RuntimeInputError as exc:
        raise InvalidInput(str(exc)) from exc
    end = time.perf_counter()
    return result, start - enqueued, end - start


def _signature(model: LoadedModel, name: str | None = None) -> Signature:
    runtime = model.runtime
    if runtime is None:
        raise ServerUnavailable(f"model {model.name!r} is not loaded")
    if name is None and model.signature is not None:
        return model.signature
    try:
        return runtime.signature(name)
    except KeyError:
        names = sorted(runtime.signatures())
        raise InvalidInput(f"model {model.name!r} has no signature {name!r}; available: {', '.join(names)}") from None


def _artifact(model: LoadedModel) -> str:
    runtime = model.runtime
    return getattr(runtime, "artifact", "") if runtime is not None else ""


def validate(model: LoadedModel, request: InferRequest) -> tuple[str | None, dict[str, np.ndarray], list[str]]:
    """Check names, datatypes and shapes against the signature once; -1 dims are free."""
    sig = _signature(model, request.signature)
    free = sig.extra.get("unknown_rank", ()) if sig.extra else ()
    inputs: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = sig.input(tensor.name)
        if spec is None:
            expected = ", ".join(s.name for s in sig.inputs)
            raise InvalidInput(
                f"unexpected input {tensor.name!r} for model {model.name!r}; expected inputs: {expected}"
            )
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} is given more than once")
        data = tensor.data
        datatype = tensor.datatype
        if datatype != spec.datatype:
            raise InvalidInput(
                f"input {tensor.name!r} has datatype {datatype}, expected {spec.datatype} for model {model.name!r}"
            )
        shape = data.shape
        if tensor.name in free:
            pass  # unknown rank: any shape
        elif len(shape) != len(spec.shape) or any(e != -1 and e != d for e, d in zip(spec.shape, shape, strict=False)):
            raise InvalidInput(
                f"input {tensor.name!r} has shape {list(shape)}, expected {list(spec.shape)} "
                f"(-1 is any size) for model {model.name!r}"
            )
        inputs[tensor.name] = data
    missing = [s.name for s in sig.inputs if s.name not in inputs]
    if missing:
        raise InvalidInput(f"missing input(s) {', '.join(repr(m) for m in missing)} for model {model.name!r}")
    mbs = model.max_batch_size
    if mbs > 0 and inputs:
        batches = {a.shape[0] for a in inputs.values()}
        if len(batches) > 1:
            raise InvalidInput(f"inputs disagree on the batch dimension: {sorted(batches)}")
        batch = next(iter(batches))
        if batch > mbs:
            raise InvalidInput(f"batch size {batch} exceeds max_batch_size {mbs} of model {model.name!r}")
    if request.outputs:
        names = []
        for out in request.outputs:
            if sig.output(out.name) is None:
                expected = ", ".join(s.name for s in sig.outputs)
                raise InvalidInput(
                    f"unknown output {out.name!r} requested from model {model.name!r}; expected one of: {expected}"
                )
            names.append(out.name)
    else:
        names = [s.name for s in sig.outputs]
    return request.signature, inputs, names


def _batch_of(model: LoadedModel, inputs: dict[str, np.ndarray]) -> int:
    if model.max_batch_size > 0 and inputs:
        first = next(iter(inputs.values()))
        return int(first.shape[0]) if first.ndim else 1
    return 1


def apply_classification(response: InferResponse) -> None:
    """The classification extension: an output with ``classification: k`` becomes top-k "value:index" BYTES."""
    for i, tensor in enumerate(response.outputs):
        req: RequestedOutput | None = response.requested.get(tensor.name)
        if req is None:
            continue
        k_raw = req.parameters.get("classification")
        if k_raw is None or k_raw is False:
            continue
        try:
            k = int(k_raw)
        except (TypeError, ValueError):
            raise InvalidInput(f"output {tensor.name!r}: classification must be an integer, got {k_raw!r}") from None
        if k < 1:
            raise InvalidInput(f"output {tensor.name!r}: classification must be >= 1, got {k}")
        data = np.asarray(tensor.data)
        rows = data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(1, -1)
        kk = min(k, rows.shape[1])
        result = np.empty((rows.shape[0], kk), dtype=np.object_)
        for r, row in enumerate(rows):
            order = np.argsort(-row.astype(np.float64), kind="stable")[:kk]
            for c, idx in enumerate(order):
                result[r, c] = f"{float(row[idx]):f}:{int(idx)}".encode()
        final: np.ndarray = result.reshape(kk) if data.ndim <= 1 else result
        response.outputs[i] = Tensor(tensor.name, final)
