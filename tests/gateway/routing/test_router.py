"""Router: version policies (latest N, all, specific), labels, explicit versions, not-found vs not-ready."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.errors import ModelNotFound, ModelNotReady
from tests.gateway.testbed import StoreFolder, Testbed


def served(bed: Testbed, model: str) -> list[int]:
    return [m.version for m in bed.host.models[model].ready_versions()]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [3]),
        ("version_policy: {latest: 1}\n", [3]),
        ("version_policy: {latest: 2}\n", [2, 3]),
        ("version_policy: {latest: 9}\n", [1, 2, 3]),
        ("version_policy: {all: true}\n", [1, 2, 3]),
        ("version_policy: {specific: [1, 3, 7]}\n", [1, 3]),
    ],
    ids=["default", "latest-1", "latest-2", "latest-9", "all", "specific"],
)
def test_version_policy_selects_the_served_versions(store: StoreFolder, policy: str, expected: list[int]) -> None:
    for version in (1, 2, 3):
        store.add("m", version, behaviour=str(version))
    store.config("m", policy)

    async def scenario() -> None:
        async with Testbed(store) as bed:
            assert served(bed, "m") == expected
            assert bed.router.resolve("m").version == expected[-1]  # no version: the latest READY
            for version in expected:
                assert bed.router.resolve("m", str(version)).version == version
                assert bed.router.resolve("m", version).version == version
            for version in {1, 2, 3} - set(expected):
                with pytest.raises(ModelNotFound, match=f"version {version} is not found"):
                    bed.router.resolve("m", str(version))

    asyncio.run(scenario())


def test_labels_point_at_versions(store: StoreFolder) -> None:
    for version in (1, 2):
        store.add("m", version)
    store.config("m", "version_policy: {all: true}\nversion_labels: {stable: 1, canary: 2}\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            assert bed.router.resolve("m", label="stable").version == 1
            assert bed.router.resolve("m", label="canary").version == 2
            with pytest.raises(ModelNotFound, match="no version label 'beta'"):
                bed.router.resolve("m", label="beta")

    asyncio.run(scenario())


def test_label_to_a_version_not_served_is_not_found(store: StoreFolder) -> None:
    for version in (1, 2):
        store.add("m", version)
    store.config("m", "version_labels: {old: 1}\n")  # default policy serves only v2

    async def scenario() -> None:
        async with Testbed(store) as bed:
            with pytest.raises(ModelNotFound, match="version 1 is not found"):
                bed.router.resolve("m", label="old")

    asyncio.run(scenario())


@pytest.mark.parametrize("version", ["latest", "1.0", "-1", "v1"])
def test_non_numeric_versions_are_not_found(store: StoreFolder, version: str) -> None:
    store.add("m", 1)
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            with pytest.raises(ModelNotFound, match="versions are integers"):
                bed.router.resolve("m", version)
            assert bed.router.resolve("m", "").version == 1  # empty means "no version"

    asyncio.run(scenario())


def test_unknown_model_is_not_found_and_failed_model_is_not_ready(store: StoreFolder) -> None:
    store.add("good", 1)
    store.config("good")
    store.add("bad", 1, behaviour="fail")
    store.config("bad")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            with pytest.raises(ModelNotFound, match=r"^Request for unknown model: 'nope' is not found$"):
                bed.router.resolve("nope")
            with pytest.raises(
                ModelNotReady, match=r"^Request for unknown model: 'bad' has no available versions"
            ) as latest:
                bed.router.resolve("bad")
            assert "marked to fail" in str(latest.value)
            assert latest.value.http_status == 503
            with pytest.raises(
                ModelNotReady,
                match=r"^Request for unknown model: 'bad' version 1 is not at ready state \(UNAVAILABLE\)",
            ):
                bed.router.resolve("bad", "1")
            with pytest.raises(ModelNotFound, match=r"^Request for unknown model: 'bad' version 2 is not found$"):
                bed.router.resolve("bad", "2")
            assert bed.router.resolve("good").version == 1
            with pytest.raises(ModelNotFound, match="versions are integers"):
                bed.router.resolve("good", "\u00b3")  # a digit to str.isdigit(), not to int()

    asyncio.run(scenario())


def test_explicit_version_survives_a_newer_default(store: StoreFolder) -> None:
    store.add("m", 1, behaviour="1")
    store.config("m", "version_policy: {all: true}\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            store.add("m", 5, behaviour="5")
            await bed.controller.sync()
            assert bed.router.resolve("m").version == 5
            assert bed.router.resolve("m", "1").version == 1
            assert bed.runtime_of("m", "1").scale == 1.0
            assert bed.runtime_of("m").scale == 5.0

    asyncio.run(scenario())
