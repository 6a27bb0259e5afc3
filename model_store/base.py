"""The ModelStore contract (what exists: models, versions, configs, fetching a version) and its errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

CONFIG_FILE = "config.yaml"
PBTXT_FILE = "config.pbtxt"  # Triton's ModelConfig in text format, read where there is no config.yaml
CONFIG_FILES = (CONFIG_FILE, PBTXT_FILE)  # in the order they are looked for
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class StoreError(RuntimeError):
    """A store operation failed for this model or version (missing, incomplete, unsafe path)."""


class StoreUnavailable(StoreError):
    """The store itself cannot be reached (network, credentials); what is loaded keeps serving."""


def check_model_name(name: str) -> str:
    """Reject names that could escape the store root or that no model could have."""
    if not _NAME.match(name) or name in {".", ".."} or ".." in name:
        raise StoreError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.', at most 128 characters")
    return name


def parse_version(name: str) -> int | None:
    """A version folder is any name that parses as a non-negative integer (``00012`` is 12)."""
    if name.isascii() and name.isdigit():  # not "³", which isdigit() accepts and int() refuses
        return int(name)
    return None


@dataclass(frozen=True)
class ConfigFile:
    """A model's config as stored: which file it is (``config.yaml`` or ``config.pbtxt``) and its bytes; ``where``
    names it in errors when it did not come from the store (default ``<model>/<name>``)."""

    name: str
    data: bytes
    where: str = ""


@runtime_checkable
class ModelStore(Protocol):
    """What exists in a store. Implementations: LocalStore (a folder), S3Store (s3://bucket/prefix)."""

    uri: str

    def list_models(self) -> list[str]:
        """Model names present in the store (raises StoreUnavailable when the store cannot be read)."""
        ...

    def list_versions(self, model: str) -> list[int]:
        """Complete version numbers of ``model``, ascending."""
        ...

    def read_config(self, model: str) -> ConfigFile | None:
        """The model's config.yaml, else its Triton config.pbtxt, or None when it has neither."""
        ...

    def fingerprint(self, model: str, version: int) -> str:
        """A string that changes whenever the version's files change (for reload on change)."""
        ...

    def fetch(self, model: str, version: int) -> Path:
        """A local directory holding the version's files, complete."""
        ...

    def read_file(self, model: str, relpath: str) -> bytes | None:
        """A file under the model's folder (e.g. golden samples), or None."""
        ...

    def release(self, model: str, version: int, path: Path) -> None:
        """The caller no longer uses ``path`` (returned by ``fetch``): a store that copies versions into a cache
        may delete the copy once nobody uses it."""
        ...
