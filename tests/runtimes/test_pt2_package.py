"""AOTInductor packages without tensorgate's sidecar (plain ``aoti_compile_and_package``): the signature from what
the package records, from config.yaml's inputs/outputs, and the error that says what to declare."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from runtimes import RuntimeInputError, RuntimeLoadError, detect_format
from runtimes.pt2_package import read_package
from runtimes.torch_aoti import TorchAOTIRuntime
from tests.torch_models import MAX_BATCH, eager_outputs, family_inputs, plain_aoti_package, without_wrapper_source

ATOL = 1e-4
DECLARED_INPUTS = [
    {"name": "x", "datatype": "FP32", "shape": [-1, 8]},
    {"name": "ids", "datatype": "INT64", "shape": [-1, 4]},
]


@pytest.fixture(scope="session")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plain_aoti_package(tmp_path_factory)


@pytest.fixture
def version(plain: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "1"
    folder.mkdir()
    shutil.copy(plain, folder / "model.pt2")
    return folder


@pytest.fixture
def stripped(plain: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "stripped"
    folder.mkdir()
    without_wrapper_source(plain, folder / "model.pt2")
    return folder


def _check_against_eager(runtime: TorchAOTIRuntime, names: tuple[str, str] = ("x", "ids")) -> None:
    for batch in (1, 3, MAX_BATCH):
        inputs = family_inputs("multi", batch, seed=batch)
        got = runtime.infer(dict(zip(names, inputs.values(), strict=True)))
        for name, want in eager_outputs("multi", inputs).items():
            np.testing.assert_allclose(got[name], want, rtol=0, atol=ATOL, err_msg=name)


def test_the_package_records_device_and_inputs(version: Path, stripped: Path) -> None:
    assert detect_format(version) == "torch_aoti"
    record = read_package(version / "model.pt2")
    assert record.device == "cpu"
    assert record.inputs is not None
    assert [(t.datatype, t.shape) for t in record.inputs] == [("FP32", (-1, 8)), ("INT64", (-1, 4))]
    # the compiled checks bound the dynamic batch; their lower bound of 2 is inductor's, batch 1 runs
    assert record.ranges == {"batch": (1, MAX_BATCH)}  # one dim: the compiled code reads it from x only
    assert [t.dims[0] for t in record.inputs] == ["batch", "batch"]
    assert read_package(stripped / "model.pt2").inputs is None


def test_signature_from_the_package_alone(version: Path) -> None:
    runtime = TorchAOTIRuntime()
    runtime.load(version, {})
    sig = runtime.signature()
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [
        ("input_0", "FP32", (-1, 8)),
        ("input_1", "INT64", (-1, 4)),
    ]
    # dict keys from the output spec; dtypes and the batch dim observed by running it
    assert [(s.name, s.datatype, s.shape) for s in sig.outputs] == [
        ("score", "FP32", (-1, 6)),
        ("pooled", "FP32", (-1, 6)),
    ]
    _check_against_eager(runtime, ("input_0", "input_1"))
    with pytest.raises(RuntimeInputError, match="outside the exported range"):
        runtime.infer(
            {"input_0": np.zeros((MAX_BATCH + 1, 8), np.float32), "input_1": np.zeros((MAX_BATCH + 1, 4), np.int64)}
        )
    with pytest.raises(RuntimeInputError, match="same dynamic dim"):
        runtime.infer({"input_0": np.zeros((3, 8), np.float32), "input_1": np.zeros((2, 4), np.int64)})
    with pytest.raises(RuntimeInputError, match="expected INT64"):
        runtime.infer({"input_0": np.zeros((1, 8), np.float32), "input_1": np.zeros((1, 4), np.int32)})
    runtime.unload()


def test_config_names_the_inputs_and_outputs(version: Path) -> None:
    runtime = TorchAOTIRuntime()
    outputs = [{"name": "s", "datatype": "FP32", "shape": [-1, 6]}, {"name": "p", "datatype": "FP32", "shape": [-1, 6]}]
    runtime.load(version, {"inputs": DECLARED_INPUTS, "outputs": outputs})
    sig = runtime.signature()
    assert [s.name for s in sig.inputs] == ["x", "ids"] and [s.name for s in sig.outputs] == ["s", "p"]
    inputs = family_inputs("multi", 2)
    got = runtime.infer(inputs)
    want = eager_outputs("multi", inputs)
    np.testing.assert_allclose(got["s"], want["score"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["p"], want["pooled"], rtol=0, atol=ATOL)
    # what the config declares must agree with what the package records
    wrong = [{**DECLARED_INPUTS[0], "datatype": "FP16"}, DECLARED_INPUTS[1]]
    with pytest.raises(RuntimeLoadError, match="datatype FP16 differs from the model's FP32"):
        TorchAOTIRuntime().load(version, {"inputs": wrong})


def test_without_recorded_inputs_the_config_declares_them(stripped: Path) -> None:
    with pytest.raises(RuntimeLoadError) as failure:
        TorchAOTIRuntime().load(stripped, {})
    message = str(failure.value)
    assert "without signature.json" in message and "config.yaml" in message
    assert "inputs: [{name: input_0, datatype:" in message and "input_0, input_1" in message
    assert "outputs:" in message and "score, pooled" in message
    runtime = TorchAOTIRuntime()
    runtime.load(stripped, {"inputs": DECLARED_INPUTS})
    assert [(s.name, s.shape) for s in runtime.signature().outputs] == [("score", (-1, 6)), ("pooled", (-1, 6))]
    _check_against_eager(runtime)


def test_a_package_under_another_file_name(plain: Path, tmp_path: Path) -> None:
    folder = tmp_path / "1"
    folder.mkdir()
    shutil.copy(plain, folder / "two_heads.pt2")
    with pytest.raises(RuntimeLoadError, match=r"model\.pt2 does not exist"):
        TorchAOTIRuntime().load(folder, {})
    assert detect_format(folder, "two_heads.pt2") == "torch_aoti"
    runtime = TorchAOTIRuntime()
    runtime.load(folder, {"filename": "two_heads.pt2", "inputs": DECLARED_INPUTS})
    _check_against_eager(runtime)
    for bad in ("../two_heads.pt2", ".hidden.pt2", 3):
        with pytest.raises(RuntimeLoadError, match="expected a plain file name"):
            TorchAOTIRuntime().load(folder, {"filename": bad})
