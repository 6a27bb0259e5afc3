"""Strict readiness from the controller: ready only when every version the store and policies want is READY; a
version loading beside a READY one does not count; the store must have been listed."""

from __future__ import annotations

import asyncio

from gateway.core.dataplane import DataPlane
from tests.gateway.testbed import StoreFolder, Testbed


def _strict(bed: Testbed) -> DataPlane:
    bed.dataplane.readiness = bed.controller.unready
    return bed.dataplane


def test_a_model_that_fails_to_load_makes_the_server_unready(store: StoreFolder) -> None:
    store.add("good", 1)
    store.add("bad", 1, "fail")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            dp = _strict(bed)
            assert not dp.ready()
            assert bed.controller.unready() == "model bad v1 is UNAVAILABLE: artefact of v1 is marked to fail"
            assert bed.controller.failed() == ["bad v1: artefact of v1 is marked to fail"]
            store.add("bad", 1, "3")  # fixed in the store: the next sync loads it
            (store.root / "bad" / "1" / "model.onnx").touch()
            await bed.controller.sync()
            assert dp.ready() and bed.controller.failed() == []

    asyncio.run(scenario())


def test_never_listed_store_is_unready_and_a_failing_policy_version_counts(store: StoreFolder) -> None:
    store.add("m", 1)
    store.add("m", 2, "fail")
    store.config("m", "version_policy: {all: true}\n")

    async def scenario() -> None:
        async with Testbed(store, sync=False) as bed:
            dp = _strict(bed)
            assert not dp.ready() and "has not been listed" in (bed.controller.unready() or "")
            await bed.controller.sync()
            assert bed.controller.unready() == "model m v2 is UNAVAILABLE: artefact of v2 is marked to fail"
            store.remove("m", 2)
            await bed.controller.sync()
            assert dp.ready()

    asyncio.run(scenario())


def test_invalid_config_makes_the_server_unready(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m", "instances: many\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            assert not _strict(bed).ready()
            assert (bed.controller.unready() or "").startswith("model m:")

    asyncio.run(scenario())
