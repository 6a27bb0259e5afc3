"""TorchAOTIRuntime on real AOTInductor packages (compiled once per session): outputs vs eager, the signature
sidecar, input checks before the compiled code runs, device and sidecar errors, concurrent calls."""

from __future__ import annotations

import ctypes
import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from runtimes import RuntimeInputError, RuntimeLoadError, detect_format, runtime_class
from runtimes.torch_aoti import TorchAOTIRuntime
from tests.torch_models import FAMILIES, MAX_BATCH, eager_outputs, family_inputs, shared_torch_store

# AOTInductor fuses and vectorises float arithmetic differently from eager kernels.
ATOL = 1e-5


@pytest.fixture(scope="session")
def torch_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_torch_store(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def loaded(torch_store: Path) -> Iterator[dict[str, TorchAOTIRuntime]]:
    runtimes = {}
    for family in FAMILIES:
        runtime = TorchAOTIRuntime()
        runtime.load(torch_store / f"{family}_torch_aoti" / "1", {"num_runners": 2})
        runtimes[family] = runtime
    yield runtimes
    for runtime in runtimes.values():
        runtime.unload()


def test_store_artefact_is_detected_as_torch_aoti(torch_store: Path) -> None:
    assert detect_format(torch_store / "cnn_torch_aoti" / "1") == "torch_aoti"
    assert runtime_class("torch_aoti") is TorchAOTIRuntime


def test_signature_comes_from_the_sidecar(torch_store: Path, loaded: dict[str, TorchAOTIRuntime]) -> None:
    sidecar = json.loads((torch_store / "multi_torch_aoti" / "1" / "signature.json").read_text())
    assert sidecar["device"] == "cpu"
    assert sidecar["torch"] == torch.__version__
    assert sidecar["ranges"] == {"batch": {"min": 1, "max": MAX_BATCH}}
    # the embedding's table size, found in the exported graph: indices beyond it would abort the compiled model
    assert sidecar["inputs"][1] == {
        "name": "ids",
        "datatype": "INT64",
        "dims": ["batch", 4],
        "values": {"min": 0, "max": 19},
    }
    sig = loaded["multi"].signature()
    assert [(s.name, s.datatype, s.shape, s.values) for s in sig.inputs] == [
        ("x", "FP32", (-1, 8), None),
        ("ids", "INT64", (-1, 4), (0, 20)),
    ]
    assert [s.name for s in sig.outputs] == ["score", "pooled"]
    assert loaded["cnn"].signature().inputs[0].shape == (-1, 3, 64, 64)
    assert loaded["cnn"].device == "cpu"
    assert TorchAOTIRuntime.platform == "torch_aoti"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch", [1, 3, MAX_BATCH])
def test_outputs_match_eager(loaded: dict[str, TorchAOTIRuntime], family: str, batch: int) -> None:
    inputs = family_inputs(family, batch)
    got = loaded[family].infer(inputs)
    want = eager_outputs(family, inputs)
    assert set(got) == set(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL, err_msg=f"{family} {name}")


def test_batch_beyond_the_exported_range_is_refused_before_the_compiled_code_runs(
    loaded: dict[str, TorchAOTIRuntime],
) -> None:
    # The compiled package itself would run batch MAX_BATCH + 1; the sidecar's range stops it first.
    inputs = family_inputs("multi", MAX_BATCH + 1)
    with pytest.raises(
        RuntimeInputError, match=rf"input 'x' dim 0 \(batch\) is {MAX_BATCH + 1}, outside .*\[1, {MAX_BATCH}\]"
    ):
        loaded["multi"].infer(inputs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: {**i, "ids": i["ids"].astype(np.int32)}, r"input 'ids' has numpy dtype int32, expected INT64"),
        (lambda i: {**i, "x": i["x"][:, :7]}, r"input 'x' has shape \[2, 7\]: dim 1 is 7, expected 8"),
        (lambda i: {**i, "ids": i["ids"][None]}, r"input 'ids' has shape \[1, 2, 4\] \(rank 3\), expected rank 2"),
        (lambda i: {"x": i["x"]}, r"missing input 'ids'"),
    ],
)
def test_bad_inputs_raise_runtime_input_error(
    loaded: dict[str, TorchAOTIRuntime], change: object, message: str
) -> None:
    inputs = change(family_inputs("multi", 2))  # type: ignore[operator]
    with pytest.raises(RuntimeInputError, match=message):
        loaded["multi"].infer(inputs)


def test_concurrent_calls_beyond_the_runners_give_each_caller_its_own_result(
    loaded: dict[str, TorchAOTIRuntime],
) -> None:
    # More callers than the package's 2 runners: the extra ones must wait without holding the GIL (a caller
    # blocked inside the container with it deadlocked the process before the runtime bounded the calls).
    batches = [family_inputs("multi", 1 + k % 4, seed=k) for k in range(60)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda inputs: loaded["multi"].infer(inputs), batches))
    for inputs, got in zip(batches, results, strict=True):
        for name, expected in eager_outputs("multi", inputs).items():
            np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL)


@pytest.fixture
def one_thread() -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield 1
    torch.set_num_threads(before)


def test_worker_threads_run_compiled_loops_with_torchs_thread_count(
    loaded: dict[str, TorchAOTIRuntime], one_thread: int
) -> None:
    # OpenMP team sizes are per OS thread; a fresh worker starts at the machine's core count otherwise.
    (library,) = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*"))[:1]
    gomp = ctypes.CDLL(str(library))
    seen: list[int] = []

    def call() -> None:
        loaded["cnn"].infer(family_inputs("cnn", 2))
        seen.append(gomp.omp_get_max_threads())

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    assert seen == [one_thread]


def test_mismatched_sidecar_fails_the_load(torch_store: Path, tmp_path: Path) -> None:
    shutil.copy(torch_store / "mlp_torch_aoti" / "1" / "model.pt2", tmp_path)
    bare = TorchAOTIRuntime()  # without the sidecar: what the package records (tests/runtimes/test_pt2_package.py)
    bare.load(tmp_path, {})
    assert [(s.name, s.shape) for s in bare.signature().inputs] == [("input_0", (-1, 784))]
    sidecar = json.loads((torch_store / "multi_torch_aoti" / "1" / "signature.json").read_text())
    (tmp_path / "signature.json").write_text(json.dumps(sidecar))  # two inputs, but the MLP package takes one
    with pytest.raises(RuntimeLoadError, match=r"lists 2 inputs / 2 outputs but the package takes 1 / returns 1"):
        TorchAOTIRuntime().load(tmp_path, {})
    (tmp_path / "signature.json").write_text("{}")
    with pytest.raises(RuntimeLoadError, match="not a readable signature sidecar"):
        TorchAOTIRuntime().load(tmp_path, {})


def test_cuda_device_needs_cuda_and_a_cuda_package(torch_store: Path) -> None:
    folder = torch_store / "mlp_torch_aoti" / "1"
    # Without CUDA the load says so; with CUDA it says the package was compiled for the CPU.
    expected = "compiled for 'cpu'" if torch.cuda.is_available() else "CUDA is not available"
    with pytest.raises(RuntimeLoadError, match=expected):
        TorchAOTIRuntime().load(folder, {"device": "cuda"})
    with pytest.raises(RuntimeLoadError, match="expected cpu, cuda or cuda:<n>"):
        TorchAOTIRuntime().load(folder, {"device": "tpu"})
    with pytest.raises(RuntimeLoadError, match="num_runners must be a positive integer"):
        TorchAOTIRuntime().load(folder, {"num_runners": 0})


def test_probe_loads_and_runs_the_package_in_a_child_first(torch_store: Path) -> None:
    runtime = TorchAOTIRuntime()
    runtime.load(torch_store / "multi_torch_aoti" / "1", {"probe": True})
    inputs = family_inputs("multi", 2)
    np.testing.assert_allclose(runtime.infer(inputs)["score"], eager_outputs("multi", inputs)["score"], atol=ATOL)
    with pytest.raises(RuntimeLoadError, match="option probe must be auto, true or false"):
        TorchAOTIRuntime().load(torch_store / "mlp_torch_aoti" / "1", {"probe": "sometimes"})


def test_a_crash_in_the_probe_is_a_load_error_not_a_dead_server(
    torch_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real native crash in the child: every Python started with this path segfaults on start-up.
    (tmp_path / "sitecustomize.py").write_text("import ctypes\nctypes.string_at(0)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeLoadError, match="probe process crashed with SIGSEGV; it was not loaded"):
        TorchAOTIRuntime().load(torch_store / "mlp_torch_aoti" / "1", {"probe": True})
    # A package that loads here but fails in the child reports the child's last line.
    monkeypatch.delenv("PYTHONPATH")
    broken = tmp_path / "broken"
    shutil.copytree(torch_store / "mlp_torch_aoti" / "1", broken)
    (broken / "model.pt2").write_bytes(b"not a zip")
    with pytest.raises(RuntimeLoadError, match=r"probe process failed: .*failed to load"):
        TorchAOTIRuntime().load(broken, {"probe": True})
