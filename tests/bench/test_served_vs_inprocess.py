"""bench/served_vs_inprocess.py end to end: in-process vs REST vs gRPC on the ONNX dense model, tiny windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "served_vs_inprocess.py"


def test_served_vs_inprocess_reports_median_ratios(onnx_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "svi.json"
    cmd = [
        sys.executable, str(SCRIPT), "--store", str(onnx_store), "--model", "dense", "--concurrency", "2",
        "--duration", "0.3", "--warmup", "0", "--rounds", "2", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's packages, whatever the environment installed
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["model"] == "dense" and doc["version_dir"].endswith("dense/2")
    assert len(doc["rounds"]) == 2
    assert list(doc["rounds"][0]) == ["in-process", "rest", "grpc"]
    assert list(doc["rounds"][1]) == ["grpc", "rest", "in-process"]  # alternating order
    for mode in ("in-process", "rest", "grpc"):
        figures = doc["median"][mode]
        assert figures["throughput_rps"] > 0 and figures["errors"] == 0, (mode, figures)
    for mode in ("rest", "grpc"):
        assert doc["median"][mode]["throughput_ratio"] > 0
        assert doc["median"][mode]["p50_ratio"] > 0
    assert "dense: served vs in-process, concurrency 2, batch 1, median of 2 rounds" in result.stdout
    rows = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows == ["in-process", "rest", "grpc"]
