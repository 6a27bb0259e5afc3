"""ModelRegistry: what is loaded. Loads, warms up, swaps and unloads versions against the ModelStore.

A new version is loaded and warmed up beside the old one, then published (the Router sees it atomically), and only
then are versions the policy no longer wants drained and unloaded. A version that fails to load or warm up is
recorded UNAVAILABLE with its reason and never takes the server or other versions down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.batcher import Batcher
from gateway.errors import InvalidInput, ModelNotFound, Unsupported
from gateway.metrics import Metrics
from gateway.stats import ModelStats
from gateway.workers import WorkerPool
from model_store import ConfigError, ModelConfig, ModelStore, StoreError, StoreUnavailable
from model_store.base import check_model_name
from runtimes import Runtime, RuntimeLoadError, Signature, detect_format, runtime_class

log = logging.getLogger("tensorgate.registry")

LOADING, READY, UNAVAILABLE, UNLOADING = "LOADING", "READY", "UNAVAILABLE", "UNLOADING"
RuntimeFactory = Callable[[str], type[Runtime]]


@dataclass(eq=False)
class LoadedModel:
    """One version of one model, with its runtime, thread pool, queue accounting and statistics."""

    name: str
    version: int
    config: ModelConfig
    fingerprint: str = ""
    state: str = LOADING
    reason: str = ""
    runtime: Runtime | None = None
    format: str = ""
    platform: str = ""
    signature: Signature | None = None
    executor: WorkerPool | None = None
    pending: int = 0
    stats: ModelStats = field(default_factory=ModelStats)
    drained: asyncio.Event | None = None
    batcher: Any = None
    loaded_at: float = 0.0
    path: Path | None = None  # the store's copy it was loaded from, released when it is closed

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

    def begin(self) -> None:
        self.pending += 1

    def end(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.drained is not None:
            self.drained.set()


@dataclass(eq=False)
class ModelEntry:
    """Every version the registry knows of one model name, and the model's config."""

    name: str
    config: ModelConfig
    versions: dict[int, LoadedModel] = field(default_factory=dict)

    def ready_versions(self) -> list[LoadedModel]:
        return sorted((m for m in self.versions.values() if m.state == READY), key=lambda m: m.version)


class ModelRegistry:
    """Loads models from a store. ``sync()`` follows the store; ``load``/``unload`` are the explicit API."""

    def __init__(
        self,
        store: ModelStore,
        metrics: Metrics,
        *,
        factory: RuntimeFactory = runtime_class,
        load_threads: int = 1,
        on_ready: Callable[[LoadedModel], Any] | None = None,
        drain_timeout: float = 30.0,
        config_overrides: Path | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.factory = factory
        self.models: dict[str, ModelEntry] = {}
        self.store_reason = ""
        self._pinned_unloaded: set[str] = set()
        self._load_pool = ThreadPoolExecutor(max_workers=load_threads, thread_name_prefix="tg-load")
        self._lock = asyncio.Lock()
        self._on_ready = on_ready
        self.drain_timeout = drain_timeout
        self.config_overrides = config_overrides
        self.warmup_hook: Callable[[LoadedModel], None] | None = None

    # -- queries -----------------------------------------------------------------------------------------------
    def index(self) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for name in sorted(self.models):
            entry = self.models[name]
            if not entry.versions:
                rows.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": "unloaded"})
            for version in sorted(entry.versions):
                m = entry.versions[version]
                rows.append({"name": name, "version": str(version), "state": m.state, "reason": m.reason})
        return rows

    def all_loaded(self) -> Iterable[LoadedModel]:
        for entry in self.models.values():
            yield from entry.versions.values()

    # -- store following ---------------------------------------------------------------------------------------
    async def sync(self, only: Iterable[str] | None = None) -> None:
        """Read the store once and apply every model's version policy and config."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                names = await loop.run_in_executor(None, self.store.list_models)
            except StoreError as exc:
                self._store_failed(exc)
                return
            wanted = set(only) if only is not None else None
            present = set(names)
            if not present and any(e.ready_versions() for e in self.models.values()):
                # An empty listing while models serve is far more often a store hiccup (a bucket being
                # restored, a wrong mount) than a wish to serve nothing: keep serving and say so.
                self._store_failed(StoreUnavailable(f"store {self.store.uri} lists no models; keeping what is loaded"))
                return
            if not present and not self.store_reason:
                log.warning("store %s holds no models (expected <model>/<version>/<artifact>)", self.store.uri)
            for name in names:
                if wanted is not None and name not in wanted:
                    continue
                if wanted is None and name in self._pinned_unloaded:
                    continue
                try:
                    await self._sync_model(name)
                except StoreUnavailable as exc:
                    self._store_failed(exc)
                    return
            if wanted is None:
                for name in list(self.models):
                    if name not in present:
                        log.info("model %s left the store; unloading", name)
                        await self._unload_model(name)
            else:
                for name in wanted - present:
                    raise ModelNotFound(f"model {name!r} is not in the store {self.store.uri}")
            self.metrics.store_poll(ok=True)
            if self.store_reason:
                log.info("store %s is reachable again", self.store.uri)
            self.store_reason = ""

    def _store_failed(self, exc: Exception) -> None:
        if not self.store_reason:
            log.error("store %s unreachable, serving what is loaded: %s", self.store.uri, exc)
        self.store_reason = str(exc)
        self.metrics.store_poll(ok=False)

    async def _sync_model(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        override = self.config_overrides / f"{name}.yaml" if self.config_overrides else None
        raw: bytes | None
        if override is not None and override.is_file():
            raw, where = override.read_bytes(), str(override)
        else:
            raw = await loop.run_in_executor(None, self.store.read_config, name)
            where = f"{name}/config.yaml"
        entry = self.models.get(name)
        try:
            config = ModelConfig.parse(raw, where=where)
        except ConfigError as exc:
            log.error("%s", exc)
            entry = self.models.setdefault(name, ModelEntry(name, ModelConfig()))
            for model in entry.versions.values():
                if model.state == READY:
                    model.reason = f"config.yaml is invalid, serving with the previous config: {exc}"
            if not entry.versions:
                entry.versions[0] = LoadedModel(name, 0, entry.config, state=UNAVAILABLE, reason=str(exc))
            return
        versions = await loop.run_in_executor(None, self.store.list_versions, name)
        desired = config.version_policy.select(versions)
        if entry is None:
            entry = self.models[name] = ModelEntry(name, config)
        config_changed = entry.config != config
        entry.config = config
        if 0 not in versions:
            entry.versions.pop(0, None)  # the placeholder row of an earlier invalid config.yaml
        if not desired and not entry.ready_versions():
            log.warning("model %s has no version to serve in the store (policy %s)", name, config.version_policy)
        loads = []
        for version in desired:
            current = entry.versions.get(version)
            fingerprint = await loop.run_in_executor(None, self.store.fingerprint, name, version)
            if (
                current is not None
                and current.fingerprint == fingerprint
                and not config_changed
                and current.state in (READY, LOADING)
            ):
                continue
            failed_before = current is not None and current.state == UNAVAILABLE and current.fingerprint == fingerprint
            if failed_before and not config_changed:
                continue  # failed before, unchanged since: do not retry every poll
            loads.append(self._load_version(entry, version, fingerprint, config))
        if loads:
            await asyncio.gather(*loads)
        await self._retire(entry, set(desired))

    async def _retire(self, entry: ModelEntry, desired: set[int]) -> None:
        """Unload versions the policy no longer wants, but never the last READY one before a new one is READY."""
        ready_desired = [v for v in desired if entry.versions.get(v) and entry.versions[v].state == READY]
        for version, model in list(entry.versions.items()):
            if version in desired:
                continue
            if model.state == READY and not ready_desired:
                if not model.reason:
                    log.warning("keeping %s v%s: no newer version is READY", entry.name, version)
                continue
            await self._unload_version(entry, model)

    async def _load_version(self, entry: ModelEntry, version: int, fingerprint: str, config: ModelConfig) -> None:
        name = entry.name
        previous = entry.versions.get(version)
        model = LoadedModel(name, version, config, fingerprint=fingerprint)
        if previous is None or previous.state != READY:
            entry.versions[version] = model
        log.info("loading %s v%s", name, version)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._load_pool, self._load_blocking, model)
        except Exception as exc:  # a failing model never takes the server down
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeLoadError) else str(exc)
            model.state, model.reason = UNAVAILABLE, reason
            seconds = time.perf_counter() - start
            self.metrics.observe_load(name, str(version), model.format or "unknown", seconds, ok=False)
            log.error("failed to load %s v%s: %s", name, version, reason)
            if previous is not None and previous.state == READY:
                # the old files keep serving; the failure shows in the index through a shadow row
                previous.reason = f"reload failed, still serving the previous load: {reason}"
                return
            entry.versions[version] = model
            self.metrics.set_state(name, str(version), model.format or "unknown", UNAVAILABLE)
            return
        seconds = time.perf_counter() - start
        self.metrics.observe_load(name, str(version), model.format, seconds, ok=True)
        self.metrics.set_sla(name, str(version), model.format, config.sla.targets())
        model.state = READY
        model.loaded_at = time.time()
        entry.versions[version] = model  # atomic publish: the Router sees the new version from here on
        self.metrics.set_state(name, str(version), model.format, READY)
        if self._on_ready is not None:
            self._on_ready(model)
        log.info("%s v%s READY (%s, %.2fs)", name, version, model.format, seconds)
        if previous is not None and previous is not model:
            await self._drain_and_close(previous)

    def _load_blocking(self, model: LoadedModel) -> None:
        path: Path = self.store.fetch(model.name, model.version)
        model.path = path
        try:
            self._load_from(model, path)
        except BaseException:
            self._close_blocking(model)
            raise

    def _load_from(self, model: LoadedModel, path: Path) -> None:
        fmt = model.config.runtime or detect_format(path)
        model.format = fmt
        cls = self.factory(fmt)
        runtime = cls()
        options = model.config.runtime_options()
        if fmt == "torch_aoti":
            options.setdefault("num_runners", model.config.instances)  # one AOTInductor runner per worker thread
        runtime.load(path, options)
        model.runtime = runtime
        model.platform = cls.platform
        model.signature = runtime.signature()
        model.executor = WorkerPool(model.config.instances, name=f"tg-{model.name}-{model.version}")
        batching = model.config.batching
        if batching is not None and model.signature.batched:
            metrics, stats, labels = self.metrics, model.stats, (model.name, str(model.version), fmt)

            def on_batch(requests: int, rows: int, seconds: float) -> None:
                metrics.observe_batch(labels, requests)
                stats.record_execution(rows, seconds)

            model.batcher = Batcher(
                runtime,
                instances=model.config.instances,
                max_batch_size=batching.max_batch_size,
                max_queue_delay_ms=batching.max_queue_delay_ms,
                preferred_batch_sizes=batching.preferred_batch_sizes,
                on_batch=on_batch,
                name=f"tg-{model.name}-{model.version}-batch",
            )
        if self.warmup_hook is not None:
            self.warmup_hook(model)

    async def _drain_and_close(self, model: LoadedModel) -> None:
        model.state = UNLOADING
        self.metrics.set_state(model.name, str(model.version), model.format, UNLOADING)
        if model.pending:
            model.drained = asyncio.Event()
            try:
                await asyncio.wait_for(model.drained.wait(), timeout=self.drain_timeout)
            except TimeoutError:
                log.warning("%s v%s: %d requests still running after drain", model.name, model.version, model.pending)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._load_pool, self._close_blocking, model)
        self.metrics.set_state(model.name, str(model.version), model.format, None)

    def _close_blocking(self, model: LoadedModel) -> None:
        if model.batcher is not None:
            model.batcher.close()
        if model.executor is not None:
            model.executor.shutdown(wait=True)
        if model.runtime is not None:
            model.runtime.unload()
            model.runtime = None
        if model.path is not None:
            path, model.path = model.path, None
            try:
                self.store.release(model.name, model.version, path)
            except OSError as exc:
                log.warning("%s v%s: could not release %s: %s", model.name, model.version, path, exc)

    async def _unload_version(self, entry: ModelEntry, model: LoadedModel) -> None:
        log.info("unloading %s v%s", entry.name, model.version)
        if entry.versions.get(model.version) is model:
            del entry.versions[model.version]
        if model.state in (READY, LOADING):
            await self._drain_and_close(model)
        else:
            self.metrics.set_state(model.name, str(model.version), model.format or "unknown", None)

    async def _unload_model(self, name: str) -> None:
        entry = self.models.get(name)
        if entry is None:
            return
        for model in list(entry.versions.values()):
            await self._unload_version(entry, model)
        del self.models[name]

    # -- explicit repository API -------------------------------------------------------------------------------
    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        check_name(name)
        if parameters and any(k.startswith("file:") for k in parameters):
            raise Unsupported("loading model files through the repository API is not supported; use the store")
        self._pinned_unloaded.discard(name)
        await self.sync(only=[name])
        entry = self.models.get(name)
        if entry is not None and not entry.ready_versions():
            reasons = "; ".join(f"v{m.version}: {m.reason}" for m in entry.versions.values() if m.reason)
            raise InvalidInput(f"failed to load {name!r}: {reasons or 'no version to serve'}")

    async def unload(self, name: str) -> None:
        check_name(name)
        async with self._lock:
            if name not in self.models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._pinned_unloaded.add(name)
            await self._unload_model(name)

    async def close(self) -> None:
        for name in list(self.models):
            await self._unload_model(name)
        self._load_pool.shutdown(wait=False)


def check_name(name: str) -> str:
    try:
        return check_model_name(name)
    except StoreError as exc:
        raise InvalidInput(str(exc)) from exc


def synthetic_inputs(signature: Signature, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs shaped from the signature (free dims: batch for the leading one, 1 elsewhere) for warm-up."""
    from gateway.types import DATATYPES

    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = [batch if (i == 0 and d == -1) else (1 if d == -1 else d) for i, d in enumerate(spec.shape)]
        dtype = DATATYPES[spec.datatype].numpy
        if spec.datatype == "BYTES":
            arr = np.empty(shape, dtype=np.object_)
            arr.fill(b"")
            out[spec.name] = arr
        else:
            out[spec.name] = np.zeros(shape, dtype=dtype)
    return out
