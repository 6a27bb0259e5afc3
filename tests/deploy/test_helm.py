"""The Helm chart: lint, render for default and non-default values, every manifest valid against the Kubernetes
(or CRD) schemas, bad values refused by values.schema.json, and the PrometheusRule equal to the rule file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from gateway.server.settings import Settings
from model_store.route import RouteConfig
from tests.deploy.manifests import ADAPTER_RULES, CHART, CUSTOM_KINDS, RULE_TESTS, RULES, render_chart, validate_core
from tests.deploy.model_schema import model_config_schema

S3_FULL: dict[str, Any] = {
    "image": {"repository": "registry.example/ml/tensorgate", "tag": "0.1.0-onnx"},
    "modelStore": {
        "type": "s3",
        "s3": {
            "uri": "s3://ml-models/prod",
            "region": "eu-west-1",
            "endpointUrl": "http://minio.storage:9000",
            "accessKeyId": "AKIAEXAMPLE",
            "secretAccessKey": "secret",
            "sessionToken": "token",
        },
    },
    "models": {"resnet50": {"sla": {"p99_ms": 25}, "instances": 2}, "bert": {"max_batch_size": 8}},
    "routes": {
        "resnet": {
            "policy": "weighted",
            "variants": [{"model": "resnet50", "weight": 90}, {"model": "resnet50_v2", "weight": 10}],
        }
    },
    "server": {"extraSettings": {"LOG_LEVEL": "debug"}, "extraEnv": [{"name": "OMP_NUM_THREADS", "value": "2"}]},
    "autoscaling": {"mode": "hpa", "metric": "inflight", "minReplicas": 2, "maxReplicas": 8},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "alertLabels": {"team": "ml-platform"},
        "disabledAlerts": ["TensorgateStoreStale"],
    },
    "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
}

#: name -> values; each must lint, render and validate.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "s3-secret-hpa-inflight-monitoring": S3_FULL,
    "s3-existing-secret-hpa-sla": {
        "modelStore": {"s3": {"uri": "s3://bucket", "existingSecret": "s3-creds"}},
        "autoscaling": {"mode": "hpa", "metric": "sla", "slaRatioTarget": 0.9},
        "service": {"type": "LoadBalancer", "grpcAppProtocol": "grpc"},
    },
    "pvc-keda-inflight": {
        "modelStore": {"type": "volume", "volume": {"kind": "persistentVolumeClaim", "claimName": "models"}},
        "autoscaling": {"mode": "keda", "metric": "inflight", "inflightTarget": 6},
        "image": {"digest": "sha256:" + "a" * 64},
    },
    "hostpath-keda-sla-no-pdb": {
        "modelStore": {"type": "volume", "volume": {"kind": "hostPath", "hostPath": "/srv/models"}},
        "autoscaling": {"mode": "keda", "metric": "sla"},
        "podDisruptionBudget": {"enabled": False},
        "serviceAccount": {"create": False, "name": "ml-runner"},
        "prometheusRule": {"enabled": True},
    },
    "tls-mtls-auth": {
        "tls": {"enabled": True, "secretName": "tensorgate-tls", "clientAuth": True},
        "auth": {"enabled": True, "secretName": "tensorgate-keys", "open": ["health"]},
        "server": {"strictReadiness": True},
    },
    "emptydir-fixed-replicas": {
        "modelStore": {"type": "volume", "volume": {"kind": "emptyDir"}},
        "replicaCount": 1,
        "podDisruptionBudget": {"maxUnavailable": 0},
        "server": {"modelControl": "explicit", "logFormat": "text", "extraArgs": ["--load-model", "resnet50"]},
        "cache": {"medium": "Memory", "sizeLimit": "512Mi"},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "tensorgate"}},
                        },
                    }
                ]
            }
        },
    },
}


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs).get(kind, [])
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    return spec["containers"][0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs).get("env", [])}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(values) for name, values in SCENARIOS.items()}


# -- lint and render --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario: str) -> None:
    report = helm.lint(str(CHART), SCENARIOS[scenario], strict=True, namespace="serving", kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_validates(
    scenario: str,
    rendered: dict[str, list[dict[str, Any]]],
    validate_custom: Callable[[list[dict[str, Any]]], None],
) -> None:
    docs = rendered[scenario]
    custom = [d for d in docs if d["kind"] in CUSTOM_KINDS]
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            validate_core(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['__template__']} ({doc['kind']}): {exc.message} at {list(exc.absolute_path)}")
    if custom:
        validate_custom(custom)


def test_validators_catch_mistakes(validate_custom: Callable[[list[dict[str, Any]]], None]) -> None:
    """The checks above can fail: a wrong type, an unknown field and a bad custom resource are each caught."""
    deployment = one(render_chart(), "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(deployment)
    service = one(render_chart(), "Service")
    service["spec"]["ports"][0]["appProtocl"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(service)
    monitor = one(render_chart({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    del monitor["spec"]["selector"]
    with pytest.raises(AssertionError, match="selector"):
        validate_custom([monitor])


def test_rendered_kinds_follow_the_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {name: sorted({d["kind"] for d in docs}) for name, docs in rendered.items()}
    assert kinds["default"] == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount",
    ]  # fmt: skip
    assert kinds["s3-secret-hpa-inflight-monitoring"] == [
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PrometheusRule",
        "Secret", "Service", "ServiceAccount", "ServiceMonitor",
    ]  # fmt: skip
    assert kinds["hostpath-keda-sla-no-pdb"] == [
        "ConfigMap", "Deployment", "PrometheusRule", "ScaledObject", "Service",
    ]  # fmt: skip


# -- the Deployment ---------------------------------------------------------------------------------------------
def test_probes_ports_and_security(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    c = container(docs)
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    # Writable places on a read-only root: the model cache and /tmp, both emptyDirs.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["cache"] == "/var/cache/tensorgate" and "emptyDir" in volumes["cache"]
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert pod["terminationGracePeriodSeconds"] > 5 + 25
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_service_ports_are_named_and_grpc_has_app_protocol(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ports = {p["name"]: p for p in one(rendered["default"], "Service")["spec"]["ports"]}
    assert sorted(ports) == ["grpc", "http", "metrics"]
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert {p["targetPort"] for p in ports.values()} == {"http", "grpc", "metrics"}
    custom = {p["name"]: p for p in one(rendered["s3-existing-secret-hpa-sla"], "Service")["spec"]["ports"]}
    assert custom["grpc"]["appProtocol"] == "grpc"


def config_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-env")]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


def test_server_settings_come_from_the_configmap(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    env = config_env(docs)
    assert env["TENSORGATE_STORE"] == "s3://models/tensorgate"
    assert env["TENSORGATE_HTTP_PORT"] == "8000" and env["TENSORGATE_METRICS_PORT"] == "8002"
    assert env["TENSORGATE_LOG_FORMAT"] == "json" and env["TENSORGATE_CACHE_DIR"] == "/var/cache/tensorgate"
    refs = container(docs)["envFrom"]
    assert refs == [{"configMapRef": {"name": "demo-tensorgate-env"}}]
    # The gateway accepts every value it is given: each key is a Settings field and parses.
    fields = {f"TENSORGATE_{name.upper()}" for name in Settings.model_fields}
    for scenario, scenario_docs in rendered.items():
        env = config_env(scenario_docs)
        unknown = set(env) - fields - PENDING_SETTINGS
        assert not unknown, f"{scenario}: settings the server does not have: {unknown}"
        with pytest.MonkeyPatch.context() as patch:  # read as the server reads them: from its environment
            for key, value in env.items():
                if key in fields:
                    patch.setenv(key, value)
            Settings()


#: TENSORGATE_CONFIG_OVERRIDES names the folder of per-model config.yaml overrides (values `models`); it is
#: checked like the others as soon as gateway.server.settings.Settings has the config_overrides field.
PENDING_SETTINGS = set() if "config_overrides" in Settings.model_fields else {"TENSORGATE_CONFIG_OVERRIDES"}


def test_tls_and_keys_come_from_mounted_secrets_and_probes_stay_plain(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["tls-mtls-auth"]
    env = config_env(docs)
    assert env["TENSORGATE_TLS_CERT"] == "/etc/tensorgate/tls/tls.crt"
    assert env["TENSORGATE_TLS_KEY"] == "/etc/tensorgate/tls/tls.key"
    assert env["TENSORGATE_TLS_CLIENT_CA"] == "/etc/tensorgate/tls/ca.crt"
    assert env["TENSORGATE_AUTH_KEYS"] == "/etc/tensorgate/auth/keys.yaml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORGATE_AUTH_OPEN", env["TENSORGATE_AUTH_OPEN"])
        assert Settings().auth_open == ["health"]
    assert env["TENSORGATE_STRICT_READINESS"] == "true"
    c = container(docs)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert "subPath" not in mounts["tls"] and mounts["tls"]["readOnly"]  # rotated files reach the server
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "tensorgate-tls", "auth": "tensorgate-keys"}
    # kubelet probes present no client certificate: with TLS on they use the plain metrics port (health only)
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "metrics"}
    assert "TENSORGATE_TLS_CERT" not in config_env(rendered["default"])


def test_model_overrides_are_mounted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["s3-secret-hpa-inflight-monitoring"]
    models = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-models"))
    assert yaml.safe_load(models["data"]["resnet50.yaml"]) == {"sla": {"p99_ms": 25}, "instances": 2}
    assert yaml.safe_load(models["data"]["bert.yaml"]) == {"max_batch_size": 8}
    route = RouteConfig.parse(models["data"]["resnet.route.yaml"])  # what the server will read
    assert route.policy == "weighted" and route.names == ["resnet50", "resnet50_v2"]
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["config-overrides"]["mountPath"] == "/etc/tensorgate/models"
    assert config_env(docs)["TENSORGATE_CONFIG_OVERRIDES"] == "/etc/tensorgate/models"
    assert "TENSORGATE_CONFIG_OVERRIDES" not in config_env(rendered["default"])


def test_s3_credentials_from_a_created_or_existing_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["s3-secret-hpa-inflight-monitoring"]
    secret = one(docs, "Secret")
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
    }
    env = env_of(docs)
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": key}
    assert env["OMP_NUM_THREADS"]["value"] == "2"
    assert config_env(docs)["TENSORGATE_LOG_LEVEL"] == "debug"

    existing = env_of(rendered["s3-existing-secret-hpa-sla"])
    assert existing["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert "Secret" not in by_kind(rendered["s3-existing-secret-hpa-sla"])
    # No keys and no secret: the pod's own identity (IRSA / workload identity), no AWS_* credentials at all.
    assert not any(k.startswith("AWS_ACCESS") for k in env_of(rendered["default"]))


def test_a_changed_config_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = one(render_chart(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"server": {"pollInterval": 10}})


@pytest.mark.parametrize(
    ("scenario", "volume"),
    [
        ("pvc-keda-inflight", {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}),
        ("hostpath-keda-sla-no-pdb", {"hostPath": {"path": "/srv/models", "type": "Directory"}}),
        ("emptydir-fixed-replicas", {"emptyDir": {}}),
    ],
)
def test_volume_model_store(scenario: str, volume: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[scenario]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert {k: v for k, v in models.items() if k != "name"} == volume
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == "/models" and config_env(docs)["TENSORGATE_STORE"] == "/models"
    assert not any(k.startswith("AWS_") for k in env_of(docs))


# -- scaling ------------------------------------------------------------------------------------------------
def test_hpa_on_tensorgate_metrics(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["s3-secret-hpa-inflight-monitoring"]
    assert "replicas" not in one(docs, "Deployment")["spec"], "the HPA owns the replica count"
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "tensorgate_inflight_requests"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    sla = one(rendered["s3-existing-secret-hpa-sla"], "HorizontalPodAutoscaler")["spec"]["metrics"][0]
    assert sla["pods"]["metric"]["name"] == "tensorgate_p99_sla_ratio"
    assert sla["pods"]["target"]["averageValue"] == "0.9"
    adapter = yaml.safe_load(ADAPTER_RULES.read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert {"tensorgate_inflight_requests", "tensorgate_p99_sla_ratio"} <= served


def test_keda_scaled_object(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["pvc-keda-inflight"]
    assert "HorizontalPodAutoscaler" not in by_kind(docs), "KEDA makes its own HPA"
    assert "replicas" not in one(docs, "Deployment")["spec"]
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "6"
    assert trigger["metadata"]["query"] == (
        'sum(tensorgate_inflight_requests{namespace="serving", service="demo-tensorgate"})'
    )
    sla = one(rendered["hostpath-keda-sla-no-pdb"], "ScaledObject")["spec"]["triggers"][0]
    assert sla["metricType"] == "Value" and sla["metadata"]["threshold"] == "0.8"
    assert (
        'tensorgate_sla_target_seconds{namespace="serving", service="demo-tensorgate", objective="p99"}'
        in (sla["metadata"]["query"])
    )


def test_pod_disruption_budget(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert one(rendered["default"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert one(rendered["s3-secret-hpa-inflight-monitoring"], "PodDisruptionBudget")["spec"]["minAvailable"] == ("50%")
    pdb = one(rendered["emptydir-fixed-replicas"], "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["maxUnavailable"] == 0
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == one(rendered["default"], "Deployment")["spec"]["selector"]["matchLabels"]
    )


# -- monitoring -------------------------------------------------------------------------------------------------
def test_service_monitor_scrapes_the_metrics_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["s3-secret-hpa-inflight-monitoring"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service_labels = one(docs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


def unwrap_rules(rule: dict[str, Any], folder: Path) -> Path:
    """A PrometheusRule's spec as a plain rule file that promtool reads."""
    path = folder / "tensorgate-rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def test_prometheus_rule_is_the_rule_file(
    rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    rule = one(rendered["hostpath-keda-sla-no-pdb"], "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # And it passes the same unit tests, run by promtool on the unwrapped spec.
    unwrap_rules(rule, tmp_path)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    proc = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_rule_values_are_applied(
    rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    rule = one(rendered["s3-secret-hpa-inflight-monitoring"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "TensorgateStoreStale" not in alerts
    assert set(alerts) == {
        "TensorgateSLABurnRateFast", "TensorgateSLABurnRateSlow", "TensorgateHighErrorRate",
        "TensorgateModelUnavailable", "TensorgateRouteNoVariantMeetsSLA", "TensorgateShadowDivergence",
    }  # fmt: skip
    assert all(a["labels"]["team"] == "ml-platform" and a["labels"]["severity"] for a in alerts.values())
    assert alerts["TensorgateSLABurnRateFast"]["labels"]["severity"] == "critical"
    proc = subprocess.run(
        [promtool, "check", "rules", str(unwrap_rules(rule, tmp_path))], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the values schema ------------------------------------------------------------------------------------------
BAD_VALUES: dict[str, dict[str, Any]] = {
    "replicas as text": {"replicaCount": "two"},
    "unknown top-level key": {"replicas": 3},
    "misspelt nested key": {"server": {"pollIntervall": 5}},
    "unknown autoscaling mode": {"autoscaling": {"mode": "vpa"}},
    "unknown scaling metric": {"autoscaling": {"metric": "cpu"}},
    "port out of range": {"server": {"ports": {"http": 70000}}},
    "store type": {"modelStore": {"type": "gcs"}},
    "not an s3 uri": {"modelStore": {"s3": {"uri": "https://bucket/prefix"}}},
    "pvc without a claim": {"modelStore": {"type": "volume", "volume": {"kind": "persistentVolumeClaim", "claimName": ""}}},
    "unknown volume kind": {"modelStore": {"type": "volume", "volume": {"kind": "nfs"}}},
    "both pdb bounds": {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "bad model control": {"server": {"modelControl": "manual"}},
    "unknown alert": {"prometheusRule": {"disabledAlerts": ["NoSuchAlert"]}},
    "bad interval": {"serviceMonitor": {"interval": "15 seconds"}},
    "bad extra setting name": {"server": {"extraSettings": {"log-level": "debug"}}},
    "model name with a slash": {"models": {"a/b": {}}},
    "misspelt model config field": {"models": {"m": {"sla": {"p99": 20}}}},
    "model config field of the wrong type": {"models": {"m": {"instances": "two"}}},
    "unknown model runtime": {"models": {"m": {"runtime": "tensorrt"}}},
    "bad digest": {"image": {"digest": "latest"}},
    "unknown auth group": {"auth": {"open": ["everything"]}},
    "workers not a number": {"server": {"workers": "many"}},
    "no workers": {"server": {"workers": 0}},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_rejected(case: str) -> None:
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(BAD_VALUES[case])
        with pytest.raises(helm.HelmValuesError):
            chart.render(BAD_VALUES[case], name="demo", namespace="serving")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"terminationGracePeriodSeconds": 20}, "terminationGracePeriodSeconds must exceed"),
        ({"modelStore": {"s3": {"accessKeyId": "only-the-id"}}}, "set both accessKeyId and secretAccessKey"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
        ({"auth": {"enabled": True}}, "auth.enabled needs auth.secretName"),
    ],
)
def test_inconsistent_values_fail_to_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render_chart(values)


def test_models_are_checked_as_the_server_checks_config_yaml() -> None:
    values = json.loads(CHART.joinpath("values.schema.json").read_text())
    schema, defs = model_config_schema()
    assert values["properties"]["models"]["additionalProperties"] == schema, "run python -m tests.deploy.model_schema"
    assert {k: v for k, v in values["$defs"].items() if k.startswith("ModelConfig")} == defs
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({"models": {"resnet": {"sla": {"p99_ms": 25}, "options": {"device": "cpu"}}}})


def test_schema_accepts_every_default() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})
        for values in SCENARIOS.values():
            chart.validate_schema(values)


def test_access_log_and_tracing_values() -> None:
    """Off by default; on, the access-log settings reach the ConfigMap and tracing's OTEL_* the container."""
    docs = render_chart()
    env = config_env(docs)
    assert (env["TENSORGATE_ACCESS_LOG"], env["TENSORGATE_TRACING"]) == ("false", "false")
    assert not [e for e in container(docs).get("env", []) if e["name"].startswith("OTEL_")]
    values = {
        "server": {"accessLog": {"enabled": True, "sample": 0.25, "slowMs": 100}},
        "tracing": {"enabled": True, "endpoint": "http://otel-collector.observability:4318", "samplerArg": 0.05},
    }
    docs = render_chart(values)
    env = config_env(docs)
    settings = Settings.model_validate(
        {
            k[len("TENSORGATE_") :].lower(): v
            for k, v in env.items()
            if k.startswith("TENSORGATE_ACCESS") or k == "TENSORGATE_TRACING"
        }
    )
    assert (settings.access_log, settings.access_log_sample, settings.access_log_slow_ms, settings.tracing) == (
        True, 0.25, 100.0, True,
    )  # fmt: skip
    otel = {e["name"]: e["value"] for e in container(docs)["env"] if e["name"].startswith("OTEL_")}
    assert otel == {
        "OTEL_SERVICE_NAME": "demo-tensorgate",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.05",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
    }


def test_workers_value() -> None:
    """One process by default; a number or auto reaches the server as TENSORGATE_WORKERS, which it accepts."""
    assert config_env(render_chart())["TENSORGATE_WORKERS"] == "1"
    for workers, count in (("auto", None), (4, 4)):
        env = config_env(render_chart({"server": {"workers": workers}}))
        assert env["TENSORGATE_WORKERS"] == str(workers)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TENSORGATE_WORKERS", env["TENSORGATE_WORKERS"])
            settings = Settings()
        assert settings.worker_count() == (count or settings.worker_count()) >= 1
