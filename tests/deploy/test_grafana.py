"""The Grafana dashboard: valid against Grafana's dashboard schema, a sane layout, template variables from
label_values, and only metrics that the gateway exports or the rule file records (tests/deploy/
test_prometheus_scrape.py then runs every query against a real Prometheus)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing.shadow import compare
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.route_metrics import RouteState, VariantState
from tests.deploy.manifests import DASHBOARD, DASHBOARD_SCHEMA, RULES

METRIC_NAME = re.compile(r"\b(?:tensorgate_\w+|model_runtime:\w+:\w+)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_SCHEMA.read_text())
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def exported_names() -> set[str]:
    """Every sample name the gateway exposes, with each instrument populated once."""
    metrics = Metrics(CollectorRegistry(auto_describe=False))
    metrics.set_sla("m", "1", "onnx", {"p99": 0.02})
    metrics.set_state("m", "1", "onnx", "READY")
    metrics.series("m", "1", "onnx", "rest").observe("OK", 0.01, 0.001, 0.005, 0.004)
    metrics.inflight_add(("m", "1", "onnx"), 1)
    metrics.observe_load("m", "1", "onnx", 0.5, ok=False)
    metrics.observe_batch(("m", "1", "onnx"), 2)
    metrics.store_poll(ok=True)
    routes = metrics.routes
    routes.series("r", "a", [0.02]).observe("OK", 0.01)
    routes.fallback("r", "a", "INTERNAL")
    shadow = routes.shadow("r", "b")
    shadow.count("compared")
    shadow.results["beyond"] = 1
    compare({"y": np.ones((1, 2))}, {"y": np.zeros((1, 2))}, shadow, 0.0, 0.0)
    variant = VariantState("r", "a", chosen=True, weight=0.9, breaker_open=False, latency={"p99": 0.03})
    routes.state = lambda: [RouteState("r", "sla", False, {"p99": 0.02}, [variant])]
    text = metrics.exposition().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_dashboard_matches_grafana_schema() -> None:
    validator = jsonschema.Draft7Validator(schema())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(dashboard())]
    assert not errors, errors


def test_each_panel_matches_its_definition() -> None:
    """The dashboard's panels are anyOf(Panel, RowPanel): check each against its own definition for exact errors."""
    full = schema()
    for panel in panels(dashboard()):
        ref = "#/definitions/RowPanel" if panel["type"] == "row" else "#/definitions/Panel"
        validator = jsonschema.Draft7Validator({**full, "$ref": ref})
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(panel)]
        assert not errors, (panel["title"], errors)


def test_schema_catches_mistakes() -> None:
    validator = jsonschema.Draft7Validator(schema())
    board = dashboard()
    board["panels"][1]["gridPos"]["w"] = "12"
    assert list(validator.iter_errors(board))
    board = dashboard()
    board["templating"]["list"][1]["refreshh"] = 1
    assert list(validator.iter_errors(board))


def test_layout() -> None:
    board = dashboard()
    all_panels = panels(board)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_template_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["query"]["query"] == "label_values(tensorgate_model_state, model)"
    assert variables["runtime"]["query"]["query"] == 'label_values(tensorgate_model_state{model=~"$model"}, runtime)'
    assert variables["runtime"]["multi"] and variables["runtime"]["includeAll"]
    # Runtimes of one model side by side: a panel repeated per selected runtime.
    repeated = [p for p in panels(dashboard()) if p.get("repeat") == "runtime"]
    assert repeated and repeated[0]["repeatDirection"] == "h"


def test_every_query_uses_the_datasource_variable_and_known_metrics() -> None:
    known = exported_names() | recorded_names()
    used: set[str] = set()
    for panel in panels(dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= known, f"{panel['title']}: no such metric {names - known}"
            used |= names
    # The panels the issue asks for are there: latency, SLA, throughput, errors, overhead vs compute, in-flight,
    # model states, load times.
    for name in (
        "tensorgate_request_duration_seconds_bucket",
        "tensorgate_sla_target_seconds",
        "tensorgate_requests_total",
        "tensorgate_overhead_duration_seconds_bucket",
        "tensorgate_compute_duration_seconds_bucket",
        "tensorgate_inflight_requests",
        "tensorgate_model_state",
        "tensorgate_model_load_duration_seconds_sum",
        "model_runtime:tensorgate_sla_compliance:ratio_rate5m",
    ):
        assert name in used, name


@pytest.mark.parametrize("title", ["$model on $runtime: p50 / p99 vs SLA", "p99 latency by runtime"])
def test_latency_panels_draw_the_sla_line(title: str) -> None:
    panel = next(p for p in panels(dashboard()) if p["title"] == title)
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert any(
        'tensorgate_sla_target_seconds{model=~"$model", runtime=~"$runtime", objective="p99"}' in e for e in exprs
    )
    sla_legends = [t["legendFormat"] for t in panel["targets"] if "sla_target" in t["expr"]]
    matcher = panel["fieldConfig"]["overrides"][0]["matcher"]
    assert matcher["id"] == "byRegexp" and all(re.fullmatch(matcher["options"], legend) for legend in sla_legends)
