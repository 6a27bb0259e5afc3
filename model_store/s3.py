"""S3Store: a model store in ``s3://bucket/prefix`` (AWS S3 or an S3-compatible server), fetched to a cache.

Layout: ``<prefix>/<model>/config.yaml`` and ``<prefix>/<model>/<version>/<files>``, as for a local store.

A version is *complete* (listed by ``list_versions`` and fetchable) when its folder holds a model artefact
(``model.onnx``, ``saved_model.pb``/``.pbtxt`` or ``model.pt2``) at its top, every key in it is a safe
relative path, and the first of these rules that applies holds:

1. it has a ``MANIFEST.json`` (``{"files": {"<relpath>": {"size": N, "sha256": "<hex>"}}}``, see
   :func:`build_manifest`): every file it lists is present with the listed size; ``fetch`` also checks
   the sha256 of each listed file that has one;
2. it has a ``_COMPLETE`` or ``.complete`` marker object (write it last);
3. otherwise it must look settled: its listing (key, size, ETag of every object) is the same as at this
   store's previous listing of the model (with one listing per poll: unchanged for one poll interval), or
   its newest object was modified more than ``settle_seconds`` ago (so a store opened long after an upload
   needs no second poll).

Failures to reach the store (connection refused, timeouts, 5xx, missing bucket, credentials) raise
StoreUnavailable within seconds (short timeouts, one retry); a missing model or version, or an unsafe key,
raises StoreError.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.base import CONFIG_FILES, ConfigFile, StoreError, StoreUnavailable, check_model_name, parse_version
from model_store.manifest import (
    MANIFEST,
    MARKERS,
    ManifestEntry,
    build_manifest,
    check_relpath,
    parse_manifest,
    verify_folder,
)

try:
    import boto3
    import botocore.exceptions
    import urllib3.exceptions
    from botocore.config import Config
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise StoreError(f"s3:// stores need boto3 ({exc}); install tensorgate with the 's3' extra") from exc

__all__ = ["ARTEFACTS", "MANIFEST", "MARKERS", "S3Store", "build_manifest", "check_relpath"]

log = logging.getLogger(__name__)

ARTEFACTS = ("model.onnx", "saved_model.pb", "saved_model.pbtxt", "model.pt2")
CACHE_ENV = "TENSORGATE_CACHE_DIR"
_CHUNK = 1 << 20

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]{2,254}$")
# Error codes that mean "the store cannot be used right now" rather than "this object is missing".
_UNAVAILABLE_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "RequestTimeTooSkewed",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
}


@dataclass(frozen=True)
class S3Object:
    """One object of a version folder, as listed."""

    key: str
    rel: str
    size: int
    etag: str
    modified: float


def _fingerprint(objects: list[S3Object]) -> str:
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.rel):
        digest.update(f"{obj.rel}\0{obj.size}\0{obj.etag}\n".encode())
    return digest.hexdigest()


USERS = ".users"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class S3Store:
    """Models under ``s3://bucket/prefix``; ``fetch`` copies a version to ``cache_dir`` atomically, once."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        cache_dir: str | Path | None = None,
        settle_seconds: float = 30.0,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 2,
    ) -> None:
        self.bucket, self.prefix = self._parse_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.settle_seconds = settle_seconds
        base = cache_dir or os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "tensorgate-cache"
        self.cache_dir = Path(base).expanduser().resolve() / self.bucket / Path(*self.prefix.split("/"))
        session = boto3.session.Session(region_name=region)
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            user_agent_extra="tensorgate",
        )
        try:
            self._client = session.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=session.region_name or "us-east-1",
                config=config,
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreUnavailable(f"{self.uri}: cannot create an S3 client: {exc}") from exc
        self.endpoint_url: str = self._client.meta.endpoint_url
        self._lock = threading.Lock()
        self._fetch_locks: dict[tuple[str, int], threading.Lock] = {}
        # (model, version) -> (listing fingerprint, found complete) at the previous list_versions
        self._seen: dict[tuple[str, int], tuple[str, bool]] = {}
        self._manifests: dict[tuple[str, str], dict[str, ManifestEntry]] = {}
        # fetched copy -> fetches this process has not released yet
        self._users: dict[Path, int] = {}

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint_url={self.endpoint_url!r})"

    @staticmethod
    def _parse_uri(uri: str) -> tuple[str, str]:
        if not uri.startswith("s3://"):
            raise StoreError(f"{uri!r} is not an s3://bucket/prefix URI")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise StoreError(f"{uri!r}: {bucket!r} is not a valid bucket name")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_relpath(prefix)
            except StoreError as exc:
                raise StoreError(f"{uri!r}: bad prefix: {exc}") from exc
        return bucket, prefix

    # --- S3 calls -------------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Map botocore/urllib3 failures: store-level ones to StoreUnavailable, the rest to StoreError."""
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = f"{self.uri}: {what}: {code or status} {error.get('Message', '')}".rstrip()
            if code in _UNAVAILABLE_CODES or status >= 500 or status in {401, 403}:
                raise StoreUnavailable(message) from exc
            raise StoreError(message) from exc
        except (
            botocore.exceptions.BotoCoreError,
            urllib3.exceptions.HTTPError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise StoreUnavailable(f"{self.uri}: {what}: {type(exc).__name__}: {exc}") from exc

    def _list(self, prefix: str, delimiter: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """All objects and common prefixes under ``prefix`` (every page)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        with self._errors(f"listing {prefix!r}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                objects.extend(page.get("Contents", []))
                prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        return objects, prefixes

    def _get(self, key: str) -> bytes | None:
        """An object's bytes, or None when the key does not exist."""
        with self._errors(f"reading {key!r}"):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                    return None
                raise
            body: bytes = response["Body"].read()
            return body

    # --- listing -------------------------------------------------------------------------------------------

    def _model_prefix(self, model: str) -> str:
        return f"{self._root}{check_model_name(model)}/"

    def list_models(self) -> list[str]:
        _objects, prefixes = self._list(self._root, "/")
        names = []
        for prefix in prefixes:
            name = prefix[len(self._root) :].rstrip("/")
            try:
                names.append(check_model_name(name))
            except StoreError:
                log.warning("%s: ignoring folder %r: not a valid model name", self.uri, name)
        return sorted(names)

    def _model_objects(self, model: str) -> dict[int, list[S3Object]]:
        """Every version folder of ``model`` with its objects; StoreError when the model has no object."""
        base = self._model_prefix(model)
        listed, _ = self._list(base)
        if not listed:
            raise StoreError(f"model {model!r} is not in the store {self.uri}")
        versions: dict[int, list[S3Object]] = {}
        for item in listed:
            key: str = item["Key"]
            folder, sep, rel = key[len(base) :].partition("/")
            version = parse_version(folder)
            if version is None or not sep or not rel or rel.endswith("/"):
                continue  # config.yaml, golden/, folder markers
            modified = item.get("LastModified")
            versions.setdefault(version, []).append(
                S3Object(
                    key=key,
                    rel=rel,
                    size=int(item.get("Size", 0)),
                    etag=str(item.get("ETag", "")).strip('"'),
                    modified=modified.timestamp() if modified is not None else 0.0,
                )
            )
        return versions

    def _version_objects(self, model: str, version: int) -> list[S3Object]:
        objects = self._model_objects(model).get(version)
        if not objects:
            raise StoreError(f"model {model!r} has no version {version} in {self.uri}")
        return objects

    def _manifest(self, obj: S3Object) -> dict[str, ManifestEntry]:
        cached = self._manifests.get((obj.key, obj.etag))
        if cached is not None:
            return cached
        data = self._get(obj.key)
        if data is None:
            raise StoreError(f"{obj.key} disappeared while reading it")
        entries = parse_manifest(data)
        with self._lock:
            if len(self._manifests) > 4096:
                self._manifests.clear()
            self._manifests[(obj.key, obj.etag)] = entries
        return entries

    def _incomplete(self, objects: list[S3Object], stable: bool) -> str | None:
        """Why this version is not complete, or None when it is (the rule of the module docstring)."""
        by_rel = {obj.rel: obj for obj in objects}
        for obj in objects:
            try:
                check_relpath(obj.rel)
            except StoreError as exc:
                return f"key {obj.key!r} refused: {exc}"
        if not any(name in by_rel for name in ARTEFACTS) and not any(
            rel.endswith(".pt2") and "/" not in rel for rel in by_rel
        ):  # a .pt2 of another name: config.yaml's options.filename names it
            return f"no model artefact ({', '.join(ARTEFACTS)}, or a .pt2 that options.filename names)"
        if MANIFEST in by_rel:
            for rel, entry in self._manifest(by_rel[MANIFEST]).items():
                found = by_rel.get(rel)
                if found is None:
                    return f"{rel} is listed in {MANIFEST} but missing"
                if found.size != entry.size:
                    return f"{rel} has {found.size} bytes, {MANIFEST} says {entry.size}"
            return None
        if any(name in by_rel for name in MARKERS):
            return None
        if stable:
            return None
        newest = max(obj.modified for obj in objects)
        if time.time() - newest >= self.settle_seconds:
            return None
        return (
            f"no {MANIFEST} or {MARKERS[0]} marker, changed in the last {self.settle_seconds:g} s "
            "and not yet seen unchanged by a second listing"
        )

    def list_versions(self, model: str) -> list[int]:
        found = self._model_objects(model)
        complete = []
        seen: dict[tuple[str, int], tuple[str, bool]] = {}
        for version, objects in found.items():
            fingerprint = _fingerprint(objects)
            with self._lock:
                previous = self._seen.get((model, version))
            stable = previous is not None and previous[0] == fingerprint
            try:
                reason = self._incomplete(objects, stable)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                reason = str(exc)
            seen[(model, version)] = (fingerprint, reason is None)
            if reason is None:
                complete.append(version)
            else:
                log.info("%s: %s version %d is not complete: %s", self.uri, model, version, reason)
        with self._lock:
            for key in [k for k in self._seen if k[0] == model]:
                del self._seen[key]
            self._seen.update(seen)
        return sorted(complete)

    def read_config(self, model: str) -> ConfigFile | None:
        for name in CONFIG_FILES:
            data = self._get(self._model_prefix(model) + name)
            if data is not None:
                return ConfigFile(name, data)
        return None

    def read_file(self, model: str, relpath: str) -> bytes | None:
        return self._get(self._model_prefix(model) + check_relpath(relpath))

    def fingerprint(self, model: str, version: int) -> str:
        return _fingerprint(self._version_objects(model, version))

    # --- fetching ------------------------------------------------------------------------------------------

    def _fetch_lock(self, model: str, version: int) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault((model, version), threading.Lock())

    def fetch(self, model: str, version: int) -> Path:
        objects = self._version_objects(model, version)
        fingerprint = _fingerprint(objects)
        with self._lock:
            # listed as complete by the last list_versions and unchanged since
            stable = self._seen.get((model, version)) == (fingerprint, True)
        reason = self._incomplete(objects, stable)
        if reason is not None:
            raise StoreError(f"{self.uri}: {model} version {version} is not complete: {reason}")
        model_dir = self.cache_dir / model
        final = model_dir / f"{version}-{fingerprint[:16]}"
        with self._fetch_lock(model, version):
            self._hold(final)  # before looking: a process pruning the cache now sees this one as a user
            try:
                self._fetch_into(model, version, objects, model_dir, final)
            except BaseException:
                self._drop(final)
                raise
            self._prune_version(model_dir, version, keep=final)
        return final

    def _fetch_into(self, model: str, version: int, objects: list[S3Object], model_dir: Path, final: Path) -> None:
        if final.is_dir() and self._matches(final, objects):
            return
        self._remove_stale_partials(model_dir, version)
        partial = model_dir / f"{final.name}.partial.{os.getpid()}"
        try:
            partial.mkdir(parents=True)
            for obj in objects:
                self._download(obj, partial)
            self._verify(partial, objects)
            if final.is_dir() and self._matches(final, objects):
                shutil.rmtree(partial)  # another process finished the same download first
                return
            if final.exists():
                shutil.rmtree(final)  # a damaged cached copy
            os.rename(partial, final)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if final.is_dir() and self._matches(final, objects):
                return  # another process renamed the same version in first
            raise StoreError(f"{self.uri}: cannot write {model} version {version} to {partial}: {exc}") from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        log.info("%s: fetched %s version %d into %s", self.uri, model, version, final)

    # --- cache lifetime ------------------------------------------------------------------------------------
    # A fetched copy stays while some process uses it: this process counts its fetches, and every process using
    # a copy keeps a marker ``<model>/.users/<copy>.<pid>``. A released copy with no other live user is deleted,
    # and so is every older copy of the same version once a newer one is fetched, so the cache holds what is
    # served (a pod's cache volume has a size limit).

    @staticmethod
    def _marker(folder: Path) -> Path:
        return folder.parent / USERS / f"{folder.name}.{os.getpid()}"

    def _hold(self, folder: Path) -> None:
        with self._lock:
            self._users[folder] = self._users.get(folder, 0) + 1
        marker = self._marker(folder)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def _drop(self, folder: Path) -> bool:
        """Forget one of this process's fetches of ``folder``; True when this process no longer uses it."""
        with self._lock:
            count = self._users.get(folder, 0) - 1
            if count > 0:
                self._users[folder] = count
                return False
            self._users.pop(folder, None)
        self._marker(folder).unlink(missing_ok=True)
        return True

    def _in_use(self, folder: Path) -> bool:
        with self._lock:
            if self._users.get(folder):
                return True
        users = folder.parent / USERS
        for marker in users.glob(f"{folder.name}.*") if users.is_dir() else []:
            pid_text = marker.name.rpartition(".")[2]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
                return True
            marker.unlink(missing_ok=True)  # left by a process that is gone
        return False

    def _delete(self, folder: Path) -> None:
        trash = folder.with_name(f"{folder.name}.deleting.{os.getpid()}")
        try:
            os.rename(folder, trash)  # atomic: nobody finds a half-deleted copy
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
        log.info("%s: removed cached copy %s", self.uri, folder)

    def _prune_version(self, model_dir: Path, version: int, keep: Path) -> None:
        """Delete the other cached copies of ``version`` (older fingerprints) that nobody uses."""
        for child in model_dir.glob(f"{version}-*"):
            if child != keep and child.is_dir() and "." not in child.name and not self._in_use(child):
                self._delete(child)

    def release(self, model: str, version: int, path: Path) -> None:
        folder = Path(path)
        if folder.parent != self.cache_dir / model or not folder.name.startswith(f"{version}-"):
            return
        if self._drop(folder) and folder.is_dir() and not self._in_use(folder):
            self._delete(folder)

    @staticmethod
    def _target(folder: Path, obj: S3Object) -> Path:
        """Where ``obj`` lands under ``folder``; StoreError when it would land anywhere else."""
        target = folder / check_relpath(obj.rel)
        resolved = target.resolve()
        if folder.resolve() not in resolved.parents:
            raise StoreError(f"key {obj.key!r} resolves outside {folder}")
        return target

    def _matches(self, folder: Path, objects: list[S3Object]) -> bool:
        try:
            return all(self._target(folder, obj).stat().st_size == obj.size for obj in objects)
        except (OSError, StoreError):
            return False

    def _remove_stale_partials(self, model_dir: Path, version: int) -> None:
        """Partial downloads of this version left by this process or by processes that no longer run."""
        if not model_dir.is_dir():
            return
        for child in model_dir.glob(f"{version}-*.partial.*"):
            pid_text = child.name.rpartition(".")[2]
            pid = int(pid_text) if pid_text.isdigit() else None
            if pid is None or pid == os.getpid() or not _pid_alive(pid):
                log.info("%s: removing stale partial download %s", self.uri, child)
                shutil.rmtree(child, ignore_errors=True)

    def _download(self, obj: S3Object, folder: Path) -> None:
        target = self._target(folder, obj)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(f"downloading {obj.key!r}"):
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key}
            if obj.etag:
                kwargs["IfMatch"] = f'"{obj.etag}"'  # the object we listed, not a newer upload
            response = self._client.get_object(**kwargs)
            with target.open("wb") as handle:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    handle.write(chunk)

    def _verify(self, folder: Path, objects: list[S3Object]) -> None:
        """Sizes match the listing; the manifest's sizes and sha256 match the files."""
        for obj in objects:
            size = self._target(folder, obj).stat().st_size
            if size != obj.size:
                raise StoreError(f"{obj.key}: downloaded {size} bytes, the listing says {obj.size}")
        verify_folder(folder, self.uri)
