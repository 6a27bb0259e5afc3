"""Router: the protocol that maps a requested name (and version or label) to the loaded version that serves it,
and ``VersionRouter``, the policy every model gets: an explicit version, a version label from the model's config,
or the latest READY version. Pure: it reads the host's published versions through the ``Catalog`` protocol.
"""

from __future__ import annotations

from typing import Protocol

from gateway.core.errors import ModelNotFound, ModelNotReady
from gateway.lifecycle.model import READY, ModelEntry, ModelVersion


class Catalog(Protocol):
    """What routing reads: the entry of a model name (its config and versions), or None."""

    def get(self, name: str) -> ModelEntry | None: ...


class Router(Protocol):
    """Resolves a request's target. NOT_FOUND for names, versions or labels that do not exist, UNAVAILABLE for
    ones that exist but are not READY."""

    def entry(self, name: str) -> ModelEntry: ...

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion: ...


class VersionRouter:
    """Explicit version, a version label from the model's config, or the latest READY version."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def entry(self, name: str) -> ModelEntry:
        entry = self.catalog.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not found")
        return entry

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
                raise ModelNotReady(f"model {name!r} has no READY version{entry.reasons()}")
            return ready[-1]
        if isinstance(version, str):
            if not version.isdigit():
                raise ModelNotFound(f"model {name!r} has no version {version!r} (versions are integers)")
            version = int(version)
        model = entry.versions.get(version)
        if model is None:
            raise ModelNotFound(f"model {name!r} has no version {version}")
        if model.state != READY:
            raise ModelNotReady(f"model {name!r} version {version} is {model.state}{entry.reasons()}")
        return model
