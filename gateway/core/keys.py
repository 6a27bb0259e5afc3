"""API keys: the keys file (YAML; a Kubernetes Secret mounted as a file works as is), which holds only SHA-256
digests of the keys, their scopes, the models they may call and their rate limits; re-read when it changes (checked at
most once a second); a presented key is hashed and compared with every digest in constant time::

    keys:
      - id: ci                                   # shown in the audit and access logs, never the key
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        scopes: [infer, read]                    # infer, read, admin (admin implies the other two)
        models: [mlp_onnx]                       # optional: the only models this key may call
        rate_limit: {per_second: 50, burst: 100} # optional token bucket: 429 / RESOURCE_EXHAUSTED beyond it
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger("tensorgate.auth")

SCOPES = ("infer", "read", "admin")
RELOAD_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    """The key a call was made with."""

    id: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None  # None: every model

    def may_call(self, model: str) -> bool:
        return self.models is None or model in self.models


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
