"""LocalStore: a model store in a folder on disk (also TF Serving's layout).

Polled every few seconds for every model, so listing and fingerprinting stay cheap: directory entries come from
``os.scandir`` (no stat per entry), and only linked entries are resolved to check they stay inside the root (a
plain entry of a folder inside the root is inside it).
"""

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

    def _entry_inside(self, entry: os.DirEntry[str]) -> bool:
        """A folder's entry stays inside the root: a plain one always (its folder is inside), a link if its
        target resolves there."""
        if not entry.is_symlink():
            return True
        try:
            self._inside(Path(entry.path))
        except StoreError:
            return False
        return True

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise StoreError(f"{path} resolves outside the store root {self.root}")
        return resolved

    def _model_dir(self, model: str) -> Path:
        check_model_name(model)
        path = self.root / model  # a checked name is one plain entry of the (resolved) root
        return self._inside(path) if path.is_symlink() else path

    def list_models(self) -> list[str]:
        if not self.root.is_dir():
            raise StoreUnavailable(f"store folder {self.root} does not exist")
        names = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                try:
                    check_model_name(entry.name)
                except StoreError:
                    continue
                if self._entry_inside(entry):
                    names.append(entry.name)
        return sorted(names)

    def list_versions(self, model: str) -> list[int]:
        folder = self._model_dir(model)
        if not folder.is_dir():
            raise StoreError(f"model {model!r} is not in the store {self.root}")
        versions = []
        with os.scandir(folder) as entries:
            for entry in entries:
                version = parse_version(entry.name)
                if version is None or not entry.is_dir() or not self._entry_inside(entry):
                    continue
                if _not_empty(entry.path):
                    versions.append(version)
        return sorted(set(versions))

    def _version_dir(self, model: str, version: int) -> Path:
        folder = self._model_dir(model)
        plain = folder / str(version)  # the usual spelling first; ``0002`` and the like by a scan
        if plain.is_dir() and not plain.is_symlink() and _not_empty(str(plain)):
            return plain
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
        base = str(self._version_dir(model, version))
        start = len(base) + 1
        for dirpath, _dirs, files in sorted(os.walk(base)):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                stat = os.stat(path)
                digest.update(f"{path[start:]}:{stat.st_size}:{stat.st_mtime_ns};".encode())
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


def _not_empty(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is not None
