"""Authentication and authorization, protocol-neutral: API keys from a file, their scopes and models, per-key rate
limits, the repository-control policy and the audit log. The front ends' thin adapters (an ASGI middleware, a
grpc.aio interceptor) name the endpoint group of each call and hand over the presented token.

The keys file is gateway.core.keys's to read. The principal of the call in progress is in ``PRINCIPAL`` (a contextvar):
the access log reads ``current_key_id()``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.errors import GatewayError, PermissionDenied, RateLimited, Unauthenticated
from gateway.core.keys import SCOPES, Key, KeyFileError, KeyRing, Principal, TokenBucket, digest, parse_keys
from gateway.lifecycle.model import ModelEntry, ModelVersion
from gateway.routing.router import Plan, Router

__all__ = ["SCOPES", "Key", "KeyFileError", "KeyRing", "Principal", "TokenBucket", "digest", "parse_keys"]

log = logging.getLogger("tensorgate.auth")
audit_log = logging.getLogger("tensorgate.audit")

#: Endpoint groups and the scope each needs. ``health`` and ``metrics`` are open unless configured otherwise.
GROUPS: dict[str, str] = {"health": "read", "metrics": "read", "read": "read", "infer": "infer", "admin": "admin"}
DEFAULT_OPEN = ("health", "metrics")


#: The principal of the call in progress (None: no key presented, or auth is off).
PRINCIPAL: ContextVar[Principal | None] = ContextVar("tensorgate_principal", default=None)


def current_key_id() -> str | None:
    """The ID of the key the call in progress was authenticated with (None when none was)."""
    principal = PRINCIPAL.get()
    return None if principal is None else principal.id


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
