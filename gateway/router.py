"""Router: resolves a requested model name and version (number, label or none) to a loaded model. Pure, no I/O."""

from __future__ import annotations

from gateway.errors import ModelNotFound, ModelNotReady
from gateway.registry import READY, LoadedModel, ModelEntry, ModelRegistry


class Router:
    """Explicit version, a version label from the model's config, or the latest READY version."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def entry(self, name: str) -> ModelEntry:
        entry = self.registry.models.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not found")
        return entry

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> LoadedModel:
        entry = self.entry(name)
        if label:
            target = entry.config.version_labels.get(label)
            if target is None:
                raise ModelNotFound(f"model {name!r} has no version label {label!r}")
            version = target
        if version is None or version == "":
            ready = entry.ready_versions()
            if not ready:
                raise ModelNotReady(f"model {name!r} has no READY version{_reasons(entry)}")
            return ready[-1]
        if isinstance(version, str):
            if not version.isdigit():
                raise ModelNotFound(f"model {name!r} has no version {version!r} (versions are integers)")
            version = int(version)
        model = entry.versions.get(version)
        if model is None:
            raise ModelNotFound(f"model {name!r} has no version {version}")
        if model.state != READY:
            raise ModelNotReady(f"model {name!r} version {version} is {model.state}{_reasons(entry)}")
        return model

    def latest_known(self, name: str, version: str | None = None) -> LoadedModel | None:
        """A version for metadata/config calls: the requested one, or the latest READY, or any."""
        entry = self.entry(name)
        if version:
            return self.resolve(name, version)
        ready = entry.ready_versions()
        if ready:
            return ready[-1]
        return None


def _reasons(entry: ModelEntry) -> str:
    reasons = [f"v{m.version}: {m.reason}" for m in entry.versions.values() if m.reason]
    return f" ({'; '.join(reasons)})" if reasons else ""
