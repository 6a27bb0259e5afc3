"""Isolated runtimes served end to end: a model whose native code aborts on a request (an AOTInductor text model
sent a token id beyond its vocabulary) or whose process is killed with requests in flight fails only those requests
(UNAVAILABLE, naming the exit), comes back READY, and the other models never stop answering; unloading an isolated
model returns its memory; the memory budget keeps at most the models that fit loaded and loads the others on
request."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.grpc as tg

from runtimes.isolation import ProcessRuntime
from tests.credentials import write_keys
from tests.onnx_models import dense_model, dense_weights, spin_model
from tests.serving import ServerProcess, index_row, metric_value, repository_index, spin_infer, wait_until
from tests.torch_models import TEXT_LENGTH, TEXT_VOCAB, shared_text_store, text_encoder

CHILD_MODULE = b"runtimes.isolation.child"


# -- processes, from /proc ---------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def runtime_processes(server: ServerProcess) -> dict[int, str]:
    """The server's isolated-runtime children: pid -> the model they serve (``m v1``, from their command line)."""
    assert server.proc is not None
    found = {}
    for pid in _children(server.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if CHILD_MODULE in args and not zombie:
            found[pid] = args[args.index(CHILD_MODULE) + 1].decode()
    return found


def total_rss(server: ServerProcess) -> int:
    """Resident memory of the server and all its descendants, in bytes."""
    assert server.proc is not None
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [server.proc.pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
        except OSError:
            continue
        todo.extend(_children(pid))
    return total


# -- requests ----------------------------------------------------------------------------------------------------
def post(
    server: ServerProcess, model: str, name: str, array: np.ndarray, client: httpx.Client | None = None
) -> httpx.Response:
    datatype = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[array.dtype]
    body = {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}]
    }
    return (client or server.client).post(f"/v2/models/{model}/infer", content=orjson.dumps(body), timeout=120)


def answer(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def dense_expected(x: np.ndarray, seed: int = 0) -> np.ndarray:
    w, b = dense_weights(16, 4, seed)
    return x @ w + b


class Hammer:
    """Calls an in-process ONNX model over REST in a loop on its own thread, counting answers and failures."""

    def __init__(self, server: ServerProcess, model: str = "dense") -> None:
        self.server, self.model = server, model
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Hammer:
        self._thread.start()
        wait_until(lambda: self.ok > 0, "the first answer of the hammered model")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
        want = dense_expected(x)
        with httpx.Client(base_url=self.server.http_url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    got = answer(post(self.server, self.model, "x", x, client))
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
                    self.ok += 1
                except Exception as exc:  # counted: the test asserts there are none
                    self.failures.append(repr(exc))


# -- the crash server: an AOTInductor text model, an isolated spin model and an in-process ONNX model -------------
@pytest.fixture(scope="module")
def crash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("isolation_store")
    shutil.copytree(shared_text_store(tmp_path_factory) / "text_torch_aoti", root / "text_torch_aoti")
    dense_model(root / "dense" / "1" / "model.onnx")
    spin_model(root / "spin" / "1" / "model.onnx")
    (root / "spin" / "config.yaml").write_text("isolation: process\ninstances: 2\n")
    proc = ServerProcess(root, tmp_path_factory.mktemp("isolation"), ["--poll-interval", "0"]).start(timeout=300)
    yield proc
    proc.stop()


def _text_ids(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TEXT_VOCAB, size=(rows, TEXT_LENGTH), dtype=np.int64)


def test_an_aoti_model_is_isolated_by_default(crash_server: ServerProcess) -> None:
    # text_torch_aoti (by default) and spin (by its config); dense stays in the server process
    assert sorted(runtime_processes(crash_server).values()) == ["spin v1", "text_torch_aoti v1"]
    ids = _text_ids(3)
    with torch.inference_mode():
        want = text_encoder()(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(answer(post(crash_server, "text_torch_aoti", "ids", ids)), want, atol=1e-4)


def test_a_request_that_aborts_the_runtime_fails_alone(crash_server: ServerProcess) -> None:
    model = "text_torch_aoti"
    ids = _text_ids(3, seed=1)
    before = answer(post(crash_server, model, "ids", ids))
    (old_pid,) = [pid for pid, label in runtime_processes(crash_server).items() if label == f"{model} v1"]
    with Hammer(crash_server) as hammer:
        bad = np.full((8, TEXT_LENGTH), TEXT_VOCAB + 500, dtype=np.int64)  # beyond the vocabulary: c10::Error
        response = post(crash_server, model, "ids", bad)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert f"the runtime process for model {model} v1 exited (signal 6" in error and "restarting" in error
        row = index_row(crash_server, model, 1)
        assert row is not None and row["state"] == "LOADING" and "exited (signal 6" in row["reason"], row
        assert crash_server.client.get(f"/v2/models/{model}/ready").status_code != 200
        served_while_loading = hammer.ok
        wait_until(lambda: (index_row(crash_server, model, 1) or {}).get("state") == "READY", "READY again",
                   timeout=120, server=crash_server)  # fmt: skip
        assert hammer.ok > served_while_loading  # the other model kept answering while this one restarted
    assert hammer.failures == []
    assert (index_row(crash_server, model, 1) or {}).get("reason") == ""
    np.testing.assert_array_equal(answer(post(crash_server, model, "ids", ids)), before)
    (new_pid,) = [pid for pid, label in runtime_processes(crash_server).items() if label == f"{model} v1"]
    assert new_pid != old_pid


def test_a_killed_runtime_fails_only_its_requests_in_flight(crash_server: ServerProcess) -> None:
    (spin_pid,) = [pid for pid, label in runtime_processes(crash_server).items() if label == "spin v1"]
    x = np.ones((1, 16), np.float32)
    with Hammer(crash_server) as hammer, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(spin_infer, crash_server.grpc, x, 5_000_000) for _ in range(2)]  # minutes of work
        wait_until(lambda: metric_value(crash_server, "tensorgate_inflight_requests", model="spin", version="1") == 2,
                   "two spin requests in flight", server=crash_server)  # fmt: skip
        os.kill(spin_pid, 9)
        for future in futures:
            with pytest.raises(Exception) as failure:
                future.result(timeout=60)
            assert isinstance(failure.value, tg.InferenceServerException)
            assert failure.value.status() == "StatusCode.UNAVAILABLE", failure.value
            assert "the runtime process for model spin v1 exited (signal 9" in str(failure.value)
        wait_until(lambda: (index_row(crash_server, "spin", 1) or {}).get("state") == "READY", "spin READY again",
                   timeout=120, server=crash_server)  # fmt: skip
    assert hammer.failures == []
    _version, y = spin_infer(crash_server.grpc, x, 0)
    np.testing.assert_allclose(y, dense_expected(x), rtol=1e-5, atol=1e-5)
    assert spin_pid not in runtime_processes(crash_server)


# -- memory: unloading returns it; the budget -------------------------------------------------------------------
def _dense_store(root: Path, isolated: list[str], plain: tuple[str, ...] = (), budgeted: bool = False) -> Path:
    for seed, name in enumerate([*plain, *isolated]):
        dense_model(root / name / "1" / "model.onnx", seed=seed)
        if name in isolated:
            (root / name / "config.yaml").write_text("isolation: process\ninstances: 1\n")
    return root


def test_unloading_an_isolated_model_returns_its_memory(tmp_path: Path) -> None:
    store = _dense_store(tmp_path / "store", isolated=["iso"], plain=("dense",))
    args = ["--model-control", "explicit", "--load-model", "dense"]
    server = ServerProcess(store, tmp_path, args).start()
    try:
        x = np.ones((2, 16), np.float32)
        for _ in range(20):
            answer(post(server, "dense", "x", x))
        before = total_rss(server)
        assert server.client.post("/v2/repository/models/iso/load").status_code == 200
        np.testing.assert_allclose(answer(post(server, "iso", "x", x)), dense_expected(x, seed=1), rtol=1e-5)
        (_child,) = runtime_processes(server)
        loaded = total_rss(server)
        assert server.client.post("/v2/repository/models/iso/unload").status_code == 200
        wait_until(lambda: not runtime_processes(server), "the runtime process to exit", server=server)
        after = total_rss(server)
        assert loaded - before > 20 * 2**20  # the runtime process held tens of MB (ONNX Runtime imported there)
        assert abs(after - before) <= 0.05 * before, (before, loaded, after)
    finally:
        server.stop()


def test_the_memory_budget_keeps_two_of_three_loaded(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    store = _dense_store(tmp_path / "store", isolated=names)
    probe = ProcessRuntime("onnx", "probe", slots=1)  # what one such runtime process holds on this machine
    probe.load(store / "a" / "1", {})
    size = probe.rss()
    probe.unload()
    budget = int(size * 2.5)  # two fit, three do not
    server = ServerProcess(store, tmp_path, ["--poll-interval", "0", "--memory-budget", str(budget)]).start()
    most, stop = [0], threading.Event()

    def count() -> None:
        while not stop.is_set():
            most[0] = max(most[0], len(runtime_processes(server)))

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    try:
        parked = index_row(server, "c", 1)
        assert parked is not None and parked["state"] == "UNAVAILABLE" and "memory budget" in parked["reason"]
        assert sorted(runtime_processes(server).values()) == ["a v1", "b v1"]
        x = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
        for name in ["c", "a", "b", "c", "b", "a"]:
            got = answer(post(server, name, "x", x))
            np.testing.assert_allclose(got, dense_expected(x, seed=names.index(name)), rtol=1e-5, atol=1e-5)
            assert f"{name} v1" in runtime_processes(server).values()
        rows = {r["name"]: r for r in repository_index(server)}
        unloaded = [n for n in names if rows[n]["state"] != "READY"]
        assert len(unloaded) == 1 and "memory budget" in rows[unloaded[0]]["reason"], rows
        assert unloaded == ["c"]  # c was the least recently used of the three
        assert server.client.get("/v2/health/ready").status_code == 200  # a parked model does not make it unready
    finally:
        stop.set()
        counter.join(10)
        server.stop()
    assert 1 <= most[0] <= 2, most


def test_a_key_that_may_not_call_a_parked_model_does_not_load_it(tmp_path: Path) -> None:
    store = _dense_store(tmp_path / "store", isolated=["a", "b"])
    probe = ProcessRuntime("onnx", "probe", slots=1)
    probe.load(store / "a" / "1", {})
    size = probe.rss()
    probe.unload()
    keys = {
        "ops-key": {"id": "ops", "scopes": ["infer", "read"]},
        "a-key": {"id": "tenant-a", "scopes": ["infer", "read"], "models": ["a"]},
        "b-key": {"id": "tenant-b", "scopes": ["infer", "read"], "models": ["b"]},
    }
    args = ["--poll-interval", "0", "--memory-budget", str(int(size * 1.5)), "--auth-keys"]
    server = ServerProcess(store, tmp_path, [*args, str(write_keys(tmp_path / "keys.yaml", keys))]).start()
    try:
        (loaded,) = runtime_processes(server).values()  # one fits: the other is parked
        parked = "b" if loaded == "a v1" else "a"
        other_key = "b-key" if parked == "a" else "a-key"  # may call only the loaded model
        x = np.ones((1, 16), np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": x.ravel().tolist()}]}
        url = f"{server.http_url}/v2/models/{parked}/infer"
        denied = httpx.post(url, json=body, headers={"Authorization": f"Bearer {other_key}"}, timeout=30)
        assert denied.status_code == 403 and parked in denied.json()["error"], denied.text
        assert list(runtime_processes(server).values()) == [loaded]  # nothing loaded, nothing unloaded for it
        allowed = httpx.post(url, json=body, headers={"Authorization": "Bearer ops-key"}, timeout=60)
        assert allowed.status_code == 200, allowed.text
        got = np.asarray(allowed.json()["outputs"][0]["data"], np.float32).reshape(1, -1)
        np.testing.assert_allclose(got, dense_expected(x, seed=["a", "b"].index(parked)), rtol=1e-5, atol=1e-5)
        assert list(runtime_processes(server).values()) == [f"{parked} v1"]  # the budget made room for it
    finally:
        server.stop()


def test_a_parked_model_loads_for_a_tf_serving_grpc_request(tmp_path: Path) -> None:
    """TF Serving's gRPC names the model only inside the request body: it loads on that request too."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    store = _dense_store(tmp_path / "store", isolated=["a", "b"])
    probe = ProcessRuntime("onnx", "probe", slots=1)
    probe.load(store / "a" / "1", {})
    size = probe.rss()
    probe.unload()
    server = ServerProcess(store, tmp_path, ["--poll-interval", "0", "--memory-budget", str(int(size * 1.5))]).start()
    try:
        (loaded,) = runtime_processes(server).values()
        parked = "b" if loaded == "a v1" else "a"
        x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = parked
        proto = request.inputs["x"]
        proto.dtype = 1  # DT_FLOAT
        proto.tensor_shape.dim.add(size=2)
        proto.tensor_shape.dim.add(size=16)
        proto.float_val.extend(x.ravel().tolist())
        with grpc.insecure_channel(server.grpc) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        y = response.outputs["y"]
        got = np.asarray(y.float_val, np.float32).reshape([d.size for d in y.tensor_shape.dim])
        np.testing.assert_allclose(got, dense_expected(x, seed=["a", "b"].index(parked)), rtol=1e-5, atol=1e-5)
        assert list(runtime_processes(server).values()) == [f"{parked} v1"]
    finally:
        server.stop()
