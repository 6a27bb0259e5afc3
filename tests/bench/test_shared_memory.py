"""bench/shared_memory.py end to end: every mode on the CNN and a small "big" tensor, tiny windows, two rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "shared_memory.py"


def test_shared_memory_bench_reports_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "shm.json"
    cmd = [sys.executable, str(SCRIPT), "--rounds", "2", "--window", "0.1", "--elements", "65536", "--cnn-batch", "1",
           "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's packages, whatever the environment installed
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(out.read_text())
    modes = ["rest-json", "rest-binary", "rest-shm", "grpc-raw", "grpc-shm"]
    assert [(r["case"], r["mode"]) for r in doc["rows"]] == [(c, m) for c in ("cnn", "big") for m in modes]
    for row in doc["rows"]:
        assert row["requests"] >= 2 and row["median_ms"] > 0 and row["req_per_s"] > 0, row
    assert next(r for r in doc["rows"] if r["case"] == "big")["bytes_in"] == 65536 * 4
    assert "every mode answers correctly" in result.stderr  # each mode's answer was checked against numpy
    assert "round 2/2 big grpc-shm" in result.stderr  # progress while it runs
