"""PyTorch on CUDA, end to end: ``tensorgate export --device cuda``, TorchAOTIRuntime and TorchExportRuntime on the
GPU, and a server answering REST and gRPC from them, against eager PyTorch on the CPU.

Marked ``cuda``: the default suite deselects these; ``make test-cuda`` runs them on a machine with an NVIDIA GPU.
Without CUDA they fail with that reason, they never skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import yaml

from gateway.cli.demo import CNN, MLP
from gateway.cli.export import export_torch
from runtimes import RuntimeInputError, RuntimeLoadError
from runtimes.torch_aoti import TorchAOTIRuntime
from runtimes.torch_export import TorchExportRuntime
from tests.serving import ServerProcess
from tests.torch_models import FAMILIES, MAX_BATCH, MULTI_INPUTS, eager_outputs, family_inputs

pytestmark = pytest.mark.cuda

# GPU kernels (cuBLAS, cuDNN, Triton) sum in other orders than the CPU's eager kernels.
ATOL, RTOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def cuda_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not torch.cuda.is_available():
        pytest.fail(
            f"CUDA is not available to torch {torch.__version__} (built for CUDA {torch.version.cuda}): "
            "the cuda tests need a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    root = tmp_path_factory.mktemp("cuda_store")
    # The MLP through the command line, as a user would; the others through the Python API.
    command = [
        sys.executable, "-m", "gateway", "export", "--factory", MLP.factory, "--store", str(root), "--name", "mlp",
        "--formats", "torch_aoti", "--device", "cuda", "--max-batch", str(MAX_BATCH),
        *(arg for text in MLP.inputs for arg in ("--input", text)), *(arg for n in MLP.outputs for arg in ("--output", n)),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    export_torch(
        CNN.factory, root, "cnn", CNN.inputs, output_names=CNN.outputs, max_batch=MAX_BATCH,
        formats=["torch_aoti", "torch_export"], device="cuda",
    )  # fmt: skip
    export_torch(
        "tests.torch_models:two_heads", root, "multi", MULTI_INPUTS, max_batch=MAX_BATCH,
        formats=["torch_aoti", "torch_export"], device="cuda",
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def on_gpu(cuda_store: Path) -> Iterator[dict[str, TorchAOTIRuntime]]:
    runtimes = {}
    for family in FAMILIES:
        runtime = TorchAOTIRuntime()
        runtime.load(cuda_store / f"{family}_torch_aoti" / "1", {"device": "cuda", "num_runners": 2})
        runtimes[family] = runtime
    yield runtimes
    for runtime in runtimes.values():
        runtime.unload()


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_allclose(got[name], expected, atol=ATOL, rtol=RTOL, err_msg=name)


def test_export_writes_a_cuda_package_and_config(cuda_store: Path) -> None:
    for family in FAMILIES:
        model_dir = cuda_store / f"{family}_torch_aoti"
        sidecar = json.loads((model_dir / "1" / "signature.json").read_text())
        assert sidecar["device"] == "cuda"
        config = yaml.safe_load((model_dir / "config.yaml").read_text())
        assert config["runtime"] == "torch_aoti"
        assert config["options"]["device"] == "cuda"
        assert config["max_batch_size"] == MAX_BATCH


def test_runtime_on_the_gpu_matches_eager_on_the_cpu(on_gpu: dict[str, TorchAOTIRuntime]) -> None:
    for family, runtime in on_gpu.items():
        assert runtime.device == "cuda"
        for batch in (1, 3, MAX_BATCH):
            inputs = family_inputs(family, batch, seed=batch)
            got = runtime.infer(inputs)
            assert all(isinstance(v, np.ndarray) for v in got.values())
            assert_close(got, eager_outputs(family, inputs))


def test_output_subset_and_checks_before_the_gpu_runs(on_gpu: dict[str, TorchAOTIRuntime]) -> None:
    inputs = family_inputs("multi", 2)
    assert list(on_gpu["multi"].infer(inputs, outputs=["pooled"])) == ["pooled"]
    with pytest.raises(RuntimeInputError, match="batch"):
        on_gpu["mlp"].infer(family_inputs("mlp", MAX_BATCH + 1))
    with pytest.raises(RuntimeInputError, match="x"):
        on_gpu["mlp"].infer({"x": np.zeros((2, 783), np.float32)})


def test_a_cuda_package_is_refused_on_the_cpu(cuda_store: Path) -> None:
    with pytest.raises(RuntimeLoadError, match="compiled for 'cuda'"):
        TorchAOTIRuntime().load(cuda_store / "mlp_torch_aoti" / "1", {"device": "cpu"})


def test_concurrent_calls_on_the_gpu_each_get_their_own_result(on_gpu: dict[str, TorchAOTIRuntime]) -> None:
    cases = [family_inputs("cnn", 1 + k % 4, seed=100 + k) for k in range(48)]
    expected = [eager_outputs("cnn", inputs) for inputs in cases]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(on_gpu["cnn"].infer, cases))
    for got, want in zip(results, expected, strict=True):
        assert_close(got, want)


@pytest.fixture(scope="module")
def gpu_server(cuda_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(cuda_store, tmp_path_factory.mktemp("cuda_server"), ["--poll-interval", "0"]).start(300)
    yield proc
    proc.stop()


def _rest_infer(client: httpx.Client, url: str, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {"name": n, "datatype": "INT64" if a.dtype == np.int64 else "FP32", "shape": list(a.shape),
             "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ]
    }  # fmt: skip
    reply = client.post(f"{url}/v2/models/{model}/infer", json=body)
    assert reply.status_code == 200, reply.text
    return {
        out["name"]: np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]) for out in reply.json()["outputs"]
    }


def test_served_from_the_gpu_over_rest_and_grpc(gpu_server: ServerProcess) -> None:
    grpc = grpcclient.InferenceServerClient(gpu_server.grpc)
    with httpx.Client(timeout=30) as client:
        for family in FAMILIES:
            model = f"{family}_torch_aoti"
            meta = client.get(f"{gpu_server.http_url}/v2/models/{model}").json()
            assert meta["platform"] == "torch_aoti"
            inputs = family_inputs(family, 3, seed=11)
            want = eager_outputs(family, inputs)
            assert_close(_rest_infer(client, gpu_server.http_url, model, inputs), want)

            tensors = []
            for name, array in inputs.items():
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            result = grpc.infer(model, tensors)
            assert_close({name: result.as_numpy(name) for name in want}, want)

        too_big = family_inputs("mlp", MAX_BATCH + 1)
        reply = client.post(
            f"{gpu_server.http_url}/v2/models/mlp_torch_aoti/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [MAX_BATCH + 1, 784],
                              "data": too_big["x"].ravel().tolist()}]},
        )  # fmt: skip
        assert reply.status_code == 400 and "batch" in reply.text
        metrics = client.get(f"{gpu_server.http_url}/metrics").text
        assert 'runtime="torch_aoti"' in metrics
    grpc.close()


def test_served_under_concurrent_load(gpu_server: ServerProcess) -> None:
    cases = [family_inputs("cnn", 1, seed=500 + k) for k in range(64)]
    expected = [eager_outputs("cnn", inputs) for inputs in cases]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda x: _rest_infer(client, gpu_server.http_url, "cnn_torch_aoti", x), cases))
    for got, want in zip(results, expected, strict=True):
        assert_close(got, want)


def test_verify_checks_the_gpu_models_against_their_golden_samples(cuda_store: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "verify", "--store", str(cuda_store)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for family in FAMILIES:
        assert f"{family}_torch_aoti" in done.stdout


EXPORT_FAMILIES = ("cnn", "multi")  # exported with --formats torch_aoti,torch_export --device cuda


def test_torch_export_on_the_gpu_matches_eager_on_the_cpu(cuda_store: Path) -> None:
    for family in EXPORT_FAMILIES:
        model_dir = cuda_store / f"{family}_torch_export"
        config = yaml.safe_load((model_dir / "config.yaml").read_text())
        assert config["runtime"] == "torch_export" and config["options"]["device"] == "cuda"
        runtime = TorchExportRuntime()
        runtime.load(model_dir / "1", {"device": "cuda"})
        assert runtime.device == "cuda"
        for batch in (1, 3, MAX_BATCH):
            inputs = family_inputs(family, batch, seed=batch)
            got = runtime.infer(inputs)
            assert all(isinstance(v, np.ndarray) for v in got.values())
            assert_close(got, eager_outputs(family, inputs))
        with pytest.raises(RuntimeInputError, match="batch"):
            runtime.infer(family_inputs(family, MAX_BATCH + 1))
        runtime.unload()
    with pytest.raises(RuntimeLoadError, match="CUDA device"):
        TorchExportRuntime().load(
            cuda_store / "cnn_torch_export" / "1", {"device": f"cuda:{torch.cuda.device_count()}"}
        )


def test_torch_export_served_from_the_gpu_over_rest_and_grpc(gpu_server: ServerProcess) -> None:
    grpc = grpcclient.InferenceServerClient(gpu_server.grpc)
    with httpx.Client(timeout=30) as client:
        for family in EXPORT_FAMILIES:
            model = f"{family}_torch_export"
            inputs = family_inputs(family, 3, seed=21)
            want = eager_outputs(family, inputs)
            assert_close(_rest_infer(client, gpu_server.http_url, model, inputs), want)
            tensors = []
            for name, array in inputs.items():
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            result = grpc.infer(model, tensors)
            assert_close({name: result.as_numpy(name) for name in want}, want)
    grpc.close()
