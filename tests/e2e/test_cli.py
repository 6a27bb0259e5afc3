"""Pins two README "Commands" promises through the command line only: ``tensorgate serve`` takes every setting from
its ``TENSORGATE_*`` environment twin (a server started with no flags at all follows them), and ``tensorgate demo``
builds the demo store (MLP and CNN in every format plus the MLP as a TF SavedModel, with golden samples) that a
server then serves, and a second run finds it up to date and leaves it alone.

Only subprocesses, files and real clients: nothing from ``gateway`` is imported. The demo build (AOTInductor
compiles, TensorFlow) is the slow part, done once for the module.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.grpc as tg
import tritonclient.http as th

from tests.serving import ServerProcess, repository_index

ROOT = Path(__file__).resolve().parents[2]


def _dense_body(rows: int) -> bytes:
    x = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16) / 100
    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 16], "data": x.ravel().tolist()}]}
    )


def test_tensorgate_environment_variables_drive_a_real_server(onnx_store: Path, tmp_path: Path) -> None:
    env = {
        "TENSORGATE_MODEL_CONTROL": "explicit",
        "TENSORGATE_LOAD_MODELS": '["dense", "two_io"]',
        "TENSORGATE_MAX_REQUEST_BYTES": "4096",
        "TENSORGATE_LOG_FORMAT": "json",
    }
    # store, host, ports (0) and port file come from TENSORGATE_STORE/HOST/HTTP_PORT/GRPC_PORT/PORT_FILE too
    proc = ServerProcess(onnx_store, tmp_path, env=env, via_env=True)
    try:
        proc.start()
        assert proc.proc is not None and proc.proc.args == [sys.executable, "-m", "gateway", "serve"]
        http = proc.client

        # TENSORGATE_MODEL_CONTROL=explicit + TENSORGATE_LOAD_MODELS: the store holds more, only these are loaded
        assert {r["name"] for r in repository_index(proc)} == {"dense", "two_io"}
        assert http.get("/v2/models/dense/ready").status_code == 200
        assert http.get("/v2/models/fixed/ready").status_code != 200
        fixed = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1.0, 2.0, 3.0]}]}
        assert http.post("/v2/models/fixed/infer", json=fixed).status_code == 404
        # ... and the repository API loads on demand
        assert http.post("/v2/repository/models/fixed/load", json={}).status_code == 200
        answered = http.post("/v2/models/fixed/infer", json=fixed)
        assert answered.status_code == 200, answered.text
        assert answered.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0]

        # TENSORGATE_MAX_REQUEST_BYTES=4096: a small body is served, a bigger one is a 413
        small, big = _dense_body(2), _dense_body(40)
        assert len(small) < 4096 < len(big)
        assert http.post("/v2/models/dense/infer", content=small).status_code == 200
        too_big = http.post("/v2/models/dense/infer", content=big)
        assert too_big.status_code == 413, too_big.text
        assert "4096" in too_big.json()["error"]

        # TENSORGATE_LOG_FORMAT=json: the server's log lines are JSON objects
        records = [orjson.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
        assert records, proc.log()
        assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records), records[:3]
        assert any(r["logger"].startswith("tensorgate") for r in records), records[:3]
    finally:
        assert proc.stop() == 0


# -- tensorgate demo --------------------------------------------------------------------------------------------

FAMILIES = {"mlp": ("x", [784]), "cnn": ("image", [3, 64, 64])}
TORCH_FORMATS = {"onnx": "model.onnx", "torch_export": "model.pt2", "torch_aoti": "model.pt2"}
DEMO_MODELS = {f"{f}_{fmt}": (f, artifact) for f in FAMILIES for fmt, artifact in TORCH_FORMATS.items()}
DEMO_MODELS["mlp_tf_savedmodel"] = ("mlp", "saved_model.pb")


def _demo(store: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", "demo", "--store", str(store)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=ROOT)  # under pytest's 300 s


def _files(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    store = tmp_path_factory.mktemp("demo") / "demo_store"
    run = _demo(store)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in DEMO_MODELS:
        assert name in run.stdout, run.stdout  # the closing table names every model
    yield store


@pytest.fixture(scope="module")
def demo_server(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(demo_store, tmp_path_factory.mktemp("demo_server"), ["--poll-interval", "0"])
    proc.start(timeout=240)
    yield proc
    proc.stop()


@pytest.mark.slow
def test_demo_builds_every_model_in_every_format_with_golden_samples(demo_store: Path) -> None:
    assert {p.name for p in demo_store.iterdir() if not p.name.startswith(".")} == set(DEMO_MODELS)
    for name, (_family, artifact) in DEMO_MODELS.items():
        model = demo_store / name
        assert (model / "1" / artifact).is_file(), sorted(p.name for p in (model / "1").iterdir())
        assert (model / "config.yaml").is_file()
        goldens = sorted((model / "1" / "golden").glob("*.npz"))  # each version carries its own samples
        assert goldens and goldens[0].name == "0.npz", name
    assert (demo_store / ".sources" / "mlp.pt").is_file()  # the MLP's weights, for other frameworks' variants


def _mlp_expected(store: Path, x: np.ndarray) -> np.ndarray:
    """The demo MLP (Linear(784,128)-ReLU-Linear(128,10)) in numpy, from the weights the demo stores."""
    weights = {k: v.numpy() for k, v in torch.load(store / ".sources" / "mlp.pt", weights_only=True).items()}
    hidden = np.maximum(x @ weights["0.weight"].T + weights["0.bias"], 0.0)
    return hidden @ weights["2.weight"].T + weights["2.bias"]


@pytest.mark.slow
def test_the_demo_store_is_served(demo_store: Path, demo_server: ServerProcess) -> None:
    rows = repository_index(demo_server)
    ready = {r["name"] for r in rows if r["state"] == "READY" and not r["reason"].startswith("route")}
    assert ready == set(DEMO_MODELS), rows
    # the variants exported from one source form a route under the source's name, without any extra file
    routes = {r["name"] for r in rows if r["state"] == "READY" and r["reason"].startswith("route")}
    assert routes == {"mlp", "cnn"}, rows

    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    want = _mlp_expected(demo_store, x)
    rest = th.InferenceServerClient(demo_server.http)
    grpc = tg.InferenceServerClient(demo_server.grpc)
    for model in ("mlp_onnx", "mlp_torch_export", "mlp_torch_aoti", "mlp_tf_savedmodel"):
        for module, client in ((th, rest), (tg, grpc)):
            inp = module.InferInput("x", [2, 784], "FP32")  # type: ignore[attr-defined]
            inp.set_data_from_numpy(x)
            got = client.infer(model, [inp]).as_numpy("logits")  # type: ignore[attr-defined]
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=f"{model} via {module.__name__}")

    # the CNN against the golden sample its export recorded (eager PyTorch)
    with np.load(demo_store / "cnn_onnx" / "1" / "golden" / "0.npz") as golden:
        image, logits = golden["in.image"], golden["out.logits"]
    for model in ("cnn_onnx", "cnn_torch_aoti"):
        inp = th.InferInput("image", list(image.shape), "FP32")
        inp.set_data_from_numpy(image)
        np.testing.assert_allclose(rest.infer(model, [inp]).as_numpy("logits"), logits, rtol=1e-3, atol=1e-4)
    assert httpx.get(f"{demo_server.http_url}/v2/health/ready").status_code == 200


@pytest.mark.slow
def test_a_second_demo_run_finds_the_store_up_to_date(demo_store: Path) -> None:
    before = _files(demo_store)
    run = _demo(demo_store)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "is up to date" in run.stderr, run.stderr
    for name in DEMO_MODELS:
        assert name in run.stdout, run.stdout
    assert _files(demo_store) == before, "an up-to-date demo store must be left as it is"
