"""Authentication and authorization, protocol-neutral: API keys from a file, their scopes and models, per-key rate
limits, the repository-control policy and the audit log. The front ends' thin adapters (an ASGI middleware, a
grpc.aio interceptor) name the endpoint group of each call and hand over the presented token.

The keys file (YAML; a Kubernetes Secret mounted as a file works as is) holds only SHA-256 digests of the keys::

    keys:
      - id: ci                                   # shown in the audit and access logs, never the key
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        scopes: [infer, read]                    # infer, read, admin (admin implies the other two)
        models: [mlp_onnx]                       # optional: the only models this key may call
        rate_limit: {per_second: 50, burst: 100} # optional token bucket: 429 / RESOURCE_EXHAUSTED beyond it

It is re-read when it changes (checked at most once a second). A presented key is hashed and compared with every
digest in constant time. The principal of the call in progress is in ``PRINCIPAL`` (a contextvar): the access log
reads ``current_key_id()``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from gateway.core.errors import GatewayError, PermissionDenied, RateLimited, Unauthenticated
from gateway.lifecycle.model import ModelEntry, ModelVersion
from gateway.routing.router import Plan, Router

log = logging.getLogger("tensorgate.auth")
audit_log = logging.getLogger("tensorgate.audit")

SCOPES = ("infer", "read", "admin")
#: Endpoint groups and the scope each needs. ``health`` and ``metrics`` are open unless configured otherwise.
GROUPS: dict[str, str] = {"health": "read", "metrics": "read", "read": "read", "infer": "infer", "admin": "admin"}
DEFAULT_OPEN = ("health", "metrics")
RELOAD_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    """The key a call was made with."""

    id: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None  # None: every model

    def may_call(self, model: str) -> bool:
        return self.models is None or model in self.models


#: The principal of the call in progress (None: no key presented, or auth is off).
PRINCIPAL: ContextVar[Principal | None] = ContextVar("tensorgate_principal", default=None)


def current_key_id() -> str | None:
    """The ID of the key the call in progress was authenticated with (None when none was)."""
    principal = PRINCIPAL.get()
    return None if principal is None else principal.id


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenBucket:
    """``per_second`` tokens a second, at most ``burst`` saved up; one per call."""

    __slots__ = ("burst", "per_second", "stamp", "tokens")

    def __init__(self, per_second: float, burst: float) -> None:
        self.per_second, self.burst = per_second, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass(frozen=True)
class Key:
    principal: Principal
    digest: bytes
    rate: tuple[float, float] | None = None  # (per_second, burst)


class KeyFileError(ValueError):
    """The keys file does not parse or holds an invalid entry."""


def parse_keys(text: str, where: str = "keys file") -> list[Key]:
    """The keys of a keys file's text; KeyFileError naming the entry and field on any mistake."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
        raise KeyFileError(f"{where}: expected a mapping with a 'keys' list")
    keys: list[Key] = []
    seen: set[str] = set()
    for i, item in enumerate(doc.get("keys") or []):
        at = f"{where}: keys[{i}]"
        if not isinstance(item, dict):
            raise KeyFileError(f"{at} must be a mapping")
        unknown = set(item) - {"id", "sha256", "scopes", "models", "rate_limit"}
        if unknown:
            raise KeyFileError(f"{at}: unknown fields {sorted(unknown)}")
        key_id = item.get("id")
        if not isinstance(key_id, str) or not key_id or key_id in seen:
            raise KeyFileError(f"{at}.id must be a unique non-empty string")
        seen.add(key_id)
        hexdigest = str(item.get("sha256", "")).lower().removeprefix("sha256:")
        try:
            raw = bytes.fromhex(hexdigest)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise KeyFileError(f"{at}.sha256 must be the 64 hex digits of the key's SHA-256")
        scopes = item.get("scopes")
        if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
            raise KeyFileError(f"{at}.scopes must be a non-empty list of {', '.join(SCOPES)}")
        granted = set(scopes) | ({"infer", "read"} if "admin" in scopes else set())
        models = item.get("models")
        if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
            raise KeyFileError(f"{at}.models must be a list of model names")
        rate = item.get("rate_limit")
        bucket: tuple[float, float] | None = None
        if rate is not None:
            per_second = rate.get("per_second") if isinstance(rate, dict) else None
            if not isinstance(per_second, int | float) or per_second <= 0:
                raise KeyFileError(f"{at}.rate_limit.per_second must be a positive number")
            burst = rate.get("burst", per_second)
            if not isinstance(burst, int | float) or burst < 1:
                raise KeyFileError(f"{at}.rate_limit.burst must be a number >= 1")
            bucket = (float(per_second), float(burst))
        principal = Principal(key_id, frozenset(granted), None if models is None else frozenset(models))
        keys.append(Key(principal, raw, bucket))
    return keys


class KeyRing:
    """The keys of one file, re-read when the file changes; a file that turns invalid keeps the previous keys."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: list[Key] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.reload()
        if not self.keys:
            log.warning("keys file %s holds no keys: every protected call will be refused", path)

    def _fingerprint(self) -> tuple[int, int, int]:
        st = os.stat(self.path)  # follows the symlinks a mounted Secret swaps on update
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self) -> None:
        stamp = self._fingerprint()
        keys = parse_keys(self.path.read_text(), str(self.path))
        self.keys, self._stamp = keys, stamp
        log.info("loaded %d API keys from %s", len(keys), self.path)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            if self._fingerprint() != self._stamp:
                self.reload()
        except (OSError, KeyFileError) as exc:
            log.error("keeping the previous API keys: %s", exc)

    def find(self, token: str) -> Key | None:
        self.refresh()
        wanted = digest(token)
        found = None
        for key in self.keys:  # every digest is compared, whichever matches
            if hmac.compare_digest(wanted, key.digest):
                found = key
        return found


class Guard:
    """Decides each call: which endpoint groups need a key, whether the presented one is known, has the scope and
    has rate left. ``keys`` None turns authentication off (every call passes, with no principal)."""

    def __init__(self, keys: KeyRing | None, open_groups: Collection[str] = DEFAULT_OPEN) -> None:
        unknown = set(open_groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown endpoint groups {sorted(unknown)}; known: {', '.join(GROUPS)}")
        self.keys = keys
        self.open_groups = frozenset(open_groups)
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def protects(self, group: str) -> bool:
        return self.keys is not None and group not in self.open_groups

    def authorize(self, token: str | None, group: str, action: str = "") -> Principal | None:
        """The principal of a call to ``group``, or None for an open call without a (valid) key; raises
        Unauthenticated, PermissionDenied or RateLimited."""
        if self.keys is None:
            return None
        key = self.keys.find(token) if token else None
        if not self.protects(group):
            return None if key is None else key.principal
        try:
            if token is None:
                raise Unauthenticated(f"{group} calls need an API key: send 'Authorization: Bearer <key>'")
            if key is None:
                raise Unauthenticated("the API key is not valid")
            scope = GROUPS[group]
            if scope not in key.principal.scopes:
                raise PermissionDenied(f"API key {key.principal.id!r} lacks the {scope!r} scope for {group} calls")
        except GatewayError as exc:
            if group == "admin":
                audit(action or "admin call", "", None if key is None else key.principal.id, f"refused: {exc}")
            raise
        if key.rate is not None:
            bucket = self._buckets.get(key.principal.id)
            if bucket is None or (bucket.per_second, bucket.burst) != key.rate:
                bucket = self._buckets[key.principal.id] = TokenBucket(*key.rate)
            if not bucket.take():
                raise RateLimited(
                    f"API key {key.principal.id!r} exceeded its rate limit of {key.rate[0]:g} requests/s; retry later"
                )
        return key.principal


def check_model(name: str) -> None:
    """PermissionDenied when the call in progress has a key that may not call ``name``."""
    principal = PRINCIPAL.get()
    if principal is not None and not principal.may_call(name):
        raise PermissionDenied(f"API key {principal.id!r} may not call model {name!r}")


def audit(action: str, model: str, key_id: str | None, outcome: str) -> None:
    """One line per administrative action, whatever its outcome."""
    audit_log.info("audit action=%s model=%s key=%s outcome=%s", action, model or "-", key_id or "-", outcome)


class ModelAccessRouter:
    """A Router that refuses models (and routes) the call's key may not call, before resolving them (so a restricted
    key cannot tell which other models exist); everything else is the wrapped router's."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def entry(self, name: str) -> ModelEntry:
        check_model(name)
        return self.router.entry(name)

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion:
        check_model(name)
        return self.router.resolve(name, version, label)

    def plan(
        self, name: str, version: str | int | None = None, label: str | None = None, key: str | None = None
    ) -> tuple[ModelVersion, Plan | None]:
        check_model(name)
        return self.router.plan(name, version, label, key)

    def describe(self, name: str) -> dict[str, Any] | None:
        return self.router.describe(name)

    def index(self) -> list[dict[str, str]]:
        return self.router.index()


class _Control(Protocol):
    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None: ...

    async def unload(self, name: str) -> None: ...


@dataclass
class RestrictedControl:
    """The repository API's load/unload with Triton's semantics: allowed to an ``admin`` key in any mode, to
    anyone only in explicit model-control mode when the admin group is not protected; every attempt audited."""

    control: _Control
    guard: Guard
    explicit: bool

    def _allow(self, action: str, name: str) -> str | None:
        principal = PRINCIPAL.get()
        key_id = None if principal is None else principal.id
        if principal is not None and "admin" in principal.scopes:
            if not principal.may_call(name):
                reason = f"API key {key_id!r} may not {action} model {name!r}"
                audit(action, name, key_id, f"refused: {reason}")
                raise PermissionDenied(reason)
            return key_id
        if self.explicit and not self.guard.protects("admin"):
            return key_id
        reason = (
            f"{action} is refused: the repository API needs an admin API key"
            if self.guard.protects("admin")
            else f"{action} is refused: the server follows its store (start it with --model-control explicit to "
            "load and unload through the repository API)"
        )
        audit(action, name, key_id, f"refused: {reason}")
        raise PermissionDenied(reason)

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        await self._run("load", name, self.control.load(name, parameters))

    async def unload(self, name: str) -> None:
        await self._run("unload", name, self.control.unload(name))

    async def _run(self, action: str, name: str, call: Any) -> None:
        try:
            key_id = self._allow(action, name)
        except GatewayError:
            call.close()  # never awaited
            raise
        try:
            await call
        except Exception as exc:
            audit(action, name, key_id, f"failed: {exc}")
            raise
        audit(action, name, key_id, "ok")
