"""ModelHost: what is loaded. Loads a version beside the serving one, warms it up, publishes it, then drains and
unloads what it replaces; a version that fails to load or warm up is kept UNAVAILABLE with its reason and never
takes the server or other versions down. An isolated version whose runtime process exits is restarted and reloaded
in the background (LOADING, then READY again); a version parked for the memory budget keeps an index row.

Publishing is one dict assignment of a read-only ModelVersion, so the Router sees the new version atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.lifecycle.assembly import Assembler
from gateway.lifecycle.model import (
    LOADING,
    READY,
    UNAVAILABLE,
    UNLOADING,
    ModelEntry,
    ModelVersion,
    RouteEntry,
    VersionStatus,
)
from gateway.telemetry.metrics import Metrics
from model_store import ModelConfig, ModelStore
from runtimes import RuntimeLoadError, detect_format
from runtimes.isolation import ProcessRuntime

log = logging.getLogger("tensorgate.host")


class ModelHost:
    """Holds every known version by model name; the controller tells it what to load and retire."""

    def __init__(
        self,
        store: ModelStore,
        metrics: Metrics,
        assembler: Assembler,
        *,
        load_threads: int = 1,
        on_ready: Callable[[ModelVersion], Any] | None = None,
        drain_timeout: float = 30.0,
        gate: Callable[[ModelVersion], Awaitable[str | None]] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.assembler = assembler
        self.models: dict[str, ModelEntry] = {}
        self.routes: dict[str, RouteEntry] = {}  # replaced as a whole by publish_routes
        self.drain_timeout = drain_timeout
        self._on_ready = on_ready
        # asked once a version is loaded and warm, before it is published: None publishes it, a reason discards it
        # (a worker process publishes only when every worker has the version ready: gateway.server.worker)
        self._gate = gate
        self._load_pool = ThreadPoolExecutor(max_workers=load_threads, thread_name_prefix="tg-load")
        self._crashes: dict[tuple[str, int], list[float]] = {}  # recent exits of isolated runtimes (restart backoff)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the router and the data plane read ---------------------------------------------------------------
    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def route(self, name: str) -> RouteEntry | None:
        return self.routes.get(name)

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

    def all_loaded(self) -> Iterable[ModelVersion]:
        for entry in self.models.values():
            yield from entry.versions.values()

    def serving(self) -> list[ModelVersion]:
        """The versions that are READY or draining, read through copies (safe from another thread)."""
        return [
            m
            for entry in list(self.models.values())
            for m in list(entry.versions.values())
            if m.runtime is not None and m.state in (READY, UNLOADING)
        ]

    # -- what the controller asks for --------------------------------------------------------------------------
    def publish_routes(self, routes: dict[str, RouteEntry]) -> None:
        """The declared routes, published at once; an unchanged declaration keeps its entry (and policy state)."""
        current = self.routes
        self.routes = {
            name: current[name]
            if name in current and current[name].config == entry.config and current[name].reason == entry.reason
            else entry
            for name, entry in routes.items()
        }

    def entry(self, name: str, config: ModelConfig) -> ModelEntry:
        """The entry for ``name`` (created if new) with ``config`` in force."""
        entry = self.models.get(name)
        if entry is None:
            entry = self.models[name] = ModelEntry(name, config)
        entry.config = config
        return entry

    def config_invalid(self, name: str, reason: str) -> None:
        """A config that does not parse: READY versions keep serving with the previous one, else a placeholder row."""
        entry = self.models.setdefault(name, ModelEntry(name, ModelConfig()))
        for model in entry.versions.values():
            if model.state == READY:
                model.status.reason = f"the config is invalid, serving with the previous one: {reason}"
        if not entry.versions:
            entry.versions[0] = ModelVersion(name, 0, entry.config, status=VersionStatus(UNAVAILABLE, reason))

    async def load(self, entry: ModelEntry, version: int, fingerprint: str, config: ModelConfig) -> None:
        """Load ``version`` beside what serves, publish it once READY, then drain and close what it replaces."""
        name = entry.name
        previous = entry.versions.get(version)
        if previous is None or previous.state != READY:
            entry.versions[version] = ModelVersion(name, version, config, fingerprint)  # LOADING row
        log.info("loading %s v%s", name, version)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        detected: list[str] = []  # the format, once known (it labels a failed load's metrics)
        try:
            model = await loop.run_in_executor(
                self._load_pool, self._load_blocking, name, version, config, fingerprint, detected
            )
        except Exception as exc:  # a failing model never takes the server down
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeLoadError) else str(exc)
            fmt = detected[0] if detected else "unknown"
            self.metrics.observe_load(name, str(version), fmt, time.perf_counter() - start, ok=False)
            self._failed(entry, previous, version, config, fingerprint, fmt, reason)
            return
        seconds = time.perf_counter() - start
        if self._gate is not None:
            refusal = await self._gate(model)
            if refusal is not None:
                await loop.run_in_executor(self._load_pool, self._close_blocking, model)
                self._failed(entry, previous, version, config, fingerprint, model.format, refusal)
                return
        self.metrics.observe_load(name, str(version), model.format, seconds, ok=True)
        self.metrics.set_sla(name, str(version), model.format, config.sla.targets())
        model.status.state = READY
        entry.versions[version] = model  # atomic publish: the Router sees the new version from here on
        if isinstance(model.runtime, ProcessRuntime):
            model.runtime.watch(lambda how: self._exited_elsewhere(loop, model, how))
        self.metrics.set_state(name, str(version), model.format, READY)
        if self._on_ready is not None:
            self._on_ready(model)
        log.info("%s v%s READY (%s, %.2fs)", name, version, model.format, seconds)
        if previous is not None and previous is not model:
            await self._drain_and_close(previous)

    def _failed(
        self,
        entry: ModelEntry,
        previous: ModelVersion | None,
        version: int,
        config: ModelConfig,
        fingerprint: str,
        fmt: str,
        reason: str,
    ) -> None:
        name = entry.name
        log.error("failed to load %s v%s: %s", name, version, reason)
        if previous is not None and previous.state == READY:
            # the old files keep serving; the failure shows in the index through the serving row's reason
            previous.status.reason = f"reload failed, still serving the previous load: {reason}"
            return
        entry.versions[version] = ModelVersion(
            name, version, config, fingerprint, format=fmt, status=VersionStatus(UNAVAILABLE, reason)
        )
        self.metrics.set_state(name, str(version), fmt, UNAVAILABLE)

    def _load_blocking(
        self, name: str, version: int, config: ModelConfig, fingerprint: str, detected: list[str]
    ) -> ModelVersion:
        path = self.store.fetch(name, version)
        try:
            fmt = config.runtime or detect_format(path, config.options.get("filename"))
            detected.append(fmt)
            return self.assembler.assemble(name, version, config, fingerprint, path, fmt)
        except BaseException:
            self._release(name, version, path)
            raise

    # -- isolated runtimes --------------------------------------------------------------------------------------
    def isolated(self) -> list[ModelVersion]:
        """The versions whose runtime runs in its own process (loaded, loading or restarting)."""
        return [m for m in self.all_loaded() if isinstance(m.runtime, ProcessRuntime)]

    def park(self, entry: ModelEntry, version: int, fingerprint: str, config: ModelConfig, reason: str) -> None:
        """Keep ``version`` unloaded, with ``reason`` in the index, until its first request loads it."""
        entry.versions[version] = ModelVersion(
            entry.name, version, config, fingerprint, status=VersionStatus(UNAVAILABLE, reason), on_demand=True
        )

    def _exited_elsewhere(self, loop: asyncio.AbstractEventLoop, model: ModelVersion, how: str) -> None:
        """From the runtime's watcher thread."""
        loop.call_soon_threadsafe(self._runtime_exited, model, how)

    def _runtime_exited(self, model: ModelVersion, how: str) -> None:
        """On the event loop: ``model``'s runtime process exited on its own; restart it unless it is going away."""
        entry = self.models.get(model.name)
        if entry is None or entry.versions.get(model.version) is not model or model.state != READY:
            return
        model.status.state = LOADING
        model.status.reason = f"the runtime process exited ({how}); restarting"
        self.metrics.set_state(model.name, str(model.version), model.format, LOADING)
        task = asyncio.get_running_loop().create_task(self._restart(entry, model, how))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, entry: ModelEntry, model: ModelVersion, how: str) -> None:
        key = (model.name, model.version)
        now = time.monotonic()
        recent = [t for t in self._crashes.get(key, []) if now - t < 60.0] + [now]
        self._crashes[key] = recent
        if len(recent) > 1:  # crashing again within a minute: back off (2 s, 4 s, ... up to 30 s)
            await asyncio.sleep(min(30.0, 2.0 ** (len(recent) - 1)))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._load_pool, self._restart_blocking, model)
        except Exception as exc:
            if entry.versions.get(model.version) is model and model.state == LOADING:
                model.status.state = UNAVAILABLE
                model.status.reason = f"the runtime process exited ({how}); restarting it failed: {exc}"
                self.metrics.set_state(model.name, str(model.version), model.format, UNAVAILABLE)
                log.error("%s v%s: %s", model.name, model.version, model.reason)
            return
        if entry.versions.get(model.version) is not model or model.state != LOADING:
            return  # unloaded meanwhile: closing it stopped the new process
        model.status.state = READY
        model.status.reason = ""
        self.metrics.set_state(model.name, str(model.version), model.format, READY)
        log.info("%s v%s READY again after its runtime process exited (%s)", model.name, model.version, how)

    def _restart_blocking(self, model: ModelVersion) -> None:
        runtime = model.runtime
        assert isinstance(runtime, ProcessRuntime)
        runtime.restart()
        if self.assembler.warmup is not None:
            self.assembler.warmup(model)

    async def retire(self, entry: ModelEntry, desired: set[int]) -> None:
        """Unload versions the policy no longer wants, but never the last READY one before a new one is READY."""
        ready_desired = [v for v in desired if entry.versions.get(v) and entry.versions[v].state == READY]
        for version, model in list(entry.versions.items()):
            if version in desired:
                continue
            if model.state == READY and not ready_desired:
                if not model.reason:
                    log.warning("keeping %s v%s: no newer version is READY", entry.name, version)
                continue
            await self.unload_version(entry, model)

    async def unload_version(self, entry: ModelEntry, model: ModelVersion) -> None:
        log.info("unloading %s v%s", entry.name, model.version)
        if entry.versions.get(model.version) is model:
            del entry.versions[model.version]
        if model.state in (READY, LOADING) or (model.state == UNAVAILABLE and model.runtime is not None):
            await self._drain_and_close(model)  # a runtime that failed to restart still holds its version folder
        else:
            self.metrics.set_state(model.name, str(model.version), model.format or "unknown", None)

    async def unload_model(self, name: str) -> None:
        entry = self.models.get(name)
        if entry is None:
            return
        for model in list(entry.versions.values()):
            await self.unload_version(entry, model)
        del self.models[name]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for name in list(self.models):
            await self.unload_model(name)
        self._load_pool.shutdown(wait=False)

    # -- drain and close ---------------------------------------------------------------------------------------
    async def _drain_and_close(self, model: ModelVersion) -> None:
        model.status.state = UNLOADING
        self.metrics.set_state(model.name, str(model.version), model.format, UNLOADING)
        try:
            async with asyncio.timeout(self.drain_timeout):
                await model.inflight.drained()
        except TimeoutError:
            log.warning(
                "%s v%s: %d requests still running after drain", model.name, model.version, model.inflight.count
            )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._load_pool, self._close_blocking, model)
        self.metrics.set_state(model.name, str(model.version), model.format, None)

    def _close_blocking(self, model: ModelVersion) -> None:
        if model.executor is not None:
            model.executor.close()
        if model.runtime is not None:
            model.runtime.unload()
        if model.path is not None:
            self._release(model.name, model.version, model.path)

    def _release(self, name: str, version: int, path: Path) -> None:
        try:
            self.store.release(name, version, path)
        except OSError as exc:
            log.warning("%s v%s: could not release %s: %s", name, version, path, exc)
