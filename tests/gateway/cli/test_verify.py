"""``tensorgate verify`` and ``check_golden``: a good store passes, a variant exported from other weights fails by
name, and the same check runs through a real gateway over V2 REST."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.cli.demo import MLP
from gateway.cli.export import TORCH_FORMATS, export_torch
from gateway.cli.main import main
from gateway.cli.verify import verify_store
from model_store import open_store
from model_store.config import Verify
from model_store.golden import check_golden, compare, failures, load_golden
from runtimes.export.torch_exporter import save_state_dict
from runtimes.torch_export import TorchExportRuntime
from tests.serving import ServerProcess
from tests.torch_models import FAMILIES, mlp, shared_torch_store

VARIANTS = sorted(f"{family}_{fmt}" for family in FAMILIES for fmt in TORCH_FORMATS)


@pytest.fixture(scope="session")
def torch_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_torch_store(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def mlp_runtime(torch_store: Path) -> Iterator[TorchExportRuntime]:
    runtime = TorchExportRuntime()
    runtime.load(torch_store / "mlp_torch_export" / "1", {})
    yield runtime
    runtime.unload()


@pytest.fixture(scope="module")
def other_weights_store(torch_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLP family, but ``mlp_onnx``'s artefact comes from an export of other weights (seed 1)."""
    root = tmp_path_factory.mktemp("other_weights")
    store = root / "store"
    for fmt in TORCH_FORMATS:
        shutil.copytree(torch_store / f"mlp_{fmt}", store / f"mlp_{fmt}")
    weights = save_state_dict(mlp(seed=1), root / "mlp_seed1.pt")
    export_torch(
        MLP.factory,
        root / "scratch",
        "mlp",
        MLP.inputs,
        output_names=MLP.outputs,
        formats=("onnx",),
        state_dict=weights,
    )
    shutil.copy(root / "scratch" / "mlp_onnx" / "1" / "model.onnx", store / "mlp_onnx" / "1" / "model.onnx")
    return store


def test_every_variant_of_a_good_store_passes(torch_store: Path) -> None:
    reports = verify_store(open_store(torch_store))
    assert sorted(r.model for r in reports) == VARIANTS
    for report in reports:
        assert report.ok, (report.label, report.problem, failures(report.results))
        assert {r.output for r in report.results} <= {"logits", "score", "pooled"}
        assert len(report.results) == 3 * (2 if report.model.startswith("multi") else 1)


def test_cli_verify_prints_a_table_and_exits_0(torch_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--store", str(torch_store), "--models", "mlp_torch_aoti,multi_onnx"]) == 0
    out = capsys.readouterr().out
    assert "mlp_torch_aoti" in out and "multi_onnx" in out and "pooled" in out
    assert "2 variants match their golden samples" in out


def test_variant_exported_from_other_weights_fails_naming_variant_and_output(
    other_weights_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--store", str(other_weights_store)]) == 1
    captured = capsys.readouterr()
    assert "FAIL mlp_onnx v1 (onnx): output 'logits' sample 0: max abs error" in captured.err
    assert "1 of 3 variants failed" in captured.err
    for good in ("mlp_torch_export", "mlp_torch_aoti"):
        assert good not in captured.err
    reports = {r.model: r for r in verify_store(open_store(other_weights_store))}
    assert not reports["mlp_onnx"].ok and reports["mlp_torch_aoti"].ok
    assert min(r.max_abs for r in reports["mlp_onnx"].results) > 1e-2


def test_check_golden_reports_each_sample_and_output(torch_store: Path, mlp_runtime: TorchExportRuntime) -> None:
    golden = load_golden(open_store(torch_store), "mlp_torch_export", 1)
    results = check_golden(mlp_runtime, golden, Verify(atol=1e-6, rtol=0))
    assert [(r.sample, r.output, r.ok) for r in results] == [
        (0, "logits", True),
        (1, "logits", True),
        (2, "logits", True),
    ]
    assert failures(results) is None

    shifted = [(inputs, {"logits": outputs["logits"] + 1e-3}) for inputs, outputs in golden]
    bad = check_golden(mlp_runtime, shifted, Verify(atol=1e-4, rtol=0))
    assert not any(r.ok for r in bad)
    assert all(abs(r.max_abs - 1e-3) < 1e-5 for r in bad)
    assert "output 'logits' sample 0: max abs error 0.001" in (failures(bad) or "")

    renamed = [(inputs, {"probabilities": outputs["logits"]}) for inputs, outputs in golden[:1]]
    (missing,) = check_golden(mlp_runtime, renamed, Verify())
    assert missing.problem == "missing from the model's outputs"

    wrong_input = [({"x": np.zeros((1, 5), np.float32)}, golden[0][1])]
    (failed,) = check_golden(mlp_runtime, wrong_input, Verify())
    assert failed.output == "*" and "RuntimeInputError: input 'x' has shape [1, 5]" in (failed.problem or "")


def test_compare_rules() -> None:
    verify = Verify(atol=1e-3, rtol=1e-2)
    floats = np.array([1.0, 100.0, np.nan], np.float32)
    assert compare(0, "y", floats + np.array([5e-4, 0.5, 0], np.float32), floats, verify).ok  # within atol + rtol*|x|
    assert not compare(0, "y", floats + np.array([0, 2.0, 0], np.float32), floats, verify).ok
    assert not compare(0, "y", np.array([1.0, 100.0, 0.0], np.float32), floats, verify).ok  # NaN only on one side
    ints = np.array([1, 2, 3], np.int64)
    assert compare(0, "k", ints.copy(), ints, verify).ok
    assert not compare(0, "k", ints + np.array([0, 0, 1]), ints, verify).ok  # integers compare exactly
    shape = compare(2, "k", ints[:2], ints, verify)
    assert not shape.ok and shape.problem == "shape [2], golden [3]"


def test_named_model_without_golden_samples_fails(
    torch_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    shutil.copytree(torch_store / "mlp_torch_export", store / "mlp_torch_export")
    shutil.rmtree(store / "mlp_torch_export" / "1" / "golden")
    assert main(["verify", "--store", str(store)]) == 0  # not asked for by name: reported as skipped
    assert "skipped" in capsys.readouterr().out
    assert main(["verify", "--store", str(store), "--models", "mlp_torch_export"]) == 1
    assert "FAIL mlp_torch_export (torch_export): no golden samples" in capsys.readouterr().err


def test_verify_through_a_running_gateway(
    torch_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    for model in ("mlp_torch_aoti", "multi_torch_export", "multi_onnx"):
        shutil.copytree(torch_store / model, store / model)
    server = ServerProcess(store, tmp_path, ["--poll-interval", "0"]).start()
    try:
        assert main(["verify", "--store", str(store), "--url", server.http_url]) == 0, server.log()
    finally:
        server.stop()
    out = capsys.readouterr().out
    assert "3 variants match their golden samples" in out
    assert "score" in out and "pooled" in out
