"""Fixtures for the deploy checks: the external tools (a missing one fails with how to install it) and
custom-resource validation through the pinned npm models."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import CRD_VALIDATOR, NODE_MODULES, strip_meta

INSTALL_HINT = "run deploy/install-tools.sh (as root) to install it"


def require_tool(name: str) -> str:
    """The absolute path of an executable, or a test failure naming how to get it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; {INSTALL_HINT}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool("prometheus")


@pytest.fixture(scope="session")
def node() -> str:
    path = require_tool("node")
    for package in ("@kubernetes-models/prometheus-operator", "@kubernetes-models/keda", "js-yaml"):
        if not (NODE_MODULES / package).is_dir():
            pytest.fail(f"npm package {package} missing under {NODE_MODULES}; {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def validate_custom(node: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[dict[str, Any]]], None]:
    """Validates custom resources against their CRD schemas; an AssertionError lists each error."""
    folder = tmp_path_factory.mktemp("crds")
    counter = iter(range(1_000_000))

    def check(docs: list[dict[str, Any]]) -> None:
        assert docs, "no custom resources to validate"
        path = folder / f"docs-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump_all([strip_meta(d) for d in docs]))
        proc = subprocess.run(
            [node, str(CRD_VALIDATOR), str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        bad = [r for r in results if not r["ok"]]
        assert proc.returncode == 0 and not bad and len(results) == len(docs), (
            f"CRD validation failed (rc {proc.returncode}): {bad or proc.stderr}"
        )

    return check
