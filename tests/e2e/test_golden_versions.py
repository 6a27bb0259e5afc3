"""Golden samples per version: a v2 with new weights and its own samples loads (verify.on_load) beside v1 and
``tensorgate verify`` passes for each version against a running server; with one set of samples for the model
(the older layout), v2 would be checked against v1's outputs and refused — which is still how that layout reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gateway.cli.main import main
from model_store.golden import write_golden
from tests.onnx_models import dense_model
from tests.serving import ServerProcess


def _samples(model: Path) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    session = ort.InferenceSession(str(model))
    x = np.random.default_rng(7).standard_normal((2, 16)).astype(np.float32)
    return [({"x": x}, {"y": session.run(None, {"x": x})[0]})]


def _store(root: Path) -> Path:
    for version, seed in ((1, 0), (2, 1)):  # v2: retrained, other weights
        folder = root / "dense" / str(version)
        write_golden(folder, _samples(dense_model(folder / "model.onnx", seed=seed)))
    (root / "dense" / "config.yaml").write_text(
        "version_policy: {all: true}\nverify: {atol: 1.0e-5, rtol: 1.0e-4, on_load: true}\n"
    )
    return root


def test_each_version_loads_and_verifies_against_its_own_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store(tmp_path / "store")
    proc = ServerProcess(store, tmp_path, ["--poll-interval", "0"]).start()  # strict readiness: both READY
    try:
        assert main(["verify", "--store", str(store), "--url", proc.http]) == 0
        out = capsys.readouterr().out
        assert out.count("dense") >= 2 and "FAIL" not in out
    finally:
        proc.stop()


def test_the_older_per_model_layout_is_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(tmp_path / "store")
    v1_samples = (store / "dense" / "1" / "golden").rename(store / "dense" / "golden")
    (store / "dense" / "config.yaml").write_text("version_policy: {specific: [1]}\n")
    assert v1_samples.is_dir()
    assert main(["verify", "--store", str(store)]) == 0
    (store / "dense" / "config.yaml").write_text("version_policy: {all: true}\n")
    import shutil

    shutil.rmtree(store / "dense" / "2" / "golden")  # v2 falls back to the model's (v1's) samples: it fails them
    assert main(["verify", "--store", str(store)]) == 1
    assert "FAIL dense" in capsys.readouterr().err
