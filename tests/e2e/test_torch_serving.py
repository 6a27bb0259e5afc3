"""PyTorch models served end to end: every family (MLP, CNN, two inputs/two outputs with an int64 input) in every
format (ONNX, torch.export, AOTInductor), called with tritonclient over REST and gRPC, compared with eager PyTorch."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from tests.serving import ServerProcess
from tests.torch_models import FAMILIES, MAX_BATCH, eager_outputs, family_inputs, shared_torch_store

FORMATS = ("onnx", "torch_export", "torch_aoti")
#: max abs error vs eager PyTorch, per format (same graph, different kernels)
TOLERANCE = {"onnx": 1e-4, "torch_export": 1e-5, "torch_aoti": 1e-4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store, _lines = shared_torch_store(tmp_path_factory)
    proc = ServerProcess(store, tmp_path_factory.mktemp("torch_server"), ["--poll-interval", "0"]).start(timeout=300)
    yield proc
    proc.stop()


def _infer(module: object, client: object, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = []
    for name, array in inputs.items():
        t = module.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")  # type: ignore[attr-defined]
        t.set_data_from_numpy(array)
        tensors.append(t)
    result = client.infer(model, tensors)  # type: ignore[attr-defined]
    outputs = result.get_response()["outputs"] if module is th else result.get_response().outputs
    names = [o["name"] if module is th else o.name for o in outputs]
    return {n: result.as_numpy(n) for n in names}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", FAMILIES)
def test_served_equals_eager(server: ServerProcess, family: str, fmt: str) -> None:
    inputs = family_inputs(family, batch=3)
    expected = eager_outputs(family, inputs)
    model = f"{family}_{fmt}"
    for module, address in ((th, server.http), (tg, server.grpc)):
        client = module.InferenceServerClient(address)  # type: ignore[attr-defined]
        got = _infer(module, client, model, inputs)
        assert got.keys() == expected.keys(), (model, got.keys())
        for name, want in expected.items():
            err = float(np.max(np.abs(got[name] - want)))
            assert err <= TOLERANCE[fmt], f"{model} {name} via {module.__name__}: max abs error {err}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_shows_batch_dimension(server: ServerProcess, fmt: str) -> None:
    meta = httpx.get(f"{server.http_url}/v2/models/multi_{fmt}").json()
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert inputs["x"]["shape"] == [-1, 8] and inputs["x"]["datatype"] == "FP32"
    assert inputs["ids"]["shape"] == [-1, 4] and inputs["ids"]["datatype"] == "INT64"
    assert {t["name"] for t in meta["outputs"]} == {"score", "pooled"}


def _post(server: ServerProcess, model: str, tensors: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/v2/models/{model}/infer", content=orjson.dumps({"inputs": tensors}), timeout=30
    )


@pytest.mark.parametrize("fmt", ["torch_export", "torch_aoti"])
def test_bad_input_to_pt2_is_a_clear_4xx(server: ServerProcess, fmt: str) -> None:
    model = f"mlp_{fmt}"
    wrong_rank = _post(server, model, [{"name": "x", "datatype": "FP32", "shape": [784], "data": [0.0] * 784}])
    assert wrong_rank.status_code == 400 and "shape" in wrong_rank.json()["error"]
    wrong_dtype = _post(server, model, [{"name": "x", "datatype": "INT64", "shape": [1, 784], "data": [0] * 784}])
    assert wrong_dtype.status_code == 400 and "FP32" in wrong_dtype.json()["error"]
    too_big = MAX_BATCH + 4
    beyond = _post(
        server, model, [{"name": "x", "datatype": "FP32", "shape": [too_big, 784], "data": [0.0] * (784 * too_big)}]
    )
    assert beyond.status_code == 400, beyond.text
    assert "batch" in beyond.json()["error"].lower() or str(MAX_BATCH) in beyond.json()["error"]
    # the model still serves afterwards
    ok = _post(server, model, [{"name": "x", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}])
    assert ok.status_code == 200


def test_verify_passes_against_the_running_gateway(server: ServerProcess) -> None:
    import subprocess
    import sys

    store = server.store
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "verify", "--store", store, "--url", server.http_url],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for fmt in FORMATS:
        assert f"mlp_{fmt}" in done.stdout


def test_a_package_whose_probe_crashes_fails_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A native crash while loading a package (the probe process segfaults) marks that model failed; the server
    and its other models keep serving."""
    store, _lines = shared_torch_store(tmp_path_factory)
    root = tmp_path_factory.mktemp("probe_store")
    for model in ("mlp_onnx", "mlp_torch_aoti"):
        shutil.copytree(store / model, root / model)
    config = root / "mlp_torch_aoti" / "config.yaml"
    config.write_text(config.read_text() + "options:\n  probe: true\n")
    hooks = tmp_path_factory.mktemp("crash_hook")
    (hooks / "sitecustomize.py").write_text(
        "import ctypes\n"
        "if b'runtimes.torch_aoti' in open('/proc/self/cmdline', 'rb').read():\n"
        "    ctypes.string_at(0)\n"
    )
    args = ["--poll-interval", "0", "--no-strict-readiness"]  # a model fails to load on purpose
    proc = ServerProcess(root, tmp_path_factory.mktemp("probe_server"), args, env={"PYTHONPATH": str(hooks)})
    proc.start(timeout=300)
    try:
        rows = {r["name"]: r for r in httpx.post(f"{proc.http_url}/v2/repository/index", timeout=10).json()}
        assert rows["mlp_torch_aoti"]["state"] == "UNAVAILABLE"
        assert "crashed with SIGSEGV" in rows["mlp_torch_aoti"]["reason"]
        assert rows["mlp_onnx"]["state"] == "READY"
        inputs = family_inputs("mlp", batch=2)
        got = _infer(th, th.InferenceServerClient(proc.http), "mlp_onnx", inputs)
        np.testing.assert_allclose(got["logits"], eager_outputs("mlp", inputs)["logits"], atol=TOLERANCE["onnx"])
        assert httpx.get(f"{proc.http_url}/v2/models/mlp_torch_aoti/ready").status_code == 503
    finally:
        proc.stop()
