"""Routes through the real host, controller, RouteRouter and data plane over fake runtimes: declarations
(route.yaml, exported variants, overrides), the signature check, fallback with the breaker, shadow traffic,
sticky keys, what a route shows (response, metadata, index, metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gateway.core.errors import GatewayError, ModelNotFound, ModelNotReady
from gateway.core.exchange import VARIANT_PARAMETER
from gateway.lifecycle.controller import ModelController
from tests.gateway.routing.fakes import FakeClock
from tests.gateway.testbed import StoreFolder, Testbed, labels, request


def declare(store: StoreFolder, name: str, text: str) -> None:
    (store.root / name).mkdir(parents=True, exist_ok=True)
    (store.root / name / "route.yaml").write_text(text)


def variants(store: StoreFolder, **scales: str) -> None:
    for name, behaviour in scales.items():
        store.add(name, 1, behaviour)
        store.config(name)


def test_a_route_yaml_folder_serves_its_variants_and_every_answer_names_the_variant(store: StoreFolder) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "policy: fixed\nvariants: [a, b]\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            response = await bed.infer(request("r"))
            assert response.model == "r"
            assert response.version == "1"
            assert response.parameters[VARIANT_PARAMETER] == "a"
            np.testing.assert_allclose(response.outputs[0].data, [[2.0, 4.0, 6.0]])
            assert bed.samples("tensorgate_route_requests_total") == {labels(route="r", variant="a", code="OK"): 1.0}
            # the variant's own series counts the request too, once
            assert (
                bed.samples("tensorgate_requests_total")[
                    labels(model="a", version="1", runtime="onnx", protocol="rest", code="OK")
                ]
                == 1.0
            )
            assert bed.samples("tensorgate_route_variant_chosen") == {
                labels(route="r", variant="a"): 1.0,
                labels(route="r", variant="b"): 0.0,
            }
            rows = {row["name"]: row for row in bed.dataplane.repository_index()}
            assert rows["r"]["state"] == "READY"
            assert "route (fixed, from store)" in rows["r"]["reason"] and "serving a" in rows["r"]["reason"]
            meta = bed.dataplane.model_metadata("r")
            assert meta.name == "r"
            assert meta.parameters["route"]["policy"] == "fixed"
            assert [v["name"] for v in meta.parameters["route"]["variants"]] == ["a", "b"]
            assert bed.dataplane.model_ready("r")
            assert bed.dataplane.knows("r")
            assert bed.dataplane.model_config("r")["name"] == "r"

    asyncio.run(scenario())


def test_a_route_has_no_versions_of_its_own(store: StoreFolder) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "variants: [a, b]\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            with pytest.raises(ModelNotFound, match="'r' is a route and has no version 1; call one of its variants"):
                await bed.infer(request("r", version="1"))

    asyncio.run(scenario())


def test_exported_variants_of_one_source_form_a_route_without_any_file(store: StoreFolder) -> None:
    for name, runtime in (("mlp_torch_export", "torch_export"), ("mlp_onnx", "onnx")):
        store.add(name, 1, "2")
        store.config(name, f"source: {{model: mlp, format: {runtime}}}\nsla: {{p99_ms: 50}}\n", runtime="onnx")
    store.add("other", 1, "2")
    store.config("other", "source: {model: lonely}\n")  # one variant only: no route

    async def scenario() -> None:
        async with Testbed(store) as bed:
            route = bed.dataplane.model_metadata("mlp").parameters["route"]
            assert route["origin"] == "export"
            assert route["policy"] == "sla"
            assert route["sla"] == {"p99": 50.0}
            assert not bed.dataplane.knows("lonely")
            response = await bed.infer(request("mlp"))
            assert response.parameters[VARIANT_PARAMETER] in {"mlp_onnx", "mlp_torch_export"}

    asyncio.run(scenario())


def test_a_variant_with_another_signature_is_refused_with_the_reason(store: StoreFolder) -> None:
    variants(store, a="2", wide="wide:3")
    declare(store, "r", "policy: weighted\nvariants: [{model: a, weight: 50}, {model: wide, weight: 50}]\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            rows = {row["name"]: row for row in bed.dataplane.repository_index()}
            assert (
                "wide (refused: signature differs: input 'x' is FP32 [-1, 4], the route's is FP32 [-1, 3])"
                in (rows["r"]["reason"])
            )
            for _ in range(30):
                assert (await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] == "a"

    asyncio.run(scenario())


def test_a_failing_variant_falls_back_and_its_breaker_opens_then_half_opens_and_closes(store: StoreFolder) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "policy: fixed\nvariants: [a, b]\nbreaker: {failures: 3, open_s: 5}\n")
    clock = FakeClock()

    async def scenario() -> None:
        async with Testbed(store) as bed:
            bed.router.clock = clock
            a = bed.runtime_of("a")
            a.failing = True
            served = [(await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] for _ in range(10)]
            assert served == ["b"] * 10  # no client request failed
            assert a.calls == 3  # the breaker opened after three failures: a is no longer tried
            assert bed.samples("tensorgate_route_fallbacks_total") == {
                labels(route="r", variant="a", code="INTERNAL"): 3.0
            }
            assert bed.samples("tensorgate_route_breaker_open")[labels(route="r", variant="a")] == 1.0
            clock.advance(5.0)  # half-open: one trial, which fails: open again
            assert (await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] == "b"
            assert a.calls == 4
            assert (await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] == "b"
            assert a.calls == 4
            a.failing = False
            clock.advance(5.0)  # the next trial succeeds: closed, a serves again
            assert (await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] == "a"
            assert (await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] == "a"
            assert bed.samples("tensorgate_route_breaker_open")[labels(route="r", variant="a")] == 0.0

    asyncio.run(scenario())


def test_client_errors_are_not_retried_and_fallback_can_be_turned_off(store: StoreFolder) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "policy: fixed\nvariants: [a, b]\n")
    declare(store, "strict", "policy: fixed\nvariants: [a, b]\nfallback: false\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            bad = request("r", np.array([[-1.0, 0.0, 0.0]], dtype=np.float32))  # the runtime refuses it
            with pytest.raises(GatewayError) as caught:
                await bed.infer(bad)
            assert caught.value.code == "INVALID_ARGUMENT"
            assert bed.runtime_of("b").calls == 0
            bed.runtime_of("a").failing = True
            with pytest.raises(GatewayError) as caught:
                await bed.infer(request("strict"))
            assert caught.value.code == "INTERNAL"
            assert bed.samples("tensorgate_route_requests_total")[labels(route="strict", variant="a", code="INTERNAL")]

    asyncio.run(scenario())


def test_a_variant_leaving_the_store_leaves_the_route_and_the_last_one_gone_is_unavailable(store: StoreFolder) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "policy: weighted\nvariants: [{model: a, weight: 1}, {model: b, weight: 1}]\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            store.remove("a")
            await bed.controller.sync()
            assert {(await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] for _ in range(20)} == {"b"}
            store.remove("b")
            store.add("c", 1, "2")  # keep the store non-empty
            await bed.controller.sync()
            with pytest.raises(ModelNotReady, match="route 'r' has no variant that can serve"):
                await bed.infer(request("r"))
            assert not bed.dataplane.model_ready("r")

    asyncio.run(scenario())


def test_a_sticky_key_lands_on_the_same_variant(store: StoreFolder) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "policy: weighted\nvariants: [{model: a, weight: 50}, {model: b, weight: 50}]\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            seen: dict[str, set[str]] = {}
            for n in range(40):
                key = f"user-{n % 8}"
                req = request("r")
                req.parameters["route_key"] = key
                seen.setdefault(key, set()).add((await bed.infer(req)).parameters[VARIANT_PARAMETER])
            assert all(len(v) == 1 for v in seen.values())
            assert set().union(*seen.values()) == {"a", "b"}
            req = request("r")
            req.parameters["route_key"] = 1.5
            with pytest.raises(GatewayError, match="parameter 'route_key' must be a string"):
                await bed.infer(req)

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (5 s at most) for the shadow task, which runs after the request was answered."""
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - the shadow signals nothing: it only records metrics
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(("shadow_scale", "within"), [("2", True), ("2.5", False)], ids=["identical", "perturbed"])
def test_shadow_traffic_is_compared_never_returned(store: StoreFolder, shadow_scale: str, within: bool) -> None:
    variants(store, a="2", cand=shadow_scale)
    declare(store, "r", "policy: fixed\nvariants: [a]\nshadow: {model: cand, share: 1.0, max_inflight: 4}\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            for _ in range(5):
                response = await bed.infer(request("r"))
                assert response.parameters[VARIANT_PARAMETER] == "a"
                np.testing.assert_allclose(response.outputs[0].data, [[2.0, 4.0, 6.0]])
            await _until(lambda: bed.samples("tensorgate_shadow_requests_total").get(
                labels(route="r", variant="cand", outcome="compared"), 0) == 5)  # fmt: skip
            results = bed.samples("tensorgate_shadow_comparisons_total")
            assert results == {labels(route="r", variant="cand", result="within" if within else "beyond"): 5.0}
            max_abs = bed.samples("tensorgate_shadow_max_abs_error")[labels(route="r", variant="cand", output="y")]
            assert (max_abs == 0.0) if within else max_abs == pytest.approx(1.5)  # 0.5 * x[2] = 1.5
            argmax = bed.samples("tensorgate_shadow_argmax_rows_total")
            assert argmax[labels(route="r", variant="cand", output="y", agree="true")] == 5.0
            # shadow calls are never client requests
            assert bed.samples("tensorgate_route_requests_total") == {labels(route="r", variant="a", code="OK"): 5.0}
            assert not any(k for k in bed.samples("tensorgate_requests_total") if ("model", "cand") in k)

    asyncio.run(scenario())


def test_shadow_calls_beyond_the_bound_are_dropped_not_queued(store: StoreFolder) -> None:
    import threading

    variants(store, a="2", cand="2")
    declare(store, "r", "policy: fixed\nvariants: [a]\nshadow: {model: cand, share: 1.0, max_inflight: 1}\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            gate = threading.Event()
            bed.runtime_of("cand").gate = gate  # the shadow hangs until released
            for _ in range(4):
                await bed.infer(request("r"))  # the primary answers regardless
            outcomes = bed.samples("tensorgate_shadow_requests_total")
            assert outcomes[labels(route="r", variant="cand", outcome="dropped")] == 3.0
            gate.set()
            await _until(lambda: bed.samples("tensorgate_shadow_requests_total").get(
                labels(route="r", variant="cand", outcome="compared"), 0) == 1)  # fmt: skip

    asyncio.run(scenario())


def test_an_invalid_route_yaml_shows_in_the_index_and_refuses_requests(store: StoreFolder) -> None:
    variants(store, a="2")
    declare(store, "r", "policy: fastest\nvariants: [a]\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            rows = {row["name"]: row for row in bed.dataplane.repository_index()}
            assert rows["r"]["state"] == "UNAVAILABLE"
            assert "r/route.yaml: policy" in rows["r"]["reason"]
            with pytest.raises(ModelNotReady, match="route 'r' is invalid"):
                await bed.infer(request("r"))
            assert bed.dataplane.knows("r")
            assert not bed.dataplane.model_ready("r")

    asyncio.run(scenario())


def test_an_override_file_replaces_or_adds_a_route(store: StoreFolder, tmp_path: Path) -> None:
    variants(store, a="2", b="3")
    declare(store, "r", "policy: fixed\nvariants: [a, b]\n")
    overrides = tmp_path / "overrides"
    overrides.mkdir()
    (overrides / "r.route.yaml").write_text("policy: fixed\nvariant: b\nvariants: [a, b]\n")
    (overrides / "extra.route.yaml").write_text("policy: fixed\nvariants: [a]\n")
    (overrides / "a.route.yaml").write_text("policy: fixed\nvariants: [b]\n")  # a is a model: refused

    async def scenario() -> None:
        async with Testbed(store, sync=False) as bed:
            bed.controller = ModelController(bed.controller.store, bed.host, bed.metrics, config_overrides=overrides)
            await bed.controller.sync()
            assert (await bed.infer(request("r"))).parameters[VARIANT_PARAMETER] == "b"
            assert (await bed.infer(request("extra"))).parameters[VARIANT_PARAMETER] == "a"
            assert (await bed.infer(request("a"))).parameters == {}  # still the model
            assert [row["name"] for row in bed.dataplane.repository_index()] == ["a", "b", "extra", "r"]

    asyncio.run(scenario())
