"""The dependency rules: import-linter contracts hold, and the serving path never imports torch or TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_import_linter_contracts_hold() -> None:
    tool = BIN / "lint-imports"
    assert tool.is_file(), f"{tool} is missing: install the dev extra (pip install -e '.[dev]')"
    result = subprocess.run(
        [str(tool), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in report, report


CHILD = """
import json, sys
import gateway.server.process, gateway.core.dataplane, gateway.lifecycle.host, runtimes.onnx_runtime, model_store
import gateway.rest.app, gateway.grpc.server
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "keras", "jax"))
print(json.dumps(heavy))
"""


def test_serving_path_does_not_import_torch_or_tensorflow() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert heavy == [], f"the ONNX serving path imported {heavy[:10]}"
