"""Router: the protocol that maps a requested name (and version or label) to the loaded version that serves it,
and ``VersionRouter``, the policy every model gets: an explicit version, a version label from the model's config,
or the latest READY version. Pure: it reads the host's published versions through the ``Catalog`` protocol.

``plan`` is what the data plane calls per request: the version to run and, for a route (gateway.routing.routes),
a ``Plan`` — the seam around the runtime call where the route's fallback, learning and shadow traffic happen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from gateway.core.errors import ModelNotFound, ModelNotReady
from gateway.execution.executor import Call
from gateway.lifecycle.model import READY, ModelEntry, ModelVersion


class Catalog(Protocol):
    """What routing reads: the entry of a model name (its config and versions), or None."""

    def get(self, name: str) -> ModelEntry | None: ...


class Plan(Protocol):
    """One request to a route, after its variant was chosen: the data plane reports each attempt's outcome."""

    route: str

    def next(self, code: str, deadline: float | None) -> ModelVersion | None:
        """The chosen variant failed with ``code``: the next one to try within ``deadline``, or None (give up)."""
        ...

    def served(self, seconds: float) -> None:
        """The current variant answered the client; ``seconds`` since the request was received."""
        ...

    def failed(self, code: str, seconds: float) -> None:
        """The request failed for good with ``code``."""
        ...

    def mirror(self, call: Call, answer: Mapping[str, np.ndarray]) -> None:
        """The answered call, for the route's shadow traffic (if any)."""
        ...


class Router(Protocol):
    """Resolves a request's target. NOT_FOUND for names, versions or labels that do not exist, UNAVAILABLE for
    ones that exist but are not READY."""

    def entry(self, name: str) -> ModelEntry: ...

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion: ...

    def plan(
        self, name: str, version: str | int | None = None, label: str | None = None, key: str | None = None
    ) -> tuple[ModelVersion, Plan | None]:
        """The version one request runs on (``key``: the client's routing key) and, for a route, its plan."""
        ...

    def describe(self, name: str) -> dict[str, Any] | None:
        """What a route shows of itself (policy, variants, current choice); None for a model."""
        ...

    def index(self) -> list[dict[str, str]]:
        """Repository index rows for what the router serves beyond the models (routes)."""
        ...


class VersionRouter:
    """Explicit version, a version label from the model's config, or the latest READY version."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def entry(self, name: str) -> ModelEntry:
        entry = self.catalog.get(name)
        if entry is None:
            raise ModelNotFound.model(name)
        return entry

    def plan(
        self, name: str, version: str | int | None = None, label: str | None = None, key: str | None = None
    ) -> tuple[ModelVersion, Plan | None]:
        return self.resolve(name, version, label), None

    def describe(self, name: str) -> dict[str, Any] | None:
        return None

    def index(self) -> list[dict[str, str]]:
        return []

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion:
        entry = self.entry(name)
        if label:
            target = entry.config.version_labels.get(label)
            if target is None:
                raise ModelNotFound(f"model {name!r} has no version label {label!r}")
            version = target
        if version is None or version == "":
            ready = entry.ready_versions()
            if not ready:
                raise ModelNotReady.no_version(name, entry.reasons())
            return ready[-1]
        if isinstance(version, str):
            if not (version.isascii() and version.isdigit()):
                raise ModelNotFound.version(name, repr(version), " (versions are integers)")
            version = int(version)
        model = entry.versions.get(version)
        if model is None:
            raise ModelNotFound.version(name, version)
        if model.state != READY:
            raise ModelNotReady.version(name, version, f" ({model.state}){entry.reasons()}")
        return model
