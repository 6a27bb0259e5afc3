"""Pins what README "Following the store" promises about versions coming and going under a polling server, which no
other test checks: a version that fails its golden check never replaces the serving one and says why in the
repository index, the metrics and the log, while one that fails only its synthetic warm-up serves (logged); a
request in flight on the old version when the router switches finishes on the old version; requests made while a
new version loads are answered by the old one at their usual speed; ``--model-control none`` loads once and never
follows the store.

Only subprocesses, files and real clients (tritonclient, httpx): nothing from ``gateway`` is imported, so these tests
hold whatever shape the serving core takes. Every wait is on a condition (an index row, a metric), never a sleep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.onnx_models import dense_model, dense_weights, reshape_model, slow_model, slow_outputs, spin_model
from tests.serving import (
    ServerProcess,
    index_row,
    metric_samples,
    metric_series,
    metric_value,
    repository_index,
    spin_infer,
    spins_for,
    wait_until,
)

POLL = "0.2"
#: the swap model: v1 is one dense+tanh layer, v2 is SWAP_V2_LAYERS of them; both warm up with SWAP_WARMUP
#: synthetic requests of SWAP_WARMUP_BATCH rows, which v1 does in a blink and v2 in a couple of seconds
SWAP_WIDTH, SWAP_V2_LAYERS, SWAP_WARMUP, SWAP_WARMUP_BATCH = 256, 24, 1000, 64
#: how long the request held across a swap should run (a swap here takes well under a second)
HOLD_SECONDS = 4.0


def add_version(store: Path, model: str, version: int, build: Callable[[Path], object]) -> Path:
    """Writes a version beside the store's listing, then renames it in, so a poll never sees it half written."""
    staging = store / model / f".staging-{version}"
    build(staging / "model.onnx")
    final = store / model / str(version)
    os.rename(staging, final)
    return final


def dense_expected(x: np.ndarray, seed: int) -> np.ndarray:
    w, b = dense_weights(seed=seed)
    return x @ w + b


def rest_infer(server: ServerProcess, model: str, x: np.ndarray, version: str = "") -> httpx.Response:
    path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}]}
    return server.client.post(path, json=body)


def answer(resp: httpx.Response) -> tuple[str, np.ndarray]:
    """(model_version, y) of a V2 JSON response that must be a 200."""
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    out = doc["outputs"][0]
    return doc["model_version"], np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def last_sync(server: ServerProcess) -> float:
    return metric_value(server, "tensorgate_store_last_sync_timestamp_seconds") or 0.0


def wait_for_polls(server: ServerProcess, polls: int) -> None:
    """Returns once the server has finished ``polls`` more store syncs (a whole one started after this call)."""
    for i in range(polls):
        before = last_sync(server)
        wait_until(lambda b=before: last_sync(server) > b, f"store sync {i + 1} of {polls}", server=server)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle_store")
    # golden: v1 plus golden samples recorded from v1's weights, checked at load
    dense_model(root / "golden" / "1" / "model.onnx", seed=0)
    (root / "golden" / "golden").mkdir()
    for k in range(2):
        x = np.random.default_rng(100 + k).standard_normal((3, 16)).astype(np.float32)
        np.savez(root / "golden" / "golden" / f"{k}.npz", **{"in.x": x, "out.y": dense_expected(x, 0)})
    (root / "golden" / "config.yaml").write_text("verify: {on_load: true, atol: 1.0e-4, rtol: 1.0e-3}\n")
    # fragile: v1 a dense layer; v2 (added by the test) cannot run the synthetic warm-up
    dense_model(root / "fragile" / "1" / "model.onnx", seed=0)
    # spin: a dense layer whose requests take as long as the client says
    spin_model(root / "spin" / "1" / "model.onnx", seed=0)
    (root / "spin" / "config.yaml").write_text("version_policy: {latest: 1}\n")
    # swap: v2 (added by the test) takes seconds to warm up
    slow_model(root / "swap" / "1" / "model.onnx", width=SWAP_WIDTH, layers=1, seed=0)
    (root / "swap" / "config.yaml").write_text(
        f"version_policy: {{latest: 1}}\nwarmup: {{requests: {SWAP_WARMUP}, batch_size: {SWAP_WARMUP_BATCH}}}\n"
    )
    return root


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(store, tmp_path_factory.mktemp("lifecycle"), ["--poll-interval", POLL]).start()
    yield proc
    proc.stop()


def _failed_version_keeps_v1_serving(server: ServerProcess, model: str) -> dict[str, str]:
    """Common part of the golden and warm-up pins: v2 ends UNAVAILABLE, v1 stays READY and answers with v1's
    weights to requests without a version; v2 by number is a 503 naming the reason; the failure is counted once
    (not retried every poll while unchanged) and logged. Returns v2's index row."""
    x = np.random.default_rng(7).standard_normal((4, 16)).astype(np.float32)
    assert answer(rest_infer(server, model, x))[0] == "1"
    row = wait_until(
        lambda: (r := index_row(server, model, 2)) is not None and r["state"] not in ("LOADING", "") and r,
        f"{model} v2 to finish loading in the repository index",
        server=server,
    )
    assert row["state"] == "UNAVAILABLE", row
    assert row["reason"], row
    v1 = index_row(server, model, 1)
    assert v1 is not None and v1["state"] == "READY", repository_index(server)

    version, y = answer(rest_infer(server, model, x))
    assert version == "1"
    np.testing.assert_allclose(y, dense_expected(x, seed=0), rtol=1e-5, atol=1e-5)
    version, y = answer(rest_infer(server, model, x, version="1"))
    assert version == "1"
    np.testing.assert_allclose(y, dense_expected(x, seed=0), rtol=1e-5, atol=1e-5)
    refused = rest_infer(server, model, x, version="2")
    assert refused.status_code == 503, refused.text
    assert row["reason"] in refused.json()["error"]

    assert metric_value(server, "tensorgate_model_load_failures_total", model=model) == 1
    assert metric_value(server, "tensorgate_model_state", model=model, version="1", state="READY") == 1
    assert metric_value(server, "tensorgate_model_state", model=model, version="2", state="UNAVAILABLE") == 1
    wait_for_polls(server, 2)  # unchanged since it failed: not loaded again
    assert metric_value(server, "tensorgate_model_load_failures_total", model=model) == 1
    assert index_row(server, model, 2) == row
    assert answer(rest_infer(server, model, x))[0] == "1"
    assert row["reason"] in server.log()
    return row


def test_a_version_failing_its_golden_check_never_replaces_the_serving_one(server: ServerProcess, store: Path) -> None:
    add_version(store, "golden", 2, lambda p: dense_model(p, seed=1))
    row = _failed_version_keeps_v1_serving(server, "golden")
    assert "golden check failed" in row["reason"], row


def test_a_version_failing_only_its_synthetic_warmup_replaces_the_serving_one(
    server: ServerProcess, store: Path
) -> None:
    # v2 answers real requests ([n, 16]) but the synthetic warm-up input ([1, 1]: free dims set to 1) cannot be
    # reshaped to [-1, 16]: made-up data proves nothing, so the failure is logged and v2 serves
    add_version(store, "fragile", 2, lambda p: reshape_model(p, seed=1))
    x = np.random.default_rng(7).standard_normal((4, 16)).astype(np.float32)
    _version, y = wait_until(
        lambda: (r := answer(rest_infer(server, "fragile", x)))[0] == "2" and r,
        "fragile v2 to serve requests without a version",
        server=server,
    )
    np.testing.assert_allclose(y, dense_expected(x, seed=1), rtol=1e-5, atol=1e-5)
    row = index_row(server, "fragile", 2)
    assert row is not None and row["state"] == "READY" and not row["reason"], row
    log = server.log_path.read_text(errors="replace")
    line = next(line for line in log.splitlines() if "fragile v2: synthetic warm-up failed, serving anyway" in line)
    assert "WARNING" in line and "reshape" in line.lower(), line
    assert metric_value(server, "tensorgate_model_load_failures_total", model="fragile") in (None, 0)


def test_a_request_in_flight_on_the_old_version_finishes_across_the_swap(server: ServerProcess, store: Path) -> None:
    x = np.random.default_rng(8).standard_normal((2, 16)).astype(np.float32)
    spins = spins_for(server.grpc, HOLD_SECONDS)

    def inflight_v1() -> float | None:
        return metric_value(server, "tensorgate_inflight_requests", model="spin", version="1")

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(spin_infer, server.grpc, x, spins)
        wait_until(lambda: inflight_v1() == 1, "the held request to be in flight on spin v1", server=server)

        add_version(store, "spin", 2, lambda p: spin_model(p, seed=1))
        _, y2 = wait_until(
            lambda: (r := spin_infer(server.grpc, x, 0))[0] == "2" and r,
            "a request without a version to be answered by spin v2",
            server=server,
        )
        np.testing.assert_allclose(y2, dense_expected(x, seed=1), rtol=1e-5, atol=1e-5)
        # the router has switched while the held request still runs on v1
        assert not held.done(), f"the held request ended before the swap: raise HOLD_SECONDS ({HOLD_SECONDS})"
        assert inflight_v1() == 1
        held_version, held_y = held.result(timeout=300)

    assert held_version == "1"
    np.testing.assert_allclose(held_y, dense_expected(x, seed=0), rtol=1e-5, atol=1e-5)
    # v1 unloads once drained; later requests, with or without a version, go to v2
    wait_until(
        lambda: not metric_samples(server, "tensorgate_model_state", model="spin", version="1"),
        "spin v1 to be drained and unloaded (gone from tensorgate_model_state)",
        server=server,
    )
    assert [r for r in repository_index(server) if r["name"] == "spin"] == [
        {"name": "spin", "version": "2", "state": "READY", "reason": ""}
    ]
    assert spin_infer(server.grpc, x, 0)[0] == "2"
    # nothing failed across the swap
    codes = {
        labels["code"] for labels, _ in metric_series(server, "tensorgate_requests_total") if labels["model"] == "spin"
    }
    assert codes == {"OK"}, codes


def test_requests_while_a_new_version_loads_are_answered_by_the_old_one_without_delay(
    server: ServerProcess, store: Path
) -> None:
    x = np.random.default_rng(9).standard_normal((1, SWAP_WIDTH)).astype(np.float32)
    want = {
        "1": slow_outputs(x, SWAP_WIDTH, layers=1, seed=0),
        "2": slow_outputs(x, SWAP_WIDTH, layers=SWAP_V2_LAYERS, seed=1),
    }
    assert answer(rest_infer(server, "swap", x))[0] == "1"
    add_version(store, "swap", 2, lambda p: slow_model(p, width=SWAP_WIDTH, layers=SWAP_V2_LAYERS, seed=1))

    def v2_state() -> str:
        row = index_row(server, "swap", 2)
        return row["state"] if row else ""

    wait_until(lambda: v2_state() == "LOADING", "swap v2 to show LOADING in the repository index", server=server)
    during: list[tuple[str, np.ndarray, float]] = []  # issued and answered while v2 was LOADING
    while (state := v2_state()) == "LOADING":
        t0 = time.perf_counter()
        resp = rest_infer(server, "swap", x)
        elapsed = time.perf_counter() - t0
        version, y = answer(resp)  # every request answered OK
        np.testing.assert_allclose(y, want[version], rtol=1e-4, atol=1e-5)
        if v2_state() == "LOADING":
            during.append((version, y, elapsed))
    assert state == "READY", index_row(server, "swap", 2)

    load = metric_value(server, "tensorgate_model_load_duration_seconds_sum", model="swap", version="2")
    assert load is not None and load > 0
    assert len(during) >= 5, f"only {len(during)} requests while v2 loaded for {load:.2f}s"
    assert {v for v, _, _ in during} == {"1"}, "requests made while v2 loads are answered by v1"
    slowest = max(e for _, _, e in during)
    assert slowest < load / 3, f"a request took {slowest:.3f}s while v2 loaded for {load:.2f}s ({len(during)} requests)"
    assert answer(rest_infer(server, "swap", x))[0] == "2"
    failed = [
        (labels, v) for labels, v in metric_series(server, "tensorgate_requests_total") if labels["model"] == "swap"
    ]
    assert failed and all(labels["code"] == "OK" for labels, _ in failed), failed


def test_model_control_none_loads_once_and_ignores_new_versions(tmp_path: Path) -> None:
    store = tmp_path / "store"
    dense_model(store / "dense" / "1" / "model.onnx", seed=0)
    poll = ServerProcess(store, tmp_path, ["--poll-interval", POLL])
    fixed = ServerProcess(store, tmp_path, ["--model-control", "none", "--poll-interval", POLL])
    try:
        poll.start()
        fixed.start()
        synced_at_start = last_sync(fixed)
        assert synced_at_start > 0
        add_version(store, "dense", 2, lambda p: dense_model(p, seed=1))
        wait_until(
            lambda: (r := index_row(poll, "dense", 2)) is not None and r["state"] == "READY",
            "the polling server to load dense v2",
            server=poll,
        )
        wait_for_polls(poll, 3)  # the polling server has looked at the store again and again since

        assert [r for r in repository_index(fixed) if r["name"] == "dense"] == [
            {"name": "dense", "version": "1", "state": "READY", "reason": ""}
        ]
        assert last_sync(fixed) == synced_at_start, "--model-control none read the store again"
        x = np.random.default_rng(10).standard_normal((2, 16)).astype(np.float32)
        version, y = answer(rest_infer(fixed, "dense", x))
        assert version == "1"
        np.testing.assert_allclose(y, dense_expected(x, seed=0), rtol=1e-5, atol=1e-5)
        assert rest_infer(fixed, "dense", x, version="2").status_code == 404
        version, y = answer(rest_infer(poll, "dense", x))
        assert version == "2"
        np.testing.assert_allclose(y, dense_expected(x, seed=1), rtol=1e-5, atol=1e-5)
    finally:
        fixed.stop()
        poll.stop()
