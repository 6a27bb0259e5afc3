"""TorchExportRuntime on real exported models: signature, outputs vs eager, input checks, overrides, threads."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from runtimes import RuntimeInputError, RuntimeLoadError, detect_format, runtime_class, torch_threads
from runtimes.export.inputs import ExportInput
from runtimes.export.torch_exporter import TorchExporter
from runtimes.torch_export import TorchExportRuntime
from tests.torch_models import FAMILIES, MAX_BATCH, Pair, eager_outputs, family_inputs, shared_torch_store

# torch_export runs the same eager kernels as the reference (the transformer-free models here match exactly).
ATOL = 1e-6


@pytest.fixture(scope="session")
def torch_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_torch_store(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def loaded(torch_store: Path) -> Iterator[dict[str, TorchExportRuntime]]:
    runtimes = {}
    for family in FAMILIES:
        runtime = TorchExportRuntime()
        runtime.load(torch_store / f"{family}_torch_export" / "1", {})
        runtimes[family] = runtime
    yield runtimes
    for runtime in runtimes.values():
        runtime.unload()


def test_store_artefact_is_detected_as_torch_export(torch_store: Path) -> None:
    version = torch_store / "mlp_torch_export" / "1"
    assert detect_format(version) == "torch_export"
    assert runtime_class("torch_export") is TorchExportRuntime


def test_signature_names_types_and_dynamic_batch(loaded: dict[str, TorchExportRuntime]) -> None:
    sig = loaded["multi"].signature()
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [("x", "FP32", (-1, 8)), ("ids", "INT64", (-1, 4))]
    assert [(s.name, s.datatype, s.shape) for s in sig.outputs] == [
        ("score", "FP32", (-1, 6)),
        ("pooled", "FP32", (-1, 6)),
    ]
    assert sig.batched
    assert sig.extra["dim_ranges"] == {"batch": [1, MAX_BATCH]}
    mlp = loaded["mlp"].signature()
    assert [(s.name, s.shape) for s in mlp.inputs] == [("x", (-1, 784))]
    assert [(s.name, s.shape) for s in mlp.outputs] == [("logits", (-1, 10))]
    assert TorchExportRuntime.platform == "pytorch_torch_export"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch", [1, 3, MAX_BATCH])
def test_outputs_match_eager(loaded: dict[str, TorchExportRuntime], family: str, batch: int) -> None:
    inputs = family_inputs(family, batch)
    got = loaded[family].infer(inputs)
    want = eager_outputs(family, inputs)
    assert set(got) == set(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL, err_msg=f"{family} {name}")


def test_requested_outputs_only(loaded: dict[str, TorchExportRuntime]) -> None:
    got = loaded["multi"].infer(family_inputs("multi", 2), ["pooled"])
    assert list(got) == ["pooled"]
    with pytest.raises(RuntimeInputError, match="unknown output 'nope'"):
        loaded["multi"].infer(family_inputs("multi", 2), ["nope"])


# The runtime silences torch's one-time "not writable" warning at load; pytest resets warning filters per test.
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_read_only_inputs_are_accepted_and_left_untouched(loaded: dict[str, TorchExportRuntime]) -> None:
    source = family_inputs("mlp", 2)["x"]
    frozen = np.frombuffer(source.tobytes(), dtype=np.float32).reshape(2, 784)  # as a request body decodes
    assert not frozen.flags.writeable
    got = loaded["mlp"].infer({"x": frozen})
    np.testing.assert_allclose(got["logits"], eager_outputs("mlp", {"x": source})["logits"], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(frozen, source)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.zeros((2, 784, 1), np.float32)}, r"input 'x' has shape \[2, 784, 1\] \(rank 3\), expected rank 2"),
        ({"x": np.zeros((2, 783), np.float32)}, r"input 'x' has shape \[2, 783\]: dim 1 is 783, expected 784"),
        ({"x": np.zeros((2, 784), np.float64)}, r"input 'x' has numpy dtype float64, expected FP32"),
        (
            {"x": np.zeros((MAX_BATCH + 1, 784), np.float32)},
            rf"input 'x' dim 0 \(batch\) is {MAX_BATCH + 1}, outside the exported range \[1, {MAX_BATCH}\]",
        ),
        ({"y": np.zeros((2, 784), np.float32)}, r"missing input 'x'; unknown input 'y'"),
    ],
)
def test_bad_inputs_raise_runtime_input_error(
    loaded: dict[str, TorchExportRuntime], inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(RuntimeInputError, match=message):
        loaded["mlp"].infer(inputs)


def test_inputs_sharing_the_batch_dim_must_agree(loaded: dict[str, TorchExportRuntime]) -> None:
    inputs = family_inputs("multi", 3)
    inputs["ids"] = inputs["ids"][:2]
    with pytest.raises(RuntimeInputError, match=r"input 'ids' dim 0 is 2 but input 'x' has 3"):
        loaded["multi"].infer(inputs)


def test_names_come_from_the_program_without_a_sidecar(torch_store: Path, tmp_path: Path) -> None:
    for family, inputs, outputs in (
        ("multi", ["x", "ids"], ["score", "pooled"]),  # forward() argument names and dict keys
        ("mlp", ["input"], ["output_0"]),  # nn.Sequential's argument, a single tensor
    ):
        folder = tmp_path / family
        folder.mkdir()
        shutil.copy(torch_store / f"{family}_torch_export" / "1" / "model.pt2", folder)
        runtime = TorchExportRuntime()
        runtime.load(folder, {})
        sig = runtime.signature()
        assert [s.name for s in sig.inputs] == inputs
        assert [s.name for s in sig.outputs] == outputs
        assert sig.inputs[0].shape[0] == -1


def test_tuple_outputs_are_named_by_position(tmp_path: Path) -> None:
    exporter = TorchExporter(Pair(), [ExportInput.parse("x:FP32:-1,4")], max_batch=4)
    exporter.write_torch_export(tmp_path)
    runtime = TorchExportRuntime()
    runtime.load(tmp_path, {})
    assert [(s.name, s.shape) for s in runtime.signature().outputs] == [("output_0", (-1, 4)), ("output_1", (-1, 1))]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = runtime.infer({"x": x})
    np.testing.assert_array_equal(got["output_0"], x * 2)
    np.testing.assert_array_equal(got["output_1"], x.sum(1, keepdims=True))


def test_config_overrides_rename_in_order_and_pin_by_name(torch_store: Path) -> None:
    folder = torch_store / "multi_torch_export" / "1"
    renamed = TorchExportRuntime()
    renamed.load(
        folder,
        {
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": [-1, 8]},
                {"name": "tokens", "datatype": "INT64", "shape": [-1, 4]},
            ]
        },
    )
    assert [s.name for s in renamed.signature().inputs] == ["features", "tokens"]
    inputs = family_inputs("multi", 2)
    got = renamed.infer({"features": inputs["x"], "tokens": inputs["ids"]})
    np.testing.assert_allclose(got["score"], eager_outputs("multi", inputs)["score"], atol=ATOL, rtol=0)

    pinned = TorchExportRuntime()
    pinned.load(folder, {"outputs": [{"name": "pooled", "datatype": "FP32", "shape": [2, 6]}]})
    assert pinned.signature().output("pooled").shape == (2, 6)  # type: ignore[union-attr]
    assert pinned.signature().output("score").shape == (-1, 6)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 8]}]},
            "datatype FP64 differs from the model's FP32",
        ),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 9]}]}, "dim 1 is 9 but the model fixes it at 8"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}]}, "has rank 1"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [99, 8]}]}, "outside the model's range"),
        ({"inputs": [{"name": "other", "datatype": "FP32", "shape": [-1, 8]}]}, "nor list all 2 of them"),
    ],
)
def test_bad_overrides_fail_the_load(torch_store: Path, override: dict[str, object], message: str) -> None:
    with pytest.raises(RuntimeLoadError, match=message):
        TorchExportRuntime().load(torch_store / "multi_torch_export" / "1", override)


def test_load_errors_are_clear(torch_store: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeLoadError, match=r"model\.pt2 does not exist"):
        TorchExportRuntime().load(tmp_path, {})
    (tmp_path / "model.pt2").write_bytes(b"not a zip")
    with pytest.raises(RuntimeLoadError, match=r"not a readable torch\.export archive"):
        TorchExportRuntime().load(tmp_path, {})
    with pytest.raises(RuntimeLoadError, match=r"expected cpu, cuda or cuda:<n>"):
        TorchExportRuntime().load(torch_store / "mlp_torch_export" / "1", {"device": "tpu"})
    with pytest.raises(RuntimeLoadError, match="intra_op_threads must be a positive integer"):
        TorchExportRuntime().load(torch_store / "mlp_torch_export" / "1", {"intra_op_threads": 0})


def test_device_cpu_by_name_and_cuda_only_where_torch_reaches_it(torch_store: Path) -> None:
    folder = torch_store / "mlp_torch_export" / "1"
    runtime = TorchExportRuntime()
    runtime.load(folder, {"device": "cpu"})
    assert runtime.device == "cpu"
    inputs = family_inputs("mlp", 2)
    np.testing.assert_allclose(runtime.infer(inputs)["logits"], eager_outputs("mlp", inputs)["logits"], atol=ATOL)
    if torch.cuda.is_available():  # the GPU path itself: tests/e2e/test_cuda_serving.py (make test-cuda)
        with pytest.raises(RuntimeLoadError, match="CUDA device"):
            TorchExportRuntime().load(folder, {"device": f"cuda:{torch.cuda.device_count()}"})
    else:
        with pytest.raises(RuntimeLoadError, match=r"options\.device='cuda' but CUDA is not available"):
            TorchExportRuntime().load(folder, {"device": "cuda"})
        with pytest.raises(RuntimeLoadError, match="CUDA is not available"):
            TorchExportRuntime().load(folder, {"device": "cuda:1"})


@pytest.fixture
def restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start from a process where no torch model has asked for threads; put torch's pool back afterwards."""
    monkeypatch.setattr(torch_threads, "_intra", None)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_intra_op_threads_take_the_largest_request_and_warn_on_disagreement(
    torch_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = torch.get_num_threads()
    runtime = TorchExportRuntime()
    runtime.load(torch_store / "mlp_torch_export" / "1", {"intra_op_threads": current + 1})
    assert torch.get_num_threads() == current + 1
    with caplog.at_level(logging.WARNING, logger="runtimes.torch_threads"):
        torch_threads.apply_thread_options({"intra_op_threads": 1}, "another model")
    assert torch.get_num_threads() == current + 1  # never lowered under a model that asked for more
    assert "another model asks for intra_op_threads=1" in caplog.text
    assert runtime.infer(family_inputs("mlp", 1))["logits"].shape == (1, 10)
