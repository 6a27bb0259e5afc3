"""TfsConfigStore: the models a TF Serving ``ModelServerConfig`` file names (``--model_config_file``), each served
from its own base path (a local folder or ``s3://``), with the file re-read every ``poll_wait_seconds``.

The file is TF Serving's text format::

    model_config_list {
      config {
        name: "resnet"  base_path: "/models/resnet"  model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }   # or latest { num_versions: N }, all {}
        version_labels { key: "stable" value: 1 }  version_labels { key: "canary" value: 2 }
      }
    }

A base path holds the versions directly (``<base_path>/<version>/saved_model.pb``): it is the model's folder, so
each is read through a LocalStore or S3Store opened on its parent (one per parent, shared by the models under
it). What the entry says becomes the model's config: ``model_platform`` its runtime ("tensorflow" is the
SavedModel runtime; empty detects it; a tensorgate runtime name is taken as is), the version policy and the
labels, over a ``config.yaml`` the base path may hold. Names are checked like any store's.

An invalid file is a ConfigError when the store is opened (the server refuses to start); a later rewrite that is
invalid or unreadable is logged and the last good one keeps serving. ``poll_wait_seconds`` 0 reads the file once
(TF Serving's meaning). Parsing uses the ``ModelServerConfig`` message of tensorflow-serving-api (pure protobuf,
imported only here and only when this store is used).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model_store import open_store
from model_store.base import CONFIG_FILE, ConfigFile, StoreError, StoreUnavailable, check_model_name
from model_store.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

#: model_platform -> tensorgate runtime (besides the runtime names themselves)
PLATFORMS = {"tensorflow": "tf_savedmodel", "onnxruntime": "onnx", "onnx": "onnx", "pytorch": None}


@dataclass(frozen=True)
class TfsModel:
    """One ``config`` entry: its name, where its versions are (parent store URI and folder), and what it sets."""

    name: str
    base_path: str
    parent: str
    folder: str
    settings: dict[str, Any] = field(default_factory=dict)  # runtime / version_policy / version_labels as set


def parse_model_server_config(text: str | bytes, where: str = "model config file") -> list[TfsModel]:
    """The entries of a ModelServerConfig text proto; ConfigError names the entry and field that is wrong."""
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as exc:
        raise ConfigError(
            f"{where}: reading a TF Serving model config file needs tensorflow-serving-api ({exc}); "
            "install tensorgate with the 'tensorflow' extra"
        ) from exc
    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text.decode() if isinstance(text, bytes) else text, message)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not a ModelServerConfig in text format: {exc}") from exc
    if message.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{where}: custom_model_config is not supported; use model_config_list")
    models: list[TfsModel] = []
    seen: set[str] = set()
    for i, entry in enumerate(message.model_config_list.config):
        models.append(_model(entry, f"{where}: config {i + 1}" + (f" ({entry.name!r})" if entry.name else "")))
        if models[-1].name in seen:
            raise ConfigError(f"{where}: model {entry.name!r} is named twice")
        seen.add(models[-1].name)
    return models


def _model(entry: Any, where: str) -> TfsModel:
    try:
        name = check_model_name(entry.name)
    except StoreError as exc:
        raise ConfigError(f"{where}: name: {exc}") from exc
    base_path = entry.base_path.strip()
    if not base_path:
        raise ConfigError(f"{where}: base_path is required (the folder holding <version>/saved_model.pb)")
    parent, folder = _split(base_path, where)
    settings: dict[str, Any] = {}
    runtime = _runtime(entry, where)
    if runtime is not None:
        settings["runtime"] = runtime
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest":
        settings["version_policy"] = {"latest": max(policy.latest.num_versions, 1)}  # 0 means 1, as TF Serving
    elif choice == "all":
        settings["version_policy"] = {"all": True}
    elif choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"{where}: model_version_policy.specific lists no versions")
        settings["version_policy"] = {"specific": sorted(int(v) for v in policy.specific.versions)}
    if entry.version_labels:
        settings["version_labels"] = {str(k): int(v) for k, v in sorted(entry.version_labels.items())}
    if entry.HasField("logging_config"):
        log.warning("%s: logging_config (request logging) is not supported; ignored", where)
    ModelConfig.from_dict(dict(settings), where)  # the labels and policy as a model's config would check them
    return TfsModel(name, base_path, parent, folder, settings)


def _runtime(entry: Any, where: str) -> str | None:
    from runtimes import RUNTIMES

    platform = entry.model_platform.strip()
    legacy = entry.model_type  # deprecated enum: 0 unspecified, 1 TENSORFLOW, 2 OTHER
    if platform and legacy:
        raise ConfigError(f"{where}: set model_platform or the deprecated model_type, not both")
    if legacy == 1:
        platform = "tensorflow"
    elif legacy:
        raise ConfigError(f"{where}: model_type OTHER names no platform; set model_platform")
    if not platform:
        return None
    if platform in RUNTIMES:
        return platform
    if platform in PLATFORMS:
        return PLATFORMS[platform]
    accepted = ", ".join(sorted({*PLATFORMS, *RUNTIMES}))
    raise ConfigError(f"{where}: model_platform {platform!r} is not served; expected one of: {accepted}")


def _split(base_path: str, where: str) -> tuple[str, str]:
    """(the store URI of the parent, the model's folder name in it)."""
    if base_path.startswith("s3://"):
        trimmed = base_path.rstrip("/")
        parent, _, folder = trimmed.rpartition("/")
        if parent in ("s3:/", "s3:") or "/" not in trimmed[len("s3://") :]:
            raise ConfigError(f"{where}: base_path {base_path!r} must name a folder inside the bucket")
    elif "://" in base_path:
        raise ConfigError(f"{where}: base_path {base_path!r}: only local folders and s3:// are supported")
    else:
        path = Path(base_path).expanduser().absolute()
        parent, folder = str(path.parent), path.name
    try:
        check_model_name(folder)
    except StoreError as exc:
        raise ConfigError(f"{where}: base_path {base_path!r}: its last folder cannot be served: {exc}") from exc
    return parent, folder


class TfsConfigStore:
    """A ModelStore over the models of a ModelServerConfig file; ``list_models`` re-reads the file when due."""

    def __init__(self, path: str | Path, poll_wait_seconds: float = 0.0, **store_options: Any) -> None:
        self.path = Path(path).expanduser().absolute()
        self.uri = f"model_config_file:{self.path}"
        self.poll_wait_seconds = poll_wait_seconds
        self.store_options = store_options
        self._lock = threading.Lock()
        self._stores: dict[str, Any] = {}  # parent URI -> LocalStore / S3Store, kept across re-reads
        self._missing: set[str] = set()  # base paths found missing (warned about once)
        self._fetched: dict[Path, tuple[Any, str, int]] = {}  # a fetched copy -> (its store, folder, fetches)
        self._raw = self._read_initial()
        self._models = self._index(parse_model_server_config(self._raw, f"model config file {self.path}"))
        self._read_at = time.monotonic()
        self.reload_error = ""  # why the last re-read was refused ("" when it was not)

    def _read_initial(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"model config file {self.path}: cannot be read: {exc}") from exc

    @classmethod
    def single(cls, name: str, base_path: str, **store_options: Any) -> TfsConfigStore:
        """TF Serving's one-model mode (``--model_name``, ``--model_base_path``): that model, runtime detected."""
        return _SingleModel(name, base_path, **store_options)

    def _index(self, models: list[TfsModel]) -> dict[str, TfsModel]:
        for model in models:
            if model.parent not in self._stores:
                try:
                    options = self.store_options if model.parent.startswith("s3://") else {}
                    self._stores[model.parent] = open_store(model.parent, **options)
                except StoreError as exc:
                    raise ConfigError(f"model {model.name!r}: base_path {model.base_path!r}: {exc}") from exc
        return {m.name: m for m in models}

    def reload(self, force: bool = False) -> bool:
        """Re-read the file if ``poll_wait_seconds`` have passed (or ``force``); whether the models changed. An
        invalid or unreadable file is logged (once per content) and the last good one stays in force."""
        with self._lock:
            now = time.monotonic()
            if not force and (self.poll_wait_seconds <= 0 or now - self._read_at < self.poll_wait_seconds):
                return False
            self._read_at = now
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                return self._refuse(f"cannot be read: {exc}")
            if raw == self._raw:
                return False
            try:
                models = self._index(parse_model_server_config(raw, f"model config file {self.path}"))
            except ConfigError as exc:
                return self._refuse(str(exc))
            changed = models != self._models
            self._models, self._raw, self.reload_error = models, raw, ""
            log.info("model config file %s re-read: serving %s", self.path, ", ".join(sorted(models)) or "nothing")
            return changed

    def _refuse(self, reason: str) -> bool:
        if reason != self.reload_error:
            log.error("ignoring the new model config file, keeping the last good one: %s", reason)
        self.reload_error = reason
        return False

    def _entry(self, model: str) -> tuple[TfsModel, Any]:
        found = self._models.get(model)
        if found is None and self.poll_wait_seconds > 0:
            # asked for a model this copy has not read yet: another process (the supervisor of several workers)
            # polls the file and saw it first; read it now rather than at the next due time
            self.reload(force=True)
            found = self._models.get(model)
        if found is None:
            raise StoreError(f"model {model!r} is not in the model config file {self.path}")
        return found, self._stores[found.parent]

    # -- ModelStore --------------------------------------------------------------------------------------------
    def list_models(self) -> list[str]:
        self.reload()
        return sorted(self._models)

    def list_versions(self, model: str) -> list[int]:
        """The base path's versions; none while it does not exist (TF Serving waits for it too)."""
        entry, store = self._entry(model)
        try:
            versions: list[int] = store.list_versions(entry.folder)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if entry.base_path not in self._missing:
                log.warning("model %s: no versions at base_path %s yet: %s", model, entry.base_path, exc)
                self._missing.add(entry.base_path)
            return []
        self._missing.discard(entry.base_path)
        return versions

    def read_config(self, model: str) -> ConfigFile | None:
        """The base path's config (config.yaml or Triton's config.pbtxt, if any) with what the file sets for the
        model on top, as config.yaml."""
        entry, store = self._entry(model)
        file = store.read_config(entry.folder)
        if not entry.settings:
            return file  # type: ignore[no-any-return]
        where = f"{entry.base_path}/{file.name if file is not None else CONFIG_FILE}"
        try:
            base = ModelConfig.from_file(file, model).model_dump(exclude_defaults=True) if file is not None else {}
        except ConfigError:
            return file  # type: ignore[no-any-return]  # the model's own error, reported as such when parsed
        data = yaml.safe_dump({**base, **entry.settings}, sort_keys=False).encode()  # the file's fields replace
        return ConfigFile(CONFIG_FILE, data, where)

    def fingerprint(self, model: str, version: int) -> str:
        entry, store = self._entry(model)
        return f"{entry.base_path}:{store.fingerprint(entry.folder, version)}"

    def fetch(self, model: str, version: int) -> Path:
        entry, store = self._entry(model)
        path: Path = store.fetch(entry.folder, version)
        with self._lock:
            held = self._fetched.get(path)
            self._fetched[path] = (store, entry.folder, 1 + (held[2] if held is not None else 0))
        return path

    def read_file(self, model: str, relpath: str) -> bytes | None:
        entry, store = self._entry(model)
        data: bytes | None = store.read_file(entry.folder, relpath)
        return data

    def release(self, model: str, version: int, path: Path) -> None:
        """Handed to the store that fetched ``path``, even if the model has left the file or moved since."""
        with self._lock:
            found = self._fetched.pop(path, None)
            if found is not None and found[2] > 1:
                self._fetched[path] = (found[0], found[1], found[2] - 1)
        if found is not None:
            found[0].release(found[1], version, path)


class _SingleModel(TfsConfigStore):
    """The store of ``--model_name``/``--model_base_path``: one entry, written nowhere, never re-read."""

    def __init__(self, name: str, base_path: str, **store_options: Any) -> None:
        self._entry_text = f"model_config_list {{ config {{ name: {_quoted(name)} base_path: {_quoted(base_path)} }} }}"
        super().__init__(base_path, 0.0, **store_options)
        self.uri = base_path

    def _read_initial(self) -> bytes:
        return self._entry_text.encode()


def _quoted(text: str) -> str:
    """A text-format string literal."""
    from google.protobuf import text_encoding

    return f'"{text_encoding.CEscape(text, as_utf8=True)}"'
