"""Prometheus rules and configs under deploy/prometheus: promtool checks them and runs the rule unit tests, which
make each alert fire and stay silent at the right inputs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.manifests import ADAPTER_RULES, CHART, DEPLOY, RULE_TESTS, RULES

ALERTS = {
    "TensorgateRouteNoVariantMeetsSLA",
    "TensorgateShadowDivergence",
    "TensorgateSLABurnRateFast",
    "TensorgateSLABurnRateSlow",
    "TensorgateHighErrorRate",
    "TensorgateModelUnavailable",
    "TensorgateStoreStale",
}


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_check_rules(promtool: str) -> None:
    proc = run([promtool, "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 29 rules found" in proc.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    proc = run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    defined = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert defined == ALERTS
    assert fired == ALERTS, f"never shown firing: {ALERTS - fired}"
    assert silent >= ALERTS - {"TensorgateSLABurnRateSlow"}, f"never shown silent: {ALERTS - silent}"


def test_the_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A changed threshold breaks the unit tests: they really pin the alert conditions."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    proc = run([promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path)
    assert proc.returncode == 1 and "alertname: TensorgateHighErrorRate" in proc.stdout + proc.stderr


def test_sla_cases_at_the_target_pin_the_bucket(promtool: str, tmp_path: Path) -> None:
    """Requests just below and just above the SLA target tell the target's own bucket from its neighbours: a
    compliance rule that counted the bucket below or above a 20 ms target (15 or 25 ms) fails those cases alone."""
    doc = yaml.safe_load(RULE_TESTS.read_text())
    doc["tests"] = [
        case for case in doc["tests"] if any('model="edge"' in s["series"] for s in case.get("input_series", []))
    ]
    assert len(doc["tests"]) == 1, "the unit tests with requests at the SLA target (model edge) are missing"
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    rules = RULES.read_text()
    target = 'tensorgate_sla_target_seconds{objective="p99"}'
    joined = f'"le", {target}'  # the count_values() that turns the target into the bucket's le label
    assert rules.count(joined) == 4  # one per compliance window
    for shift in ("", " - 0.005", " + 0.005"):
        (tmp_path / RULES.name).write_text(rules.replace(joined, f'"le", ({target}{shift})'))
        proc = run([promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path)
        if not shift:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        else:
            assert proc.returncode == 1, f"a rule counting the bucket at target{shift} s passed:\n{proc.stdout}"
            assert "model_runtime:tensorgate_sla_compliance:ratio_rate5m" in proc.stdout + proc.stderr


def test_recording_rule_names_follow_the_convention() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"model_runtime:tensorgate_[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule


def test_deploy_rules_are_the_chart_rules() -> None:
    """One file: deploy/prometheus/tensorgate-rules.yml is a link to the chart's copy, so they cannot drift."""
    assert RULES.resolve() == (CHART / "files" / "tensorgate-rules.yml").resolve()


def test_example_config_is_valid(promtool: str) -> None:
    config = DEPLOY / "prometheus" / "prometheus.yml"
    proc = run([promtool, "check", "config", config.name], cwd=config.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parsed = yaml.safe_load(config.read_text())
    assert parsed["rule_files"] == ["tensorgate-rules.yml"]
    assert parsed["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8002"]


def test_adapter_rules_shape() -> None:
    adapter = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    for rule in adapter["custom"]:
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        assert {"<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"} <= set(
            re.findall(r"<<\.\w+>>", rule["metricsQuery"])
        )
        assert re.fullmatch(r"\^tensorgate_\w+\$", rule["name"]["matches"])
