"""Pins the README's "wire-compatible with Triton's clients (tritonclient, perf_analyzer)": Triton's own
perf_analyzer binary profiles a served model over V2 HTTP, V2 gRPC and the TF Serving gRPC API (as
``bench/perf_analyzer.sh`` runs it) at concurrency 1 and 2, exits 0, reports every request sent and a positive
throughput, and no request fails on the server.

perf_analyzer is installed by ``make test`` (``bench/setup-perf-analyzer.sh``) at ``$TOOLS_DIR/perf_analyzer``,
by default ``<repo>/.tools/perf_analyzer``; without it these tests fail, saying how to install it.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from tests.serving import ServerProcess, metric_series

ROOT = Path(__file__).resolve().parents[2]
MODEL = "dense"  # [batch, 16] FP32 -> [batch, 4], from tests/onnx_models.py
REQUESTS = 200  # per run; one run per concurrency (1 and 2)


def perf_analyzer() -> Path:
    """Where bench/setup-perf-analyzer.sh puts its wrapper (the same lookup as bench/perf_analyzer.sh)."""
    path = Path(os.environ.get("TOOLS_DIR") or ROOT / ".tools") / "perf_analyzer"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"perf_analyzer is not installed at {path}: run `make tools` or `bash bench/setup-perf-analyzer.sh`",
            pytrace=False,
        )
    return path


def request_codes(server: ServerProcess, protocol: str) -> dict[str, float]:
    """tensorgate_requests_total of MODEL by code, over one protocol label (rest, grpc, tfs_grpc)."""
    codes: dict[str, float] = {}
    for labels, value in metric_series(server, "tensorgate_requests_total"):
        if labels["model"] == MODEL and labels["protocol"] == protocol:
            codes[labels["code"]] = codes.get(labels["code"], 0.0) + value
    return codes


@pytest.mark.parametrize(
    ("kind", "protocol", "extra"),
    [
        ("http", "rest", []),
        ("grpc", "grpc", []),
        # TF Serving has no batch notion: the free batch dim is given as perf_analyzer's docs say
        ("tfserving", "tfs_grpc", ["--service-kind=tfserving", "--shape", "x:1,16"]),
    ],
)
def test_perf_analyzer_profiles_a_served_model(
    server: ServerProcess, tmp_path: Path, kind: str, protocol: str, extra: list[str]
) -> None:
    binary = perf_analyzer()
    before = request_codes(server, protocol)
    for concurrency in (1, 2):
        # a fixed request count, not time windows: no stability search that a busy machine could fail
        report = tmp_path / f"{kind}-{concurrency}.csv"
        cmd = [
            str(binary), "-m", MODEL, "-u", server.http if kind == "http" else server.grpc,
            "-i", "http" if kind == "http" else "grpc", "--concurrency-range", f"{concurrency}:{concurrency}",
            "--request-count", str(REQUESTS), "-f", str(report), *extra,
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        output = f"$ {' '.join(cmd)}\n{run.stdout}\n{run.stderr}\n"
        assert run.returncode == 0, output
        assert "error" not in (run.stdout + run.stderr).lower(), output
        assert f"Request count: {REQUESTS}" in run.stdout, output
        with report.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["Concurrency"]) for r in rows] == [concurrency], output
        assert float(rows[0]["Inferences/Second"]) > 0, output

    after = request_codes(server, protocol)
    assert after.get("OK", 0.0) - before.get("OK", 0.0) >= 2 * REQUESTS, (before, after)
    failed = {code: n - before.get(code, 0.0) for code, n in after.items() if code != "OK"}
    assert not any(failed.values()), f"requests failed on the server during perf_analyzer's runs: {failed}"
