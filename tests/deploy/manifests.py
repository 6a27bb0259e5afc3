"""Paths of the deploy files, and the chart rendered and checked the way `helm template` and Kubernetes would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "tensorgate"
RULES = DEPLOY / "prometheus" / "tensorgate-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tensorgate-rules.test.yml"
ADAPTER_RULES = DEPLOY / "prometheus" / "adapter-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "tensorgate.json"
DASHBOARD_SCHEMA = Path(__file__).with_name("grafana-dashboard.schema.json")
NODE_MODULES = ROOT / ".tools" / "node" / "node_modules"
CRD_VALIDATOR = DEPLOY / "tools" / "validate-crds.mjs"

#: Kinds validated by validate-crds.mjs against their CRD schemas; every other kind by kubernetes-validate.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
#: Kubernetes versions every manifest must validate against: the chart's oldest supported one and 1.30.
KUBE_VERSIONS = ("1.25", "1.30")


def render_chart(values: dict[str, Any] | None = None, namespace: str = "serving") -> list[dict[str, Any]]:
    """``helm template demo deploy/helm/tensorgate``: every non-empty manifest as a dict, NOTES.txt left out.

    Each dict carries the template it came from under ``__template__`` (see ``strip_meta``).
    """
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name="demo", namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template__"] = path
                docs.append(doc)
    return docs


def strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__template__"}


def validate_core(doc: dict[str, Any]) -> None:
    """Strict Kubernetes schema validation of a built-in kind; raises on any error or unknown field."""
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(strip_meta(doc), version, strict=True)
