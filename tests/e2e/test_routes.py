"""Routes on a real server under concurrent REST and gRPC load (tritonclient): the sla policy moving traffic off
a variant made slow mid-run and back once it recovers, a variant unloaded mid-run with zero failed requests,
weighted 90/10 shares and sticky keys, shadow divergence of a perturbed variant against an identical one, and
a route through the TF Serving APIs.

The slow variant is a real model: a new version of it whose ONNX graph runs a long chain of layers (same
signature), published into the polled store mid-run; a further fast version is its recovery. Timings are
waited for with generous timeouts and printed (for the notes), never asserted.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from tests.credentials import write_keys
from tests.onnx_models import dense_model, heavy_model
from tests.serving import ServerProcess

X16 = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
SLOW_LAYERS = 400  # ~100 ms a call on one core: far beyond the route's 60 ms p99


def publish(path_of_model: Path, version: int, build: Callable[[Path], Path]) -> None:
    """A new version folder appears complete (built aside, then renamed), as an upload tool would do it."""
    staging = path_of_model / f".{version}.partial"
    build(staging / "model.onnx")
    staging.rename(path_of_model / str(version))


@pytest.fixture(scope="module")
def route_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("route_store")
    heavy_model(root / "fast_a" / "1" / "model.onnx", layers=1, seed=0)
    heavy_model(root / "fast_b" / "1" / "model.onnx", layers=1, seed=1)
    (root / "latency").mkdir()
    (root / "latency" / "route.yaml").write_text(
        "policy: sla\nvariants: [fast_a, fast_b]\nsla: {p99_ms: 60}\n"
        "choice: {window_s: 3, min_samples: 5, hold_s: 2, interval_s: 0.25, explore: 0.1, margin: 0.2}\n"
    )
    for name, seed in (("stable", 0), ("canary", 0), ("left", 0), ("right", 0), ("primary", 0), ("same", 0)):
        dense_model(root / name / "1" / "model.onnx", seed=seed)
    dense_model(root / "drifted" / "1" / "model.onnx", seed=0, perturb=0.05)
    for name, text in {
        "canary_route": "policy: weighted\nvariants: [{model: stable, weight: 90}, {model: canary, weight: 10}]\n",
        "pair": "policy: weighted\nvariants: [{model: left, weight: 50}, {model: right, weight: 50}]\n"
        "breaker: {failures: 2, open_s: 1}\n",
        "checked": "policy: fixed\nvariants: [primary]\nshadow: {model: drifted, share: 1.0, max_inflight: 8}\n",
        "mirrored": "policy: fixed\nvariants: [primary]\nshadow: {model: same, share: 1.0, max_inflight: 8}\n",
    }.items():
        (root / name).mkdir()
        (root / name / "route.yaml").write_text(text)
    return root


ADMIN_KEY = "k-route-admin-1"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def route_server(route_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("route_server")
    keys = write_keys(tmp / "keys.yaml", {ADMIN_KEY: {"id": "ops", "scopes": ["admin"]}})  # the repository API
    args = ["--poll-interval", "0.5", "--auth-keys", str(keys), "--auth-open", "health,metrics,read,infer"]
    proc = ServerProcess(route_store, tmp, args).start()
    yield proc
    proc.stop()


class Load:
    """Closed-loop traffic to one route over REST and gRPC threads; every outcome with its time and variant."""

    def __init__(self, server: ServerProcess, model: str, threads: int = 2) -> None:
        self.server = server
        self.model = model
        self.outcomes: list[tuple[float, str, str, str]] = []  # (time, protocol, variant or "", error or "")
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(p,), daemon=True)
            for p in ("rest", "grpc")
            for _ in range(threads)
        ]

    def _loop(self, protocol: str) -> None:
        if protocol == "rest":
            client: Any = th.InferenceServerClient(self.server.http)
            inp: Any = th.InferInput("x", [1, 16], "FP32")
        else:
            client = tg.InferenceServerClient(self.server.grpc)
            inp = tg.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X16)
        while not self._stop.is_set():
            try:
                result = client.infer(self.model, [inp])
            except Exception as exc:
                self.outcomes.append((time.monotonic(), protocol, "", str(exc)))
                continue
            self.outcomes.append((time.monotonic(), protocol, variant_of(result, protocol), ""))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def failures(self) -> list[tuple[float, str, str, str]]:
        return [o for o in self.outcomes if o[3]]

    def shares(self, since: float, until: float | None = None) -> dict[str, float]:
        served = [v for t, _p, v, e in self.outcomes if t >= since and (until is None or t < until) and not e]
        counts = Counter(served)
        return {k: round(c / max(len(served), 1), 3) for k, c in sorted(counts.items())}


def variant_of(result: Any, protocol: str) -> str:
    response = result.get_response()
    if protocol == "rest":
        return str(response["parameters"]["variant"])
    return str(response.parameters["variant"].string_param)


def route_state(server: ServerProcess, name: str) -> dict[str, Any]:
    doc = httpx.get(f"{server.http_url}/v2/models/{name}", timeout=10).json()
    route: dict[str, Any] = doc["parameters"]["route"]
    return route


def wait_for(predicate: Callable[[], bool], what: str, server: ServerProcess, timeout: float = 90.0) -> float:
    """Seconds until ``predicate`` held (AssertionError with the server's log past ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}\n{server.log()}")
        time.sleep(0.1)
    return time.monotonic() - start


def ready_version(server: ServerProcess, model: str) -> str:
    doc = httpx.get(f"{server.http_url}/v2/models/{model}", timeout=10).json()
    return str(doc.get("versions", [""])[-1]) if doc.get("versions") else ""


def test_sla_moves_traffic_off_a_slowed_variant_and_back_when_it_recovers(
    route_server: ServerProcess, route_store: Path
) -> None:
    with Load(route_server, "latency") as load:
        wait_for(lambda: len(load.outcomes) >= 200, "baseline traffic", route_server)
        start_slow = time.monotonic()
        before = load.shares(0.0, start_slow)
        assert route_state(route_server, "latency")["choice"] == "fast_a"
        publish(route_store / "fast_a", 2, lambda p: heavy_model(p, layers=SLOW_LAYERS, seed=0))
        loaded = wait_for(lambda: ready_version(route_server, "fast_a") == "2", "fast_a v2 (slow) READY", route_server)
        slow_from = time.monotonic()
        moved = wait_for(
            lambda: route_state(route_server, "latency")["choice"] == "fast_b", "moving to fast_b", route_server
        )
        time.sleep(3.0)
        during = load.shares(time.monotonic() - 3.0)
        publish(route_store / "fast_a", 3, lambda p: heavy_model(p, layers=1, seed=0))
        wait_for(lambda: ready_version(route_server, "fast_a") == "3", "fast_a v3 (fast again) READY", route_server)
        recovered_from = time.monotonic()
        back = wait_for(lambda: route_state(route_server, "latency")["choice"] == "fast_a", "moving back", route_server)
        time.sleep(2.0)
        after = load.shares(time.monotonic() - 2.0)
    assert load.failures() == []
    assert during.get("fast_a", 0.0) < before.get("fast_a", 0.0)
    print(
        f"\n[routes/sla] {len(load.outcomes)} requests; slow version READY after {loaded:.1f}s; traffic moved "
        f"{moved:.2f}s after it was READY (slow from t={slow_from - start_slow:.1f}s) and back {back:.2f}s after "
        f"the recovered version was READY (t={recovered_from - start_slow:.1f}s); shares before {before}, "
        f"while slow {during}, after recovery {after}"
    )
    metrics = httpx.get(f"{route_server.http_url}/metrics", timeout=10).text
    assert 'tensorgate_route_requests_total{code="OK",route="latency",variant="fast_b"}' in metrics
    assert 'tensorgate_route_sla_met{route="latency"}' in metrics  # 1 or 0: how fast_b fares depends on the box


def test_a_variant_unloaded_mid_run_fails_no_request(route_server: ServerProcess) -> None:
    with Load(route_server, "pair") as load:
        wait_for(lambda: len(load.outcomes) >= 200, "traffic on both variants", route_server)
        assert set(load.shares(0.0)) == {"left", "right"}
        repository = f"{route_server.http_url}/v2/repository/models/left"
        httpx.post(f"{repository}/unload", headers=ADMIN, timeout=60).raise_for_status()
        unloaded = time.monotonic()
        wait_for(lambda: len([o for o in load.outcomes if o[0] > unloaded + 0.5]) >= 300, "traffic", route_server)
        alone = load.shares(unloaded + 0.5)
        httpx.post(f"{repository}/load", headers=ADMIN, timeout=60).raise_for_status()
        loaded = time.monotonic()
        wait_for(lambda: len([o for o in load.outcomes if o[0] > loaded]) >= 300, "traffic", route_server)
        both = load.shares(loaded)
    assert load.failures() == []
    assert alone == {"right": 1.0}
    assert set(both) == {"left", "right"}
    print(f"\n[routes/unload] {len(load.outcomes)} requests, 0 failed; after unload {alone}; after reload {both}")


def test_weighted_90_10_holds_over_5000_requests_and_sticky_keys_stick(route_server: ServerProcess) -> None:
    with Load(route_server, "canary_route", threads=2) as load:
        wait_for(lambda: len(load.outcomes) >= 5_000, "5000 requests", route_server, timeout=300)
    assert load.failures() == []
    shares = load.shares(0.0)
    print(f"\n[routes/weighted] {len(load.outcomes)} requests: shares {shares}")
    assert abs(shares["stable"] - 0.90) <= 0.02
    assert abs(shares["canary"] - 0.10) <= 0.02

    rest = th.InferenceServerClient(route_server.http)
    grpc = tg.InferenceServerClient(route_server.grpc)
    rin, gin = th.InferInput("x", [1, 16], "FP32"), tg.InferInput("x", [1, 16], "FP32")
    rin.set_data_from_numpy(X16)
    gin.set_data_from_numpy(X16)
    landed: dict[str, set[str]] = {}
    for n in range(40):
        key = f"customer-{n}"
        for _ in range(3):
            by_header = rest.infer("canary_route", [rin], headers={"tensorgate-route-key": key})
            by_parameter = rest.infer("canary_route", [rin], parameters={"route_key": key})
            by_metadata = grpc.infer("canary_route", [gin], headers={"tensorgate-route-key": key})
            landed.setdefault(key, set()).update(
                {variant_of(by_header, "rest"), variant_of(by_parameter, "rest"), variant_of(by_metadata, "grpc")}
            )
    assert all(len(v) == 1 for v in landed.values()), landed
    assert set().union(*landed.values()) == {"stable", "canary"}  # 40 keys: both variants get some


def _scrape(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_shadow_a_drifted_variant_diverges_and_an_identical_one_agrees(route_server: ServerProcess) -> None:
    rest = th.InferenceServerClient(route_server.http)
    grpc = tg.InferenceServerClient(route_server.grpc)
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.standard_normal((4, 16)).astype(np.float32)
        for name in ("checked", "mirrored"):
            rin, gin = th.InferInput("x", [4, 16], "FP32"), tg.InferInput("x", [4, 16], "FP32")
            rin.set_data_from_numpy(x)
            gin.set_data_from_numpy(x)
            for result, protocol in ((rest.infer(name, [rin]), "rest"), (grpc.infer(name, [gin]), "grpc")):
                assert variant_of(result, protocol) == "primary"  # the shadow never answers
    for route, shadow in (("checked", "drifted"), ("mirrored", "same")):
        wait_for(
            lambda r=route, s=shadow: (
                _scrape(  # type: ignore[misc]
                    route_server, "tensorgate_shadow_requests_total", route=r, variant=s, outcome="compared"
                )
                >= 30
            ),
            f"{route}'s shadow comparisons",
            route_server,
        )
    drift = _scrape(route_server, "tensorgate_shadow_max_abs_error", route="checked", variant="drifted", output="y")
    same = _scrape(route_server, "tensorgate_shadow_max_abs_error", route="mirrored", variant="same", output="y")
    beyond = _scrape(
        route_server, "tensorgate_shadow_comparisons_total", route="checked", variant="drifted", result="beyond"
    )
    within = _scrape(
        route_server, "tensorgate_shadow_comparisons_total", route="mirrored", variant="same", result="within"
    )
    disagree = _scrape(
        route_server, "tensorgate_shadow_argmax_rows_total", route="mirrored", variant="same", output="y", agree="false"
    )
    agree = _scrape(
        route_server, "tensorgate_shadow_argmax_rows_total", route="mirrored", variant="same", output="y", agree="true"
    )
    print(f"\n[routes/shadow] drifted max |err| {drift:.4g} ({beyond:.0f} beyond tolerance); identical {same} "
          f"({within:.0f} within, argmax rows agree {agree:.0f}, disagree {disagree:.0f})")  # fmt: skip
    assert drift > 1e-3 and beyond >= 30
    assert same == 0.0 and within >= 30
    assert agree >= 120 and disagree == 0.0
    # shadow calls are not client requests of the shadow variant
    assert _scrape(route_server, "tensorgate_requests_total", model="drifted", version="1", runtime="onnx",
                   protocol="rest", code="OK") == 0.0  # fmt: skip


def test_verify_reports_the_shadows_divergence_on_live_traffic(
    route_server: ServerProcess, route_store: Path, capsys: Any
) -> None:
    """After the shadow test's traffic, ``tensorgate verify --url`` reports each route's shadow: the drifted
    variant's comparisons beyond tolerance and its error, the identical one's agreement."""
    from gateway.cli.main import main

    main(["verify", "--store", str(route_store), "--url", route_server.http])
    out = capsys.readouterr().out
    drifted = re.search(r"shadow drifted: .*comparisons .*beyond (\d+).*\n\s+output y: max abs error ([0-9.e+-]+)", out)
    same = re.search(
        r"shadow same: .*comparisons .*within (\d+).*\n\s+output y: max abs error ([0-9.e+-]+).*argmax agrees on (\d+) of (\d+) rows",
        out,
    )
    assert "route checked, shadow traffic on live requests" in out and drifted and same, out
    assert int(drifted.group(1)) >= 30 and float(drifted.group(2)) > 1e-3
    assert int(same.group(1)) >= 30 and float(same.group(2)) == 0.0 and same.group(3) == same.group(4)


def test_a_route_is_served_by_the_tf_serving_rest_api_and_named_in_the_header(route_server: ServerProcess) -> None:
    reply = httpx.post(
        f"{route_server.http_url}/v1/models/canary_route:predict",
        json={"instances": X16.tolist()},
        headers={"tensorgate-route-key": "customer-1"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["tensorgate-variant"] in {"stable", "canary"}
    assert np.asarray(reply.json()["predictions"]).shape == (1, 4)
    index = httpx.post(f"{route_server.http_url}/v2/repository/index", timeout=10).json()
    rows = {r["name"]: r for r in index}
    assert rows["canary_route"]["state"] == "READY"
    assert "weights stable 90%, canary 10%" in rows["canary_route"]["reason"]


def test_a_route_is_served_by_the_tf_serving_grpc_stubs_and_named_in_trailing_metadata(
    route_server: ServerProcess,
) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "canary_route"
    proto = request.inputs["x"]
    proto.dtype = 1  # DT_FLOAT
    proto.tensor_shape.dim.add(size=1)
    proto.tensor_shape.dim.add(size=16)
    proto.float_val.extend(X16.reshape(-1).tolist())
    with grpc.insecure_channel(route_server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        variants = set()
        for _ in range(3):
            response, call = stub.Predict.with_call(
                request, metadata=(("tensorgate-route-key", "customer-7"),), timeout=30
            )
            assert response.model_spec.name == "canary_route"
            assert list(response.outputs["y"].tensor_shape.dim)[1].size == 4
            variants.add(dict(call.trailing_metadata())["tensorgate-variant"])
    assert len(variants) == 1 and variants <= {"stable", "canary"}


def test_bench_route_plots_which_variant_served_over_time(route_server: ServerProcess, tmp_path: Path) -> None:
    from gateway.cli.bench.command import main as bench

    out, page = tmp_path / "route.json", tmp_path / "route.html"
    code = bench(
        ["--url", route_server.http, "--route", "canary_route", "--concurrency", "2", "--duration", "3",
         "--json", str(out), "--html", str(page), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["errors"] == 0 and doc["requests"] > 0
    assert set(doc["variants"]) == {"stable", "canary"}
    assert sum(sum(per_second) for per_second in doc["timeline"]["served"].values()) == doc["requests"]
    assert doc["variants"]["stable"]["share"] > doc["variants"]["canary"]["share"]
    html = page.read_text()
    assert "<svg" in html and "requests / s by serving variant" in html and "router window p99" in html


def test_bench_route_reports_the_shadows_divergence(route_server: ServerProcess, tmp_path: Path, capsys: Any) -> None:
    from gateway.cli.bench.command import main as bench

    out = tmp_path / "checked.json"
    args = [
        "--url",
        route_server.http,
        "--route",
        "checked",
        "--concurrency",
        "1",
        "--duration",
        "2",
        "--json",
        str(out),
    ]
    assert bench([*args, "--no-progress"]) == 0
    shadow = json.loads(out.read_text())["shadow"]["drifted"]
    assert shadow["calls"]["compared"] > 0 and shadow["comparisons"]["beyond"] > 0
    assert shadow["outputs"]["y"]["max_abs_error"] > 1e-3
    printed = capsys.readouterr().out
    assert "shadow drifted: calls compared" in printed and "output y: max abs error" in printed
