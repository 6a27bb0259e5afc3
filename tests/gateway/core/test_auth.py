"""gateway.core.auth: the keys file (hashed keys, scopes, models, rate limits), the Guard's decisions per endpoint
group, model access through the Router, and the repository-control policy over the real controller."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import pytest

from gateway.core.auth import (
    PRINCIPAL,
    Guard,
    KeyFileError,
    KeyRing,
    ModelAccessRouter,
    Principal,
    RestrictedControl,
    current_key_id,
    parse_keys,
)
from gateway.core.errors import ModelNotFound, PermissionDenied, RateLimited, Unauthenticated
from tests.credentials import write_keys
from tests.gateway.testbed import StoreFolder, Testbed


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("keys: [{sha256: SHA, scopes: [read]}]".replace("SHA", _sha("a")), "keys[0].id"),
        ("keys: [{id: a, sha256: abc, scopes: [read]}]", "keys[0].sha256"),
        ("keys: [{id: a, sha256: SHA, scopes: [root]}]".replace("SHA", _sha("a")), "keys[0].scopes"),
        ("keys: [{id: a, sha256: SHA, scopes: [read], models: dense}]".replace("SHA", _sha("a")), "keys[0].models"),
        (
            "keys: [{id: a, sha256: SHA, scopes: [read], rate_limit: {per_second: 0}}]".replace("SHA", _sha("a")),
            "rate_limit",
        ),
        ("keys: [{id: a, sha256: SHA, scopes: [read], colour: red}]".replace("SHA", _sha("a")), "unknown fields"),
        ("keys: {id: a}", "'keys' list"),
    ],
)
def test_invalid_keys_files_name_the_field(text: str, field: str) -> None:
    with pytest.raises(KeyFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_keys(text)


def test_admin_implies_read_and_infer_and_digests_are_stored_not_keys(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", {"s3cret": {"id": "ops", "scopes": ["admin"]}})
    assert "s3cret" not in path.read_text()
    ring = KeyRing(path)
    key = ring.find("s3cret")
    assert key is not None and key.principal.scopes == {"admin", "infer", "read"}
    assert ring.find("s3cre") is None and ring.find("s3cret ") is None


def test_guard_decides_per_group(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "keys.yaml",
        {
            "i": {"id": "inf", "scopes": ["infer"]},
            "r": {"id": "rd", "scopes": ["read"], "rate_limit": {"per_second": 0.01, "burst": 1}},
        },
    )
    guard = Guard(KeyRing(path))
    assert guard.authorize(None, "health") is None and guard.authorize(None, "metrics") is None
    assert guard.authorize("i", "health") == Principal("inf", frozenset({"infer"}))  # known on open groups too
    with pytest.raises(Unauthenticated):
        guard.authorize(None, "read")
    with pytest.raises(Unauthenticated):
        guard.authorize("x", "infer")
    with pytest.raises(PermissionDenied, match="lacks the 'admin' scope"):
        guard.authorize("i", "admin")
    assert guard.authorize("r", "read") is not None
    with pytest.raises(RateLimited, match="rate limit"):
        guard.authorize("r", "read")
    assert Guard(None).authorize(None, "admin") is None  # no keys: auth off
    with pytest.raises(ValueError, match="unknown endpoint groups"):
        Guard(None, ["helth"])


def test_model_access_and_restricted_control_over_the_real_core(store: StoreFolder) -> None:
    store.add("m", 1)
    store.add("n", 1)

    async def scenario() -> None:
        async with Testbed(store) as bed:
            router = ModelAccessRouter(bed.router)
            token = PRINCIPAL.set(Principal("t", frozenset({"read"}), frozenset({"m"})))
            try:
                assert current_key_id() == "t"
                assert router.resolve("m").version == 1
                with pytest.raises(PermissionDenied, match="may not call model 'n'"):
                    router.resolve("n")
                with pytest.raises(PermissionDenied):
                    router.entry("ghost")
            finally:
                PRINCIPAL.reset(token)
            with pytest.raises(ModelNotFound):
                router.resolve("ghost")  # no principal: no restriction

            polling = RestrictedControl(bed.controller, Guard(None), explicit=False)
            with pytest.raises(PermissionDenied, match="--model-control explicit"):
                await polling.unload("m")
            assert bed.host.get("m") is not None
            explicit = RestrictedControl(bed.controller, Guard(None), explicit=True)
            await explicit.unload("m")
            assert bed.host.get("m") is None
            token = PRINCIPAL.set(Principal("ops", frozenset({"admin", "read", "infer"})))
            try:
                await polling.load("m")  # an admin key may, whatever the mode
            finally:
                PRINCIPAL.reset(token)
            assert bed.host.get("m") is not None

    asyncio.run(scenario())


def test_admin_actions_are_audited(store: StoreFolder, caplog: pytest.LogCaptureFixture) -> None:
    store.add("m", 1)

    async def scenario() -> None:
        async with Testbed(store) as bed:
            control = RestrictedControl(bed.controller, Guard(None), explicit=True)
            await control.unload("m")
            with pytest.raises(ModelNotFound):
                await control.unload("m")

    with caplog.at_level(logging.INFO, logger="tensorgate.audit"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "tensorgate.audit"]
    assert lines[0] == "audit action=unload model=m key=- outcome=ok"
    assert lines[1].startswith("audit action=unload model=m key=- outcome=failed: model 'm' is not loaded")
