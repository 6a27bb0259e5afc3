"""LocalStore: a model store in a folder on disk (also TF Serving's layout)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from model_store.base import CONFIG_FILES, ConfigFile, StoreError, StoreUnavailable, check_model_name, parse_version
from model_store.manifest import verify_folder


class LocalStore:
    """``<root>/<model>/config.yaml`` and ``<root>/<model>/<version>/<artifact>``; nothing may leave root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise StoreError(f"{path} resolves outside the store root {self.root}")
        return resolved

    def _model_dir(self, model: str) -> Path:
        check_model_name(model)
        return self._inside(self.root / model)

    def list_models(self) -> list[str]:
        if not self.root.is_dir():
            raise StoreUnavailable(f"store folder {self.root} does not exist")
        names = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                check_model_name(child.name)
                self._inside(child)
            except StoreError:
                continue
            names.append(child.name)
        return names

    def list_versions(self, model: str) -> list[int]:
        folder = self._model_dir(model)
        if not folder.is_dir():
            raise StoreError(f"model {model!r} is not in the store {self.root}")
        versions = []
        for child in folder.iterdir():
            version = parse_version(child.name)
            if version is None or not child.is_dir():
                continue
            try:
                self._inside(child)
            except StoreError:
                continue
            if any(child.iterdir()):
                versions.append(version)
        return sorted(set(versions))

    def _version_dir(self, model: str, version: int) -> Path:
        folder = self._model_dir(model)
        for child in folder.iterdir() if folder.is_dir() else []:
            if parse_version(child.name) == version and child.is_dir() and any(child.iterdir()):
                return self._inside(child)
        raise StoreError(f"model {model!r} has no version {version} in {self.root}")

    def read_config(self, model: str) -> ConfigFile | None:
        folder = self._model_dir(model)
        for name in CONFIG_FILES:
            path = folder / name
            if path.is_file():
                self._inside(path)
                return ConfigFile(name, path.read_bytes())
        return None

    def fingerprint(self, model: str, version: int) -> str:
        digest = hashlib.sha1()
        base = self._version_dir(model, version)
        for dirpath, _dirs, files in sorted(os.walk(base)):
            for name in sorted(files):
                path = Path(dirpath) / name
                stat = path.stat()
                digest.update(f"{path.relative_to(base)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()

    def fetch(self, model: str, version: int) -> Path:
        path = self._version_dir(model, version)
        for dirpath, dirs, files in os.walk(path):
            for name in dirs + files:  # os.walk does not follow linked folders: check them too
                self._inside(Path(dirpath) / name)
        verify_folder(path, f"{model}/{version}")
        return path

    def read_file(self, model: str, relpath: str) -> bytes | None:
        folder = self._model_dir(model)
        path = self._inside(folder / relpath)
        if folder not in path.parents:
            raise StoreError(f"{relpath!r} resolves outside the folder of model {model!r}")
        return path.read_bytes() if path.is_file() else None

    def release(self, model: str, version: int, path: Path) -> None:
        """Nothing to do: versions are served from the store's own folders."""
