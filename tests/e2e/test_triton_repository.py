"""A Triton model repository served as it is: config.pbtxt files written in Triton's format (ONNX and TensorFlow
SavedModel platforms, max_batch_size with dynamic batching, instance groups, version policies, warm-up samples,
default_model_filename), driven with tritonclient's HTTP and gRPC clients: outputs against numpy and the source
models, the model config round-trip, Triton's error texts, and clear load errors for what cannot be served."""

from __future__ import annotations

import asyncio
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tga
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.onnx_models import dense_model, fixed_model, simple_model, simple_string_model
from tests.serving import ServerProcess, index_row, repository_index, wait_until

SIMPLE = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { all {} }
default_model_filename: "simple_net.onnx"
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

SIMPLE_STRING = """
name: "simple_string"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_STRING dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_STRING dims: [ 16 ] }
]
"""

# the same model warmed up with real numbers from files in warmup/ (Triton's input_data_file format)
STRING_WARM = """
backend: "onnxruntime"
max_batch_size: 8
model_warmup [
  {
    name: "numbers"
    batch_size: 2
    count: 2
    inputs { key: "INPUT0" value: { data_type: TYPE_STRING dims: [ 16 ] input_data_file: "numbers" } }
    inputs { key: "INPUT1" value: { data_type: TYPE_STRING dims: [ 16 ] input_data_file: "numbers" } }
  }
]
"""

# a declared sample that the model refuses fails the load, as in Triton (Triton's zero strings are empty)
STRING_BAD_WARMUP = """
platform: "onnxruntime_onnx"
max_batch_size: 8
model_warmup [
  {
    name: "empty strings"
    batch_size: 1
    inputs { key: "INPUT0" value: { data_type: TYPE_STRING dims: [ 16 ] zero_data: true } }
    inputs { key: "INPUT1" value: { data_type: TYPE_STRING dims: [ 16 ] zero_data: true } }
  }
]
"""

TF_MLP = """
platform: "tensorflow_savedmodel"
max_batch_size: 4
version_policy: { latest { num_versions: 1 } }
input [ { name: "pixels" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "output_0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

# a torch.export archive under Triton's PyTorch platform, with Triton's INPUT__0 / OUTPUT__n names (a rename)
TORCH_PAIR = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 1 ] }
]
"""

DENSE_SPECIFIC = """
platform: "onnxruntime_onnx"
max_batch_size: 0
version_policy: { specific { versions: [ 1, 3 ] } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 16 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
"""

BROKEN_CONFIGS = {
    "ensemble": 'platform: "ensemble"\nmax_batch_size: 8\n',
    "stateful": 'platform: "onnxruntime_onnx"\nsequence_batching { max_sequence_idle_microseconds: 5000 }\n',
    "malformed": 'name: "malformed"\nmax_batch_size: 8\ninput [ { name: "INPUT0" data_type: TYPE_INT32 dims [ 16 ] } ]\n',
    "unbatched": 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n',
    "torchscript": 'backend: "pytorch"\ndefault_model_filename: "model.pt"\n',
    "mismatch": 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\ninput [ { name: "INPUT0" data_type: TYPE_INT32 '
    "dims: [ 8 ] } ]\n",
}


def _strings_file(rows: np.ndarray) -> bytes:
    """Triton's warm-up file for strings: each element as a 4-byte little-endian length and its bytes."""
    return b"".join(struct.pack("<I", len(s)) + s for s in rows.reshape(-1))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton_repository")
    for version in (1, 2):
        simple_model(root / "simple" / str(version) / "simple_net.onnx")
    (root / "simple" / "config.pbtxt").write_text(SIMPLE)
    for name, config in (
        ("simple_string", SIMPLE_STRING),
        ("string_warm", STRING_WARM),
        ("string_bad_warmup", STRING_BAD_WARMUP),
    ):
        simple_string_model(root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(config)
    numbers = np.array([str(i).encode() for i in range(32)], dtype=object)
    (root / "string_warm" / "warmup").mkdir()
    (root / "string_warm" / "warmup" / "numbers").write_bytes(_strings_file(numbers))
    for version in (1, 2, 3):
        dense_model(root / "dense_specific" / str(version) / "model.onnx", seed=version)
    (root / "dense_specific" / "config.pbtxt").write_text(DENSE_SPECIFIC)
    for name, config in BROKEN_CONFIGS.items():
        (fixed_model if name == "unbatched" else simple_model)(root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(config)
    from tests import tf_models

    keras_model = tf_models.keras_mlp()
    for version in (1, 2):
        keras_model.export(
            str(root / "tf_mlp" / str(version) / "model.savedmodel"), format="tf_saved_model", verbose=False
        )
    (root / "tf_mlp" / "config.pbtxt").write_text(TF_MLP)
    _torch_models(root)
    np.save(root / "tf_mlp_expected.npy", keras_model.predict(tf_models.random_pixels(3), verbose=0))
    return root


def _torch_models(root: Path) -> None:
    import torch

    from tests.torch_models import Pair

    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(Pair(), (torch.ones(2, 4),), dynamic_shapes=({0: batch},))
    (root / "torch_pair" / "1").mkdir(parents=True)
    torch.export.save(program, root / "torch_pair" / "1" / "model.pt2")
    (root / "torch_pair" / "config.pbtxt").write_text(TORCH_PAIR)
    with warnings.catch_warnings():  # torch.jit is deprecated: exactly why such a file is refused
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Pair()).save(str(root / "torchscript" / "1" / "model.pt"))


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        repository, tmp_path_factory.mktemp("triton_server"), ["--poll-interval", "0", "--no-strict-readiness"]
    ).start(timeout=240)
    wait_until(
        lambda: all(r["state"] in ("READY", "UNAVAILABLE") for r in repository_index(proc)) and repository_index(proc),
        "every model loaded or failed",
        server=proc,
    )
    yield proc
    proc.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, triton: ServerProcess) -> Iterator[Any]:
    if request.param == "http":
        http = th.InferenceServerClient(triton.http)
        yield http
        http.close()
    else:
        grpc = tg.InferenceServerClient(triton.grpc)
        yield grpc
        grpc.close()


def _module(client: Any) -> Any:
    return th if isinstance(client, th.InferenceServerClient) else tg


def _inputs(client: Any, arrays: dict[str, np.ndarray], datatype: str) -> list[Any]:
    mod = _module(client)
    out = []
    for name, array in arrays.items():
        tensor = mod.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _config(client: Any, model: str) -> dict[str, Any]:
    if isinstance(client, th.InferenceServerClient):
        config: dict[str, Any] = client.get_model_config(model)
        return config
    return dict(client.get_model_config(model, as_json=True)["config"])


def test_simple_answers_like_numpy(client: Any) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-1000, 1000, (3, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (3, 16), dtype=np.int32)
    for version in ("1", "2", ""):
        result = client.infer("simple", _inputs(client, {"INPUT0": a, "INPUT1": b}, "INT32"), model_version=version)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    too_many = np.zeros((9, 16), np.int32)  # beyond max_batch_size
    with pytest.raises(InferenceServerException, match="batch size 9 exceeds max_batch_size 8"):
        client.infer("simple", _inputs(client, {"INPUT0": too_many, "INPUT1": too_many}, "INT32"))


def test_model_config_round_trips(client: Any) -> None:
    config = _config(client, "simple")
    assert config["name"] == "simple"
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert int(config["max_batch_size"]) == 8
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["output"]] == [
        ("OUTPUT0", "TYPE_INT32", [16]),
        ("OUTPUT1", "TYPE_INT32", [16]),
    ]
    batching = config["dynamic_batching"]
    assert [int(p) for p in batching["preferred_batch_size"]] == [4, 8]
    assert int(batching["max_queue_delay_microseconds"]) == 100000
    assert [(g["kind"], int(g["count"])) for g in config["instance_group"]] == [("KIND_CPU", 1)]
    assert "all" in config["version_policy"]
    assert config["default_model_filename"] == "simple_net.onnx"

    tf = _config(client, "tf_mlp")
    assert tf["platform"] == "tensorflow_savedmodel" and int(tf["max_batch_size"]) == 4
    assert [int(d) for d in tf["input"][0]["dims"]] == [16]
    assert int(tf["instance_group"][0]["count"]) == 2
    assert int(tf["version_policy"]["latest"]["num_versions"]) == 1
    assert tf["default_model_filename"] == "model.savedmodel"

    specific = _config(client, "dense_specific")
    assert int(specific.get("max_batch_size", 0)) == 0
    assert [int(d) for d in specific["input"][0]["dims"]] == [2, 16]  # the declared dims are in force
    assert [int(v) for v in specific["version_policy"]["specific"]["versions"]] == [1, 3]

    warm = _config(client, "string_warm")
    [sample] = warm["model_warmup"]
    assert sample["name"] == "numbers" and int(sample["batch_size"]) == 2 and int(sample["count"]) == 2
    assert sample["inputs"]["INPUT0"]["input_data_file"] == "numbers"


def test_dynamic_batching_forms_batches(triton: ServerProcess) -> None:
    """Concurrent single-row requests run as fewer, larger executions (Triton's statistics say so)."""

    async def burst(n: int) -> None:
        async with tga.InferenceServerClient(triton.grpc) as aio:
            calls = []
            for i in range(n):
                a = np.full((1, 16), i, np.int32)
                inputs = [tga.InferInput("INPUT0", [1, 16], "INT32"), tga.InferInput("INPUT1", [1, 16], "INT32")]
                inputs[0].set_data_from_numpy(a)
                inputs[1].set_data_from_numpy(a)
                calls.append(aio.infer("simple", inputs, model_version="1"))
            results = await asyncio.gather(*calls)
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2 * i, np.int32))

    http = th.InferenceServerClient(triton.http)

    def batched() -> bool:
        asyncio.run(burst(16))
        [stats] = http.get_inference_statistics("simple", "1")["model_stats"]
        return int(stats["execution_count"]) < int(stats["inference_count"])

    wait_until(batched, "several requests run as one execution", server=triton)
    [stats] = http.get_inference_statistics("simple", "1")["model_stats"]
    assert any(int(b["batch_size"]) > 1 for b in stats["batch_stats"])
    http.close()


def test_string_model_serves_though_its_synthetic_warmup_fails(client: Any, triton: ServerProcess) -> None:
    a = np.array([[str(i).encode() for i in range(16)]] * 2, dtype=object)
    b = np.array([[str(3 * i - 7).encode() for i in range(16)]] * 2, dtype=object)
    for model in ("simple_string", "string_warm"):
        result = client.infer(model, _inputs(client, {"INPUT0": a, "INPUT1": b}, "BYTES"))
        ints_a, ints_b = a.astype(np.int64), b.astype(np.int64)
        assert result.as_numpy("OUTPUT0").astype(np.int64).tolist() == (ints_a + ints_b).tolist()
        assert result.as_numpy("OUTPUT1").astype(np.int64).tolist() == (ints_a - ints_b).tolist()
    log = triton.log_path.read_text(errors="replace")
    assert "simple_string v1: synthetic warm-up failed, serving anyway" in log
    assert "string_warm v1: 1 warm-up samples ran" in log
    assert "string_warm v1: synthetic warm-up failed" not in log


def test_declared_warmup_that_fails_fails_the_load(triton: ServerProcess) -> None:
    row = index_row(triton, "string_bad_warmup", 1)
    assert row is not None and row["state"] == "UNAVAILABLE"
    assert "warm-up sample 'empty strings' failed for string_bad_warmup v1" in row["reason"]


def test_version_policies(triton: ServerProcess, client: Any) -> None:
    states = {(r["name"], r["version"]): r["state"] for r in repository_index(triton)}
    assert states[("simple", "1")] == states[("simple", "2")] == "READY"  # all
    assert states[("dense_specific", "1")] == states[("dense_specific", "3")] == "READY"  # specific [1, 3]
    assert ("dense_specific", "2") not in states
    assert states[("tf_mlp", "2")] == "READY" and ("tf_mlp", "1") not in states  # latest 1
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    for version in (1, 3):
        w, bias = __import__("tests.onnx_models", fromlist=["dense_weights"]).dense_weights(seed=version)
        result = client.infer("dense_specific", _inputs(client, {"x": x}, "FP32"), model_version=str(version))
        np.testing.assert_allclose(result.as_numpy("y"), x @ w + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(InferenceServerException, match="input 'x' has shape \\[3, 16\\], expected \\[2, 16\\]"):
        client.infer("dense_specific", _inputs(client, {"x": np.zeros((3, 16), np.float32)}, "FP32"))


def test_tf_savedmodel_in_tritons_layout(client: Any, repository: Path) -> None:
    from tests import tf_models

    pixels = tf_models.random_pixels(3)
    result = client.infer("tf_mlp", _inputs(client, {"pixels": pixels}, "FP32"))
    np.testing.assert_allclose(
        result.as_numpy("output_0"), np.load(repository / "tf_mlp_expected.npy"), rtol=1e-4, atol=1e-5
    )


def test_torch_export_archive_with_tritons_tensor_names(client: Any) -> None:
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    result = client.infer("torch_pair", _inputs(client, {"INPUT__0": x}, "FP32"))
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), x * 2, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT__1"), x.sum(1, keepdims=True), rtol=1e-5)
    config = _config(client, "torch_pair")
    assert config["backend"] == "pytorch" and int(config["max_batch_size"]) == 8
    assert [t["name"] for t in config["output"]] == ["OUTPUT__0", "OUTPUT__1"]


def test_tritons_error_texts(client: Any) -> None:
    x = np.zeros((1, 16), np.int32)
    inputs = _inputs(client, {"INPUT0": x, "INPUT1": x}, "INT32")
    cases = [
        ("nope", "", "Request for unknown model: 'nope' is not found"),
        ("simple", "7", "Request for unknown model: 'simple' version 7 is not found"),
        ("string_bad_warmup", "", "Request for unknown model: 'string_bad_warmup' has no available versions"),
        ("string_bad_warmup", "1", "Request for unknown model: 'string_bad_warmup' version 1 is not at ready state"),
    ]
    for model, version, text in cases:
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs, model_version=version)
        assert info.value.message().startswith(text), info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata(model, model_version=version)
        assert info.value.message().startswith(text), info.value.message()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("ensemble", "ensemble/config.pbtxt: platform 'ensemble': ensembles (platform ensemble) are not served"),
        ("stateful", "stateful/config.pbtxt: field sequence_batching: sequence batching"),
        ("malformed", "malformed/config.pbtxt:3:"),
        ("unbatched", "max_batch_size 4 needs a variable-size leading (batch) dim on every input and output"),
        ("torchscript", "is TorchScript (torch.jit.save), which is not served"),
        ("mismatch", "input 'INPUT0' dim 1 is declared 8 but the model fixes it at 16"),
    ],
)
def test_what_cannot_be_served_says_why_in_the_index(triton: ServerProcess, model: str, words: str) -> None:
    rows = [r for r in repository_index(triton) if r["name"] == model]
    assert rows and all(r["state"] == "UNAVAILABLE" for r in rows), rows
    assert any(words in r["reason"] for r in rows), rows
    assert words in triton.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def explicit(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model-control", "explicit", "--server-name", "triton"]
    proc = ServerProcess(repository, tmp_path_factory.mktemp("triton_explicit"), args).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_with_a_config_replaces_the_repositorys_until_a_plain_load(explicit: ServerProcess, protocol: str) -> None:
    """Triton's model control: ``load_model(name, config=json)`` serves with that config; a load without one goes
    back to config.pbtxt; an invalid config and an unknown model fail with "failed to load"."""
    client: Any = (
        th.InferenceServerClient(explicit.http) if protocol == "http" else tg.InferenceServerClient(explicit.grpc)
    )
    metadata = client.get_server_metadata()
    assert (metadata["name"] if protocol == "http" else metadata.name) == "triton"
    assert not client.is_model_ready("simple") and not client.is_model_ready("nope")  # unknown: not ready, no error
    client.load_model("simple")
    assert int(_config(client, "simple")["max_batch_size"]) == 8
    with pytest.raises(InferenceServerException, match="failed to load 'simple': v2: reload failed"):
        client.load_model("simple", config='{"max_batch_size": 16}')  # a complete config: model.onnx is not there
    client.load_model(
        "simple",
        config='{"max_batch_size": 16, "version_policy": {"specific": {"versions": [2]}}, '
        '"default_model_filename": "simple_net.onnx"}',
    )
    config = _config(client, "simple")
    assert int(config["max_batch_size"]) == 16 and "dynamic_batching" not in config
    x = np.arange(16 * 12, dtype=np.int32).reshape(12, 16)  # more rows than config.pbtxt's max_batch_size
    result = client.infer("simple", _inputs(client, {"INPUT0": x, "INPUT1": x}, "INT32"), model_version="2")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * x)
    assert not client.is_model_ready("simple", "1")
    for bad in ('"parameters": {"config": {{"max_batch_size": "16"}}}', '{"platform": "ensemble"}'):
        with pytest.raises(InferenceServerException, match="failed to load 'simple'"):
            client.load_model("simple", config=bad)
    assert int(_config(client, "simple")["max_batch_size"]) == 16  # a refused config changes nothing
    client.load_model("simple")
    assert int(_config(client, "simple")["max_batch_size"]) == 8
    client.unload_model("simple")
    assert not client.is_model_ready("simple")
    with pytest.raises(InferenceServerException, match="failed to load 'wrong_model_name'"):
        client.load_model("wrong_model_name")
    client.close()
