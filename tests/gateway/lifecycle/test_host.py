"""ModelRegistry: loading against the store, failures kept per version, availability-preserving swaps,
the explicit load/unload API, models leaving the store, an unreachable store and config errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.core.errors import InvalidInput, ModelNotFound, ModelNotReady, Unsupported
from gateway.lifecycle.host import READY, UNAVAILABLE
from tests.gateway.fake_runtime import FakeRuntime
from tests.gateway.testbed import StoreFolder, Testbed, labels, request


def rows(bed: Testbed, model: str) -> list[dict[str, str]]:
    return [row for row in bed.host.index() if row["name"] == model]


def test_failing_load_is_unavailable_with_reason_while_others_serve(store: StoreFolder) -> None:
    store.add("good", 1)
    store.config("good")
    store.add("bad", 1, behaviour="fail")
    store.config("bad")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            (row,) = rows(bed, "bad")
            assert row["state"] == UNAVAILABLE
            assert "v1 is marked to fail" in row["reason"]
            assert rows(bed, "good") == [{"name": "good", "version": "1", "state": READY, "reason": ""}]
            response = await bed.infer(request("good"))
            assert response.outputs[0].data.tolist() == [[2.0, 4.0, 6.0]]
            failures = bed.samples("tensorgate_model_load_failures_total")
            assert failures == {labels(model="bad"): 1.0}
            state = bed.samples("tensorgate_model_state")
            assert state[labels(model="bad", version="1", runtime="onnx", state="UNAVAILABLE")] == 1.0
            assert state[labels(model="good", version="1", runtime="onnx", state="READY")] == 1.0

    asyncio.run(scenario())


def test_unchanged_failed_version_is_not_retried_every_poll(store: StoreFolder) -> None:
    store.add("bad", 1, behaviour="fail")
    store.config("bad")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            await bed.controller.sync()
            await bed.controller.sync()
            assert bed.runtime.events.count(("load", 1)) == 1
            store.add("bad", 1, behaviour="3")  # fixed in place: the fingerprint changes
            await bed.controller.sync()
            assert bed.runtime_of("bad").scale == 3.0

    asyncio.run(scenario())


def test_new_version_is_ready_before_the_old_one_unloads(store: StoreFolder) -> None:
    store.add("m", 1, behaviour="1")
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            old = bed.runtime_of("m")
            bed.runtime.load_started = threading.Event()
            bed.runtime.load_gate = threading.Event()
            store.add("m", 2, behaviour="2")
            swap = asyncio.create_task(bed.controller.sync())
            try:
                started = await asyncio.to_thread(bed.runtime.load_started.wait, 10)
                assert started
                # v2 is loading: v1 keeps answering
                assert bed.router.resolve("m").version == 1
                response = await bed.infer(request("m"))
                assert response.version == "1"
                assert response.outputs[0].data.tolist() == [[1.0, 2.0, 3.0]]
                assert not old.unloaded
            finally:
                bed.runtime.load_gate.set()
            await swap
            assert bed.router.resolve("m").version == 2
            assert old.unloaded
            events = bed.runtime.events
            assert events.index(("load", 2)) < events.index(("ready", 2)) < events.index(("unload", 1))
            assert rows(bed, "m") == [{"name": "m", "version": "2", "state": READY, "reason": ""}]

    asyncio.run(scenario())


def test_failing_new_version_leaves_the_old_one_serving(store: StoreFolder) -> None:
    store.add("m", 1, behaviour="1")
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            old = bed.runtime_of("m")
            store.add("m", 2, behaviour="fail")
            await bed.controller.sync()
            assert bed.router.resolve("m").version == 1
            assert not old.unloaded
            response = await bed.infer(request("m"))
            assert response.version == "1"
            states = {row["version"]: row for row in rows(bed, "m")}
            assert states["1"]["state"] == READY
            assert states["2"]["state"] == UNAVAILABLE and "marked to fail" in states["2"]["reason"]
            with pytest.raises(ModelNotReady):
                bed.router.resolve("m", "2")
            store.add("m", 3, behaviour="3")  # a good version later replaces both
            await bed.controller.sync()
            assert bed.router.resolve("m").version == 3
            assert old.unloaded
            assert [row["version"] for row in rows(bed, "m")] == ["3"]

    asyncio.run(scenario())


def test_failing_reload_of_the_same_version_keeps_the_previous_load(store: StoreFolder) -> None:
    store.add("m", 1, behaviour="1")
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            old = bed.runtime_of("m")
            store.add("m", 1, behaviour="fail")  # files change in place
            await bed.controller.sync()
            assert bed.runtime_of("m") is old
            assert not old.unloaded
            (row,) = rows(bed, "m")
            assert row["state"] == READY
            assert "reload failed" in row["reason"] and "marked to fail" in row["reason"]
            store.add("m", 1, behaviour="4")
            await bed.controller.sync()
            assert bed.runtime_of("m").scale == 4.0
            assert old.unloaded

    asyncio.run(scenario())


def test_unload_and_load_api(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m")
    store.add("other", 1)
    store.config("other")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            runtime = bed.runtime_of("m")
            await bed.dataplane.unload("m")
            assert runtime.unloaded
            assert "m" not in bed.host.models
            with pytest.raises(ModelNotFound):
                bed.router.resolve("m")
            await bed.controller.sync()  # a poll does not bring an explicitly unloaded model back
            assert "m" not in bed.host.models
            assert bed.router.resolve("other").version == 1
            with pytest.raises(ModelNotFound, match="not loaded"):
                await bed.dataplane.unload("m")
            await bed.dataplane.load("m")
            assert bed.router.resolve("m").version == 1
            await bed.controller.sync()
            assert bed.router.resolve("m").version == 1

    asyncio.run(scenario())


def test_load_api_errors(store: StoreFolder) -> None:
    store.add("bad", 1, behaviour="fail")
    store.config("bad")

    async def scenario() -> None:
        async with Testbed(store, sync=False) as bed:
            with pytest.raises(ModelNotFound, match="failed to load 'ghost': it is not in the store"):
                await bed.dataplane.load("ghost")
            with pytest.raises(InvalidInput, match="marked to fail"):
                await bed.dataplane.load("bad")
            with pytest.raises(InvalidInput, match="invalid model name"):
                await bed.dataplane.load("../etc")
            with pytest.raises(Unsupported):
                await bed.dataplane.load("bad", {"config": "{}", "file:1/model.onnx": b"x"})

    asyncio.run(scenario())


def test_model_removed_from_the_store_is_unloaded(store: StoreFolder) -> None:
    store.add("gone", 1)
    store.config("gone")
    store.add("stays", 1)
    store.config("stays")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            runtime = bed.runtime_of("gone")
            store.remove("gone")
            await bed.controller.sync()
            assert runtime.unloaded
            assert "gone" not in bed.host.models
            with pytest.raises(ModelNotFound):
                bed.router.resolve("gone")
            assert bed.router.resolve("stays").version == 1
            state = bed.samples("tensorgate_model_state")
            assert all(dict(key)["model"] != "gone" for key in state)

    asyncio.run(scenario())


def test_version_removed_from_the_store_is_unloaded_after_the_next_is_ready(store: StoreFolder) -> None:
    for version in (1, 2):
        store.add("m", version, behaviour=str(version))
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            v2 = bed.runtime_of("m")
            store.remove("m", 2)
            await bed.controller.sync()  # policy latest/1 now wants v1
            assert bed.router.resolve("m").version == 1
            assert v2.unloaded

    asyncio.run(scenario())


def test_unreachable_store_keeps_serving_and_sets_store_stale(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            assert bed.samples("tensorgate_store_stale") == {(): 0.0}
            assert bed.samples("tensorgate_store_last_sync_timestamp_seconds")[()] > 0
            moved = store.root.with_name("elsewhere")
            store.root.rename(moved)
            try:
                await bed.controller.sync()
                await bed.controller.sync()
                assert bed.samples("tensorgate_store_stale") == {(): 1.0}
                assert bed.samples("tensorgate_store_poll_errors_total") == {(): 2.0}
                assert "does not exist" in bed.controller.store_reason
                response = await bed.infer(request("m"))
                assert response.outputs[0].data.tolist() == [[2.0, 4.0, 6.0]]
                assert not bed.runtime_of("m").unloaded
            finally:
                moved.rename(store.root)
            await bed.controller.sync()
            assert bed.samples("tensorgate_store_stale") == {(): 0.0}
            assert bed.controller.store_reason == ""

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ("instances: 0\n", "instances"),
        ("version_policy: {latest: 0}\n", "version_policy"),
        ("sla: {p99_ms: -5}\n", "sla.p99_ms"),
        ("batching: {max_batch_size: many}\n", "batching.max_batch_size"),
        ("no_such_setting: 1\n", "no_such_setting"),
        ("version_labels: {'7': 1}\n", "version_labels"),
    ],
    ids=["instances", "version_policy", "sla", "batching", "unknown-key", "label"],
)
def test_config_errors_name_the_field(store: StoreFolder, config: str, field: str) -> None:
    store.add("m", 1)
    store.config("m", config)
    store.add("ok", 1)
    store.config("ok")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            (row,) = rows(bed, "m")
            assert row["state"] == UNAVAILABLE
            assert "m/config.yaml" in row["reason"]
            assert field in row["reason"]
            with pytest.raises(ModelNotReady, match=field.split(".")[0]):
                bed.router.resolve("m")
            assert bed.router.resolve("ok").version == 1
            store.config("m")  # fixed: the model loads on the next poll
            await bed.controller.sync()
            assert bed.router.resolve("m").version == 1
            assert rows(bed, "m") == [{"name": "m", "version": "1", "state": READY, "reason": ""}]

    asyncio.run(scenario())


def test_broken_config_keeps_the_loaded_version_serving(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            runtime = bed.runtime_of("m")
            store.config("m", "instances: [not, a, number]\n")
            await bed.controller.sync()
            assert bed.runtime_of("m") is runtime
            assert not runtime.unloaded

    asyncio.run(scenario())


def test_not_yaml_mapping_is_reported(store: StoreFolder) -> None:
    store.add("m", 1)
    (store.root / "m" / "config.yaml").write_text("- just\n- a list\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            (row,) = rows(bed, "m")
            assert "expected a mapping" in row["reason"]

    asyncio.run(scenario())


def test_config_change_reloads_the_version(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m", "instances: 1\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            before = bed.router.resolve("m")
            store.config("m", "instances: 3\n")
            await bed.controller.sync()
            after = bed.router.resolve("m")
            assert after is not before
            assert after.config.instances == 3
            assert isinstance(before.runtime, FakeRuntime)
            assert before.runtime.unloaded  # closed after the swap

    asyncio.run(scenario())
