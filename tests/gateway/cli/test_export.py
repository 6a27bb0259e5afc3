"""``tensorgate export`` and the demo store: store layout, configs, golden samples, the CLI, the build cache."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gateway.cli.demo import MLP, MLP_WEIGHTS, STAMP, build_demo_store
from gateway.cli.export import TOLERANCES, TORCH_FORMATS, ExportError, export_torch
from gateway.cli.main import main
from model_store import ModelConfig
from runtimes import runtime_class
from runtimes.export.demo_networks import cnn, mlp, transformer
from runtimes.export.inputs import ExportInput
from runtimes.export.torch_exporter import save_state_dict
from tests.torch_models import FAMILIES, MAX_BATCH, MULTI_INPUTS, eager_outputs, family_inputs, shared_torch_store

ONNX_ATOL = 1e-5


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return shared_torch_store(tmp_path_factory)


def _golden(model_dir: Path) -> list[dict[str, np.ndarray]]:
    files = sorted((model_dir / "1" / "golden").glob("*.npz"), key=lambda p: int(p.stem))
    samples = []
    for path in files:
        with np.load(path) as npz:
            samples.append({key: npz[key] for key in npz.files})
    return samples


@pytest.mark.parametrize("family", FAMILIES)
def test_each_format_is_a_model_with_config_and_the_same_golden_samples(
    built: tuple[Path, list[str]], family: str
) -> None:
    store, _ = built
    reference = _golden(store / f"{family}_onnx")
    assert [next(iter(s.values())).shape[0] for s in reference] == [1, 3, MAX_BATCH]
    for fmt in TORCH_FORMATS:
        model_dir = store / f"{family}_{fmt}"
        config = ModelConfig.parse((model_dir / "config.yaml").read_text())
        assert config.runtime == fmt
        assert config.max_batch_size == MAX_BATCH
        assert (config.verify.atol, config.verify.rtol) == TOLERANCES[fmt]
        assert config.source["model"] == family
        assert config.source["format"] == fmt
        assert config.source["exported_by"] == f"torch {torch.__version__}"
        assert "verify" in yaml.safe_load((model_dir / "config.yaml").read_text())  # tolerances stay visible
        golden = _golden(model_dir)
        assert len(golden) == 3
        for sample, expected in zip(golden, reference, strict=True):
            assert sorted(sample) == sorted(expected)
            for key in sample:
                np.testing.assert_array_equal(sample[key], expected[key])
    for sample in reference:
        inputs = {k[3:]: v for k, v in sample.items() if k.startswith("in.")}
        want = eager_outputs(family, inputs)
        assert sorted(want) == sorted(k[4:] for k in sample if k.startswith("out."))
        for name, value in want.items():
            np.testing.assert_allclose(sample[f"out.{name}"], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_variant_matches_eager(built: tuple[Path, list[str]], family: str) -> None:
    runtime = runtime_class("onnx")()
    runtime.load(built[0] / f"{family}_onnx" / "1", {})
    try:
        in_names = [s.name for s in runtime.signature().inputs]
        assert in_names == list(family_inputs(family, 1))
        assert all(s.shape[0] == -1 for s in runtime.signature().inputs)
        for batch in (1, 5):
            inputs = family_inputs(family, batch)
            got = runtime.infer(inputs)
            for name, expected in eager_outputs(family, inputs).items():
                np.testing.assert_allclose(got[name], expected, rtol=0, atol=ONNX_ATOL, err_msg=f"{family} {name}")
    finally:
        runtime.unload()


def test_progress_names_every_step(built: tuple[Path, list[str]]) -> None:
    lines = built[1]
    assert "tracing with torch.export" in lines
    for family in FAMILIES:
        assert f"{family}_torch_aoti: compiling AOTInductor package (tens of seconds)" in lines
        assert f"{family}_onnx: writing ONNX (dynamo exporter)" in lines
        assert f"{family}_torch_export: checking against the golden samples" in lines


def test_reexport_keeps_what_the_user_added_to_the_config(tmp_path: Path) -> None:
    export_torch(MLP.factory, tmp_path, "mlp", MLP.inputs, formats=("torch_export",), samples=1)
    config_path = tmp_path / "mlp_torch_export" / "config.yaml"
    edited = yaml.safe_load(config_path.read_text())
    edited["sla"] = {"p99_ms": 30}
    edited["labels"] = {"team": "vision"}
    config_path.write_text(yaml.safe_dump(edited))
    export_torch(MLP.factory, tmp_path, "mlp", MLP.inputs, formats=("torch_export",), version=2, samples=1)
    config = ModelConfig.parse(config_path.read_text())
    assert config.sla.p99_ms == 30
    assert config.labels == {"team": "vision"}
    assert sorted(p.name for p in (tmp_path / "mlp_torch_export").iterdir()) == ["1", "2", "config.yaml"]
    assert all((tmp_path / "mlp_torch_export" / v / "golden" / "0.npz").is_file() for v in ("1", "2"))


def test_state_dict_weights_are_the_ones_exported(tmp_path: Path) -> None:
    weights = save_state_dict(mlp(seed=1), tmp_path / "mlp1.pt")
    export_torch(
        "gateway.cli.demo:mlp",
        tmp_path / "store",
        "m",
        MLP.inputs,
        state_dict=weights,
        formats=("torch_export",),
        samples=1,
    )
    (sample,) = _golden(tmp_path / "store" / "m_torch_export")
    with torch.inference_mode():
        expected = mlp(seed=1)(torch.from_numpy(sample["in.x"])).numpy()
    np.testing.assert_allclose(sample["out.output_0"], expected, rtol=0, atol=1e-6)
    config = ModelConfig.parse((tmp_path / "store" / "m_torch_export" / "config.yaml").read_text())
    assert config.source["state_dict"] == str(weights)


def test_cli_export_writes_the_chosen_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--factory", "tests.torch_models:two_heads", "--store", str(tmp_path), "--name", "two"]
    argv += [arg for spec in MULTI_INPUTS for arg in ("--input", spec)]
    argv += ["--formats", "torch_export,onnx", "--max-batch", "4", "--samples", "2", "--output", "a", "--output", "b"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "two_torch_export" in captured.out and "two_onnx" in captured.out
    assert "tracing with torch.export" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two_onnx", "two_torch_export"]
    sidecar = json.loads((tmp_path / "two_torch_export" / "1" / "signature.json").read_text())
    assert [o["name"] for o in sidecar["outputs"]] == ["a", "b"]
    assert sidecar["ranges"]["batch"] == {"min": 1, "max": 4}
    assert len(list((tmp_path / "two_onnx" / "1" / "golden").iterdir())) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--factory", "tests.nowhere:model", "--input", "x:FP32:-1,784"], "cannot import factory"),
        (["--factory", "gateway.cli.demo:mlp", "--input", "x:FP32"], "expected name:DATATYPE:shape"),
        (["--factory", "gateway.cli.demo:mlp", "--input", "x:FP99:-1,784"], "datatype 'FP99'"),
        (["--factory", "gateway.cli.demo:mlp", "--input", "x:FP32:-1,784", "--formats", "tflite"], "choose from onnx"),
        (["--factory", "gateway.cli.demo:mlp"], "needs at least one --input"),
        (["--factory", "gateway.cli.demo:mlp", "--input", "x:FP32:-1,784", "--name", "../up"], "invalid model name"),
    ],
)
def test_cli_export_errors_exit_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["export", "--store", str(tmp_path), "--name", "m", *argv]) == 1
    assert message in capsys.readouterr().err


def test_export_refuses_a_model_that_is_not_a_torch_module(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module"):
        export_torch(object(), tmp_path, "m", MLP.inputs, formats=("torch_export",))
    with pytest.raises(ExportError, match="not of the form module:function"):
        export_torch("gateway.cli.demo.mlp", tmp_path, "m", MLP.inputs, formats=("torch_export",))


def test_export_input_parsing_and_samples() -> None:
    spec = ExportInput.parse("ids:int64:-1,16:3..7")
    assert (spec.name, spec.datatype, spec.shape, spec.low, spec.high) == ("ids", "INT64", (-1, 16), 3.0, 7.0)
    sample = spec.sample(5, np.random.default_rng(0))
    assert sample.shape == (5, 16) and sample.dtype == np.int64
    assert sample.min() >= 3 and sample.max() < 7
    static = ExportInput.parse("x:FP16:2,3")
    assert not static.dynamic_batch and static.sample(9, np.random.default_rng(0)).shape == (2, 3)
    for bad, message in (
        ("x:FP32:-1,-1", "may only have -1 as its first"),
        ("x:FP32:-1,a", "not a comma-separated list"),
        ("x:FP32:-1,4:5", "not low..high"),
        ("x:FP32:-1,4:5..1", "empty value range"),
        ("x:BYTES:-1", "datatype 'BYTES'"),
    ):
        with pytest.raises(ValueError, match=message):
            ExportInput.parse(bad)


def test_demo_factories_build_the_documented_shapes() -> None:
    with torch.inference_mode():
        assert mlp()(torch.zeros(2, 784)).shape == (2, 10)
        assert cnn()(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
        assert transformer()(torch.zeros(1, 128, 128)).shape == (1, 128, 128)
    first, again = mlp().state_dict(), mlp().state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)  # fixed seed


def test_demo_store_is_built_once_per_demo_and_torch_version(tmp_path: Path) -> None:
    lines: list[str] = []
    names = build_demo_store(tmp_path, lines.append, models=(MLP,), formats=("torch_export",))
    assert names[0] == "mlp_torch_export"  # (plus the Keras variant of the MLP where TensorFlow is installed)
    artefact = tmp_path / "mlp_torch_export" / "1" / "model.pt2"
    built_at = artefact.stat().st_mtime_ns
    stamp = json.loads((tmp_path / STAMP).read_text())
    assert stamp["torch"] == torch.__version__
    weights = torch.load(io.BytesIO((tmp_path / MLP_WEIGHTS).read_bytes()), weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in mlp().state_dict().items())
    config = ModelConfig.parse((tmp_path / "mlp_torch_export" / "config.yaml").read_text())
    assert config.sla.p99_ms == 25

    lines.clear()
    assert build_demo_store(tmp_path, lines.append, models=(MLP,), formats=("torch_export",)) == names
    assert lines == [f"demo store {tmp_path} is up to date"]
    assert artefact.stat().st_mtime_ns == built_at

    (tmp_path / STAMP).write_text(json.dumps({**stamp, "torch": "0.0.0"}))
    build_demo_store(tmp_path, lines.append, models=(MLP,), formats=("torch_export",))
    assert artefact.stat().st_mtime_ns != built_at
    assert json.loads((tmp_path / STAMP).read_text())["torch"] == torch.__version__
