"""End to end: ``tensorgate serve --model_config_file`` with TF Serving's own file format and flag spellings —
Keras SavedModels in base paths of their own (and an ONNX model on S3), labels over TF Serving REST and gRPC, V2
too, and rewrites of the file (a model added, a label moved, a broken file, a model removed) followed without a
restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import tritonclient.grpc as tg
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.model_store.s3server import S3Server
from tests.onnx_models import dense_model
from tests.serving import ServerProcess, metric_value, wait_until
from tests.tf_models import MLP_INPUT, MLP_OUTPUT, keras_mlp, random_pixels


def export(model_dir: Path, seed: int) -> Any:
    """A Keras MLP with weights from ``seed`` exported as a SavedModel into ``model_dir``; its serving function."""
    keras_mlp(seed=seed).export(str(model_dir), format="tf_saved_model", verbose=False)
    return tf.saved_model.load(str(model_dir)).signatures["serving_default"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """alpha (versions 1 and 2, other weights) and beta (version 1) in unrelated folders, as TF Serving has them."""
    root = tmp_path_factory.mktemp("tfs_models")
    alpha, beta = root / "team1" / "alpha", root / "shared" / "models" / "beta"
    return {
        "alpha": alpha,
        "beta": beta,
        "alpha1": export(alpha / "1", 0),
        "alpha2": export(alpha / "2", 1),
        "beta1": export(beta / "1", 2),
    }


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """An ONNX model at s3://<bucket>/zoo/remote/3 (base path, local copy of the model file)."""
    folder = tmp_path_factory.mktemp("remote")
    dense_model(folder / "model.onnx")
    s3.upload_version(folder, "remote", 3, prefix="zoo", marker="_COMPLETE")
    return s3.uri("zoo/remote"), folder / "model.onnx"


def write_config(path: Path, entries: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("model_config_list {\n" + "".join(f"  config {{ {e} }}\n" for e in entries) + "}\n")
    tmp.replace(path)  # atomic, as config management tools write it


def alpha(base_path: str, stable: int) -> str:
    """Model m: alpha's versions 1 and 2 with ``stable`` on the given version and ``canary`` on 2."""
    return (
        f"name: 'm' base_path: '{base_path}' model_platform: 'tensorflow' "
        "model_version_policy { specific { versions: 1 versions: 2 } } "
        f"version_labels {{ key: 'stable' value: {stable} }} version_labels {{ key: 'canary' value: 2 }}"
    )


@pytest.fixture(scope="module")
def setup(
    models: dict[str, Any], remote: tuple[str, Path], s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("tfs_config")
    config = folder / "models.config"
    paths = {"alpha": str(models["alpha"]), "beta": str(models["beta"]), "remote": remote[0]}
    write_config(
        config, [alpha(paths["alpha"], 1), f"name: 'remote' base_path: '{paths['remote']}' model_platform: 'onnx'"]
    )
    args = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=0.5",
        "--cache-dir", str(folder / "cache"),
    ]  # fmt: skip
    server = ServerProcess(folder / "unused", folder, args, env=s3.env).start(timeout=180)
    yield server, config, paths
    server.stop()


def rest_predict(server: ServerProcess, path: str, x: np.ndarray) -> np.ndarray:
    resp = server.client.post(f"/v1/models/{path}:predict", json={"instances": x.tolist()})
    assert resp.status_code == 200, resp.text
    return np.asarray(resp.json()["predictions"], np.float32)


def available(server: ServerProcess, name: str) -> bool:
    """Whether TF Serving's model status lists a version of ``name`` as AVAILABLE."""
    resp = httpx.get(f"{server.http_url}/v1/models/{name}", timeout=5)
    return resp.status_code == 200 and any(s["state"] == "AVAILABLE" for s in resp.json()["model_version_status"])


def expected(fn: Any, x: np.ndarray) -> np.ndarray:
    return fn(**{MLP_INPUT: tf.constant(x)})[MLP_OUTPUT].numpy()  # type: ignore[no-any-return]


def grpc_predict(server: ServerProcess, label: str, x: np.ndarray) -> tuple[int, np.ndarray]:
    with grpc.insecure_channel(server.grpc) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.model_spec.version_label = label
        request.inputs[MLP_INPUT].CopyFrom(tf.make_tensor_proto(x))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs[MLP_OUTPUT])


def test_labels_over_tf_serving_rest_and_grpc_and_v2(setup: tuple, models: dict[str, Any]) -> None:
    server, _config, _paths = setup
    x = random_pixels(3)
    np.testing.assert_allclose(rest_predict(server, "m/labels/stable", x), expected(models["alpha1"], x), rtol=1e-5)
    np.testing.assert_allclose(rest_predict(server, "m/labels/canary", x), expected(models["alpha2"], x), rtol=1e-5)
    version, got = grpc_predict(server, "canary", x)
    assert version == 2
    np.testing.assert_allclose(got, expected(models["alpha2"], x), rtol=1e-6)
    client = tg.InferenceServerClient(server.grpc)
    inp = tg.InferInput(MLP_INPUT, [3, 16], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("m", [inp], model_version="1")
    np.testing.assert_allclose(result.as_numpy(MLP_OUTPUT), expected(models["alpha1"], x), rtol=1e-6)
    assert client.get_model_metadata("m").platform == "tensorflow_savedmodel"


def test_s3_base_path(setup: tuple, remote: tuple[str, Path]) -> None:
    server, _config, _paths = setup
    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    resp = server.client.post("/v1/models/remote/versions/3:predict", json={"instances": x.tolist()})
    assert resp.status_code == 200, resp.text
    want = ort.InferenceSession(str(remote[1])).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.asarray(resp.json()["predictions"], np.float32), want, rtol=1e-6)


def test_rewrites_are_followed_without_restart(setup: tuple, models: dict[str, Any]) -> None:
    server, config, paths = setup
    x = random_pixels(2, seed=5)
    remote = f"name: 'remote' base_path: '{paths['remote']}'"
    loads = {
        v: metric_value(server, "tensorgate_model_load_duration_seconds_count", model="m", version=v) for v in (1, 2)
    }
    assert loads == {1: 1.0, 2: 1.0}

    # a model added and a label moved
    write_config(config, [alpha(paths["alpha"], 2), f"name: 'n' base_path: '{paths['beta']}'", remote])
    wait_until(lambda: available(server, "n"), "n AVAILABLE", server=server)
    np.testing.assert_allclose(rest_predict(server, "n", x), expected(models["beta1"], x), rtol=1e-5)
    wait_until(
        lambda: np.allclose(rest_predict(server, "m/labels/stable", x), expected(models["alpha2"], x), rtol=1e-5),
        "stable moved to version 2",
        server=server,
    )
    assert grpc_predict(server, "stable", x)[0] == 2
    # a label move is a routing change: the versions already loaded were not loaded again
    assert {
        v: metric_value(server, "tensorgate_model_load_duration_seconds_count", model="m", version=v) for v in (1, 2)
    } == loads

    # a broken rewrite: logged, the last good file stays in force
    config.write_text("model_config_list { config { name: 'm' base_path: ")
    wait_until(lambda: "keeping the last good one" in server.log(), "the broken file to be refused", server=server)
    assert rest_predict(server, "n", x).shape == (2, 4)
    assert grpc_predict(server, "stable", x)[0] == 2

    # a model removed
    write_config(config, [alpha(paths["alpha"], 1), remote])
    wait_until(lambda: server.client.get("/v1/models/n").status_code == 404, "n unloaded", server=server)
    wait_until(lambda: grpc_predict(server, "stable", x)[0] == 1, "stable back on version 1", server=server)
    np.testing.assert_allclose(rest_predict(server, "m/labels/stable", x), expected(models["alpha1"], x), rtol=1e-5)


def test_invalid_file_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'm' base_path: '/x/m' model_platform: 'tensorrt' } }")
    server = ServerProcess(tmp_path, tmp_path, [f"--model_config_file={config}"])
    with pytest.raises(RuntimeError, match="model_platform 'tensorrt' is not served"):
        server.start(timeout=60)
    assert server.stop() != 0


def test_one_model_mode_with_tf_serving_flags(models: dict[str, Any], tmp_path: Path) -> None:
    """``--model_name``/``--model_base_path``/``--port``/``--rest_api_port`` as TF Serving's command line has them."""
    args = ["--model_name=beta", f"--model_base_path={models['beta']}", "--port=0", "--rest_api_port=0"]
    server = ServerProcess(tmp_path / "unused", tmp_path, args).start(timeout=120)
    try:
        x = random_pixels(2, seed=9)
        np.testing.assert_allclose(rest_predict(server, "beta", x), expected(models["beta1"], x), rtol=1e-5)
        assert server.client.get("/v1/models/default").status_code == 404
    finally:
        server.stop()


def test_workers_follow_the_file_together(tmp_path: Path) -> None:
    """With --workers 2 the supervisor re-reads the file; each worker serves a model added to it."""
    dense_model(tmp_path / "a" / "1" / "model.onnx", seed=0)
    dense_model(tmp_path / "b" / "4" / "model.onnx", seed=1)
    path = tmp_path / "models.config"
    write_config(path, [f"name: 'a' base_path: '{tmp_path / 'a'}'"])
    args = [
        "--workers", "2", "--model_config_file", str(path), "--model_config_file_poll_wait_seconds", "0.3",
    ]  # fmt: skip
    server = ServerProcess(tmp_path / "unused", tmp_path, args).start()
    x = np.ones((1, 16), np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": x.ravel().tolist()}]}

    def answers(name: str) -> list[int]:
        codes = []
        for _ in range(16):  # a new connection each: the workers share the port
            codes.append(httpx.post(f"{server.http_url}/v2/models/{name}/infer", json=body, timeout=30).status_code)
        return codes

    try:
        assert set(answers("a")) == {200}
        write_config(path, [f"name: 'a' base_path: '{tmp_path / 'a'}'", f"name: 'b' base_path: '{tmp_path / 'b'}'"])
        wait_until(lambda: set(answers("b")) == {200}, "b served by every worker", server=server)
        per_worker = httpx.get(f"{server.http_url}/metrics").text
        assert per_worker.count('tensorgate_worker_requests_total{worker="') >= 2, per_worker
    finally:
        server.stop()
