"""ModelController: decides which versions should be loaded — from the store's listing, each model's version
policy and config (with its override merged in), the models pinned unloaded through the repository API — and asks the
ModelHost to load and retire them. ``sync()`` follows the store; ``load``/``unload`` are the repository API.

With a memory budget it also decides which isolated models stay loaded: each is measured (its runtime process's
resident memory) once loaded; a load that would exceed the budget waits for a first request (the version is parked,
its reason in the index), and a load on request first unloads the least recently used isolated models.

It also decides which routes exist: a store folder with a ``route.yaml`` and no versions, an override file
``<route>.route.yaml``, or the variants exported from one source model; published to the host after each sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.errors import InvalidInput, ModelNotFound, Unsupported
from gateway.lifecycle.host import ModelHost
from gateway.lifecycle.model import LOADING, READY, UNAVAILABLE, ModelEntry, ModelVersion, RouteEntry
from gateway.telemetry.metrics import Metrics
from model_store import ConfigError, ModelConfig, ModelStore, StoreError, StoreUnavailable
from model_store.base import PBTXT_FILE, ConfigFile, check_model_name
from model_store.config import ISOLATED_BY_DEFAULT
from model_store.route import OVERRIDE_SUFFIX, ROUTE_FILE, RouteConfig, auto_routes
from model_store.triton_config import json_to_text
from runtimes import RUNTIMES
from runtimes.isolation import ProcessRuntime

log = logging.getLogger("tensorgate.controller")

PARKED = "unloaded: memory budget (loads on its first request)"
EVICTED = "unloaded: memory budget (least recently used; loads on its next request)"


class ModelController:
    def __init__(
        self,
        store: ModelStore,
        host: ModelHost,
        metrics: Metrics,
        *,
        config_overrides: Path | None = None,
        memory_budget: int | None = None,
    ) -> None:
        self.store = store
        self.memory_budget = memory_budget  # bytes the isolated models' processes may hold together (None: no limit)
        self._sizes: dict[str, int] = {}  # each isolated model's resident memory when last loaded
        self._demand: dict[str, asyncio.Task[None]] = {}  # loads on request in progress, by model
        self.host = host
        self.metrics = metrics
        self.config_overrides = config_overrides
        self.store_reason = ""  # why the store could not be read at the last sync ("" when it could)
        self.listed = False  # the store has been listed at least once
        self.wanted: dict[str, set[int]] = {}  # the versions each model's policy wants, as of its last sync
        self._pinned_unloaded: set[str] = set()
        self._route_files: dict[str, RouteEntry] = {}  # store folders holding a route.yaml, as last read
        self._configs: dict[str, ModelConfig] = {}  # each model's config as last read (exported variants form routes)
        self._load_configs: dict[str, ConfigFile] = {}  # configs given with a repository load, in place of the store's
        self._parsed: dict[str, tuple[ConfigFile | None, bytes | None, ModelConfig]] = {}  # raw texts -> parsed config
        self._lock = asyncio.Lock()

    @property
    def lock(self) -> asyncio.Lock:
        """Held by every change of what is loaded (a new worker process catching up holds it too)."""
        return self._lock

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
            if not present and any(e.ready_versions() for e in self.host.models.values()):
                # An empty listing while models serve is far more often a store hiccup (a bucket being
                # restored, a wrong mount) than a wish to serve nothing: keep serving and say so.
                self._store_failed(StoreUnavailable(f"store {self.store.uri} lists no models; keeping what is loaded"))
                return
            if not present and not self.store_reason:
                log.warning("store %s holds no models (expected <model>/<version>/<artifact>)", self.store.uri)
            chosen = [
                name
                for name in names
                if (wanted is None or name in wanted) and (wanted is not None or name not in self._pinned_unloaded)
            ]
            # every read of the store in one hop off the event loop: a poll of 1,000 models is one task, not 3,000
            surveys = await loop.run_in_executor(None, self._survey_all, chosen)
            for name in chosen:
                try:
                    await self._sync_model(name, surveys[name])
                except StoreUnavailable as exc:
                    self._store_failed(exc)
                    return
            if wanted is None:
                for name in list(self.host.models):
                    if name not in present:
                        log.info("model %s left the store; unloading", name)
                        self.wanted.pop(name, None)
                        await self.host.unload_model(name)
                for known in (self._route_files, self._configs, self._parsed):
                    for name in [n for n in known if n not in present]:
                        del known[name]
            else:
                for name in wanted - present:
                    raise ModelNotFound(f"failed to load {name!r}: it is not in the store {self.store.uri}")
            self._publish_routes()
            self.listed = True  # a whole pass: every model listed has its wanted versions known (strict readiness)
            self.metrics.store_poll(ok=True)
            if self.store_reason:
                log.info("store %s is reachable again", self.store.uri)
            self.store_reason = ""

    def _store_failed(self, exc: Exception) -> None:
        if not self.store_reason:
            log.error("store %s unreachable, serving what is loaded: %s", self.store.uri, exc)
        self.store_reason = str(exc)
        self.metrics.store_poll(ok=False)

    def _survey_all(self, names: list[str]) -> dict[str, _Survey]:
        """``_survey`` of each model (in a worker thread); a store error stays with its model."""
        surveys = {}
        for name in names:
            try:
                surveys[name] = self._survey(name)
            except StoreError as exc:
                surveys[name] = _Survey([], error=exc)
        return surveys

    def _survey(self, name: str) -> _Survey:
        """What one poll needs to know of a model, read from the store (blocking): its versions, then a route
        file (no versions), or its config (or why it is invalid) and the fingerprints of the versions it wants."""
        versions = self.store.list_versions(name)
        if not versions:
            raw = self.store.read_file(name, ROUTE_FILE)
            if raw is not None:
                return _Survey(versions, route=raw)
        try:
            config = self._read_config(name)
        except ConfigError as exc:
            return _Survey(versions, config_error=exc)
        wanted = config.version_policy.select(versions)
        return _Survey(versions, config, fingerprints={v: self.store.fingerprint(name, v) for v in wanted})

    def _read_config(self, name: str) -> ModelConfig:
        """The store's config.yaml (or Triton's config.pbtxt, or the config a repository load gave), with the
        model's override (if any) merged in field by field (blocking)."""
        override = self.config_overrides / f"{name}.yaml" if self.config_overrides else None
        file = self._load_configs.get(name) or self.store.read_config(name)
        extra = override.read_bytes() if override is not None and override.is_file() else None
        cached = self._parsed.get(name)
        if cached is not None and cached[0] == file and cached[1] == extra:
            return cached[2]  # unchanged since the last poll: no parse (1,000 models poll every few seconds)
        if extra is not None and override is not None:
            config = ModelConfig.from_file(file, name, extra, str(override))
        else:
            config = ModelConfig.from_file(file, name)
        self._parsed[name] = (file, extra, config)
        return config

    async def _sync_model(self, name: str, survey: _Survey) -> None:
        if survey.error is not None:
            raise survey.error
        versions = survey.versions
        if survey.route is not None:
            await self._route_file(name, survey.route)
            return
        self._route_files.pop(name, None)
        if survey.config is None:
            exc = survey.config_error
            log.error("%s", exc)
            self.host.config_invalid(name, str(exc))
            self.wanted.setdefault(name, set())
            return
        config = survey.config
        self._configs[name] = config
        desired = config.version_policy.select(versions)
        self.wanted[name] = set(desired)
        known = self.host.get(name)
        config_changed = known is not None and _loaded_differently(known.config, config)
        entry = self.host.entry(name, config)
        if 0 not in versions:
            entry.versions.pop(0, None)  # the placeholder row of an earlier invalid config.yaml
        if not desired and not entry.ready_versions():
            log.warning("model %s has no version to serve in the store (policy %s)", name, config.version_policy)
        loads = []
        for version in desired:
            current = entry.versions.get(version)
            fingerprint = survey.fingerprints[version]
            unchanged = current is not None and current.fingerprint == fingerprint and not config_changed
            if unchanged and current is not None and current.state in (READY, LOADING, UNAVAILABLE):
                continue  # serving or loading already; or failed before and unchanged since: not retried every poll
            if self._budgeted(name, config):
                await self._load_within_budget(entry, version, fingerprint, config, on_request=False)
                continue
            loads.append(self.host.load(entry, version, fingerprint, config))
        if loads:
            await asyncio.gather(*loads)
        await self.host.retire(entry, set(desired))

    # -- memory budget -----------------------------------------------------------------------------------------
    def _budgeted(self, name: str, config: ModelConfig) -> bool:
        """Whether loading ``name`` counts against the memory budget: it is isolated (known from its config, or
        from a load before)."""
        if self.memory_budget is None:
            return False
        if config.isolation is not None:
            return config.isolation == "process"
        entry = self.host.get(name)
        formats = {m.format for m in entry.versions.values() if m.format} if entry is not None else set()
        known = {config.runtime} if config.runtime else formats
        return bool(known) and all(f in ISOLATED_BY_DEFAULT for f in known)

    def _used(self, besides: str = "") -> int:
        """Resident memory of the isolated models' processes now (all but ``besides``'s)."""
        total = 0
        for model in self.host.isolated():
            if model.name != besides and model.runtime is not None:
                total += _rss(model)
        return total

    def _estimate(self, name: str) -> int:
        """What loading ``name`` will take: its size when last loaded, else the largest isolated model measured."""
        return self._sizes.get(name, max(self._sizes.values(), default=0))

    async def _load_within_budget(
        self, entry: ModelEntry, version: int, fingerprint: str, config: ModelConfig, *, on_request: bool
    ) -> None:
        """Load an isolated version if it fits (on request: after unloading the least recently used isolated
        models until it does); else park it until its first request. Over the budget afterwards (the estimate was
        low), the least recently used others are unloaded."""
        budget = self.memory_budget
        assert budget is not None
        name = entry.name
        need = self._estimate(name)
        if self._used(besides=name) + need > budget:
            if not on_request:
                log.info("%s v%s: not loaded, over the memory budget; it loads on its first request", name, version)
                self.host.park(entry, version, fingerprint, config, PARKED)
                return
            await self._evict(name, need)
        await self.host.load(entry, version, fingerprint, config)
        model = entry.versions.get(version)
        if model is None or model.state != READY or model.runtime is None:
            return
        size = _rss(model)
        if size:
            self._sizes[name] = size
        if self._used() > budget:
            await self._evict(name, 0)

    async def _evict(self, keep: str, need: int) -> None:
        """Unload the least recently used isolated models (never ``keep``) until ``need`` more bytes fit."""
        budget = self.memory_budget
        assert budget is not None
        while self._used(besides=keep) + need > budget:
            candidates = [m for m in self.host.isolated() if m.name != keep and m.state == READY]
            if not candidates:
                return
            victim = min(candidates, key=_last_used)
            entry = self.host.get(victim.name)
            if entry is None:
                return
            log.info("unloading %s v%s to stay within the memory budget (least recently used)", victim.name,
                     victim.version)  # fmt: skip
            await self.host.unload_version(entry, victim)
            self.host.park(entry, victim.version, victim.fingerprint, victim.config, EVICTED)

    def parked(self, name: str) -> bool:
        """Whether ``name`` has a version waiting for its first request (the memory budget)."""
        entry = self.host.get(name)
        return entry is not None and any(m.on_demand for m in entry.versions.values())

    def load_parked(self, name: str) -> asyncio.Future[None]:
        """Load ``name``'s parked versions (one load shared by every request waiting for it); await it shielded."""
        task = self._demand.get(name)
        if task is None or task.done():
            task = self._demand[name] = asyncio.get_running_loop().create_task(self._load_parked(name))
        return asyncio.shield(task)

    async def _load_parked(self, name: str) -> None:
        async with self._lock:
            entry = self.host.get(name)
            if entry is None:
                return
            for model in [m for m in entry.versions.values() if m.on_demand]:
                log.info("%s v%s: loading on request (memory budget)", name, model.version)
                await self._load_within_budget(entry, model.version, model.fingerprint, entry.config, on_request=True)

    # -- routes ------------------------------------------------------------------------------------------------
    async def _route_file(self, name: str, raw: bytes) -> None:
        """The folder ``name`` (which has no versions) holds a route.yaml: remember its declaration."""
        if name in self.host.models:
            log.info("%s is a route now; unloading the model of that name", name)
            await self.host.unload_model(name)
        self._route_files[name] = _route_entry(name, raw, f"{name}/{ROUTE_FILE}", "store")

    def _publish_routes(self) -> None:
        """Routes from exported variants, then route.yaml folders, then override files (each replaces the one
        before of the same name). A route named like a model is refused: the model keeps its name."""
        routes = {
            name: RouteEntry(name, config, "export")
            for name, config in auto_routes(self._configs, list(RUNTIMES)).items()
            if name not in self._configs
        }
        routes.update(self._route_files)
        if self.config_overrides is not None and self.config_overrides.is_dir():
            for path in sorted(self.config_overrides.glob(f"*{OVERRIDE_SUFFIX}")):
                name = path.name[: -len(OVERRIDE_SUFFIX)]
                try:
                    check_model_name(name)
                    raw = path.read_bytes()
                except (StoreError, OSError) as exc:
                    log.error("ignoring route override %s: %s", path, exc)
                    continue
                if name in self._configs:
                    log.error("ignoring route override %s: %r is a model, not a route", path, name)
                    continue
                routes[name] = _route_entry(name, raw, str(path), "override")
        self.host.publish_routes(routes)

    # -- repository API ----------------------------------------------------------------------------------------
    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        check_name(name)
        if parameters and any(k.startswith("file:") for k in parameters):
            raise Unsupported("loading model files through the repository API is not supported; use the store")
        config = (parameters or {}).get("config")
        if config is not None:  # Triton's load with a config: it replaces the store's until a load without one
            self._load_configs[name] = self._load_config(name, config)
        else:
            self._load_configs.pop(name, None)
        self._pinned_unloaded.discard(name)
        await self.sync(only=[name])
        if self.parked(name):  # asked for by name: it loads now, unloading others if the budget needs it
            await self.load_parked(name)
        entry = self.host.get(name)
        if entry is None:
            return
        failed = [  # as in Triton, a load fails when a version it asked for did not load (a failed reload too)
            f"v{version}: {model.reason if model is not None else 'not loaded'}"
            for version in sorted(self.wanted.get(name, ()))
            if (model := entry.versions.get(version)) is None or model.state != READY or model.reason
        ]
        if failed or not entry.ready_versions():
            raise InvalidInput(f"failed to load {name!r}: {'; '.join(failed) or 'no version to serve'}")

    async def unload(self, name: str) -> None:
        check_name(name)
        async with self._lock:
            if name not in self.host.models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._pinned_unloaded.add(name)
            self.wanted.pop(name, None)
            await self.host.unload_model(name)

    # -- readiness ---------------------------------------------------------------------------------------------
    def unready(self, need_listing: bool = True) -> str | None:
        """Why the server should not count as ready, or None: the store was never listed (``need_listing``), a
        model's config is invalid, or a version its policy wants is not READY. A version loading beside a READY
        one of the same model does not count (a rollout keeps serving)."""
        if need_listing and not self.listed:
            return f"the store {self.store.uri} has not been listed yet: {self.store_reason or 'starting'}"
        for name in sorted(self.wanted):
            entry = self.host.get(name)
            if entry is None:
                continue
            serving = bool(entry.ready_versions())
            placeholder = entry.versions.get(0)
            if placeholder is not None and placeholder.state == UNAVAILABLE and 0 not in self.wanted[name]:
                return f"model {name}: {placeholder.reason}"
            for version in sorted(self.wanted[name]):
                model = entry.versions.get(version)
                state = model.state if model is not None else "not loaded"
                if state == READY or (state == LOADING and serving) or (model is not None and model.on_demand):
                    continue
                reason = f": {model.reason}" if model is not None and model.reason else ""
                return f"model {name} v{version} is {state}{reason}"
        return None

    def failed(self) -> list[str]:
        """The models whose wanted versions failed to load (UNAVAILABLE), as ``name vN: reason`` lines."""
        rows = []
        for name, versions in sorted(self.wanted.items()):
            entry = self.host.get(name)
            for model in [] if entry is None else entry.versions.values():
                if model.on_demand:
                    continue
                if model.state == UNAVAILABLE and (model.version in versions or model.version == 0):
                    rows.append(f"{name} v{model.version}: {model.reason}")
        return rows

    @staticmethod
    def _load_config(name: str, config: Any) -> ConfigFile:
        """A repository load's ``config`` (Triton's ModelConfig as JSON), checked before it replaces anything."""
        where = f"{name} (the config given to load)"
        try:
            if not isinstance(config, str | bytes):
                raise ConfigError(f"{where}: expected Triton's model config as a JSON string")
            file = ConfigFile(PBTXT_FILE, json_to_text(config, where), where)
            ModelConfig.from_file(file, name)
        except ConfigError as exc:
            raise InvalidInput(f"failed to load {name!r}: {exc}") from exc
        return file


def _loaded_differently(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether loaded versions must be loaded again: a change of labels or version policy only changes what is
    routed and which versions are wanted, so the versions that stay keep serving as they are."""
    if old == new:
        return False
    routing = {"version_labels", "version_policy"}
    return old.model_dump(exclude=routing) != new.model_dump(exclude=routing)


@dataclass
class _Survey:
    """One model as one poll read it (``ModelController._survey``): a store error, a route file, or its versions
    with its config (or why that is invalid) and the fingerprints of the versions its policy wants."""

    versions: list[int]
    config: ModelConfig | None = None
    config_error: ConfigError | None = None
    fingerprints: dict[int, str] = field(default_factory=dict)
    route: bytes | None = None
    error: StoreError | None = None


def _rss(model: ModelVersion) -> int:
    runtime = model.runtime
    return runtime.rss() if isinstance(runtime, ProcessRuntime) else 0


def _last_used(model: ModelVersion) -> float:
    runtime = model.runtime
    return runtime.last_used if isinstance(runtime, ProcessRuntime) else 0.0


def check_name(name: str) -> str:
    try:
        return check_model_name(name)
    except StoreError as exc:
        raise InvalidInput(str(exc)) from exc


def _route_entry(name: str, raw: bytes, where: str, origin: str) -> RouteEntry:
    try:
        return RouteEntry(name, RouteConfig.parse(raw, where=where), origin)
    except ConfigError as exc:
        log.error("%s", exc)
        return RouteEntry(name, None, origin, str(exc))
