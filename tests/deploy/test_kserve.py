"""The KServe ServingRuntime: the fields of KServe's ServingRuntimeSpec (serving.kserve.io/v1alpha1) only, its
container valid as a Kubernetes container, and arguments the server accepts that serve /mnt/models."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from gateway.cli.main import build_parser
from gateway.server.settings import Settings
from tests.deploy.manifests import DEPLOY, KUBE_VERSIONS

SERVING_RUNTIME = DEPLOY / "kserve" / "servingruntime.yaml"
INFERENCE_SERVICE = DEPLOY / "kserve" / "inferenceservice-example.yaml"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LIST = {"type": "array", "items": {"type": "object"}}

#: ServingRuntimeSpec as KServe declares it (pkg/apis/serving/v1alpha1/servingruntime_types.go): unknown fields
#: are errors here. Containers, volumes, affinity and tolerations are core types, checked by kubernetes-validate.
SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["containers"],
    "properties": {
        "supportedModelFormats": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "version": {"type": "string", "pattern": r"^\d+(\.\d+){0,2}$"},
                    "autoSelect": {"type": "boolean"},
                    "priority": {"type": "integer", "minimum": 1},
                },
            },
        },
        "multiModel": {"type": "boolean"},
        "disabled": {"type": "boolean"},
        "protocolVersions": {
            "type": "array",
            "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
            "uniqueItems": True,
        },
        "workerSpec": {"type": "object"},
        "containers": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "volumes": _LIST,
        "nodeSelector": _STRING_MAP,
        "affinity": {"type": "object"},
        "tolerations": _LIST,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "imagePullSecrets": _LIST,
        "hostIPC": {"type": "boolean"},
        "grpcEndpoint": {"type": "string"},
        "grpcDataEndpoint": {"type": "string"},
        "httpDataEndpoint": {"type": "string"},
        "replicas": {"type": "integer", "minimum": 0, "maximum": 65535},
        "storageHelper": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"disabled": {"type": "boolean"}},
        },
        "builtInAdapter": {"type": "object"},
    },
}


def runtime() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SERVING_RUNTIME.read_text())
    return doc


def serve_settings(args: list[str]) -> Settings:
    """The Settings `tensorgate serve ARGS` would run with (the image's entry point is `tensorgate serve`)."""
    parsed = build_parser().parse_args(["serve", *args])
    overrides = {k: v for k, v in vars(parsed).items() if k not in ("command", "func") and v is not None}
    return Settings(**overrides)


def test_serving_runtime_spec_has_only_kserve_fields() -> None:
    doc = runtime()
    assert doc["apiVersion"] == "serving.kserve.io/v1alpha1" and doc["kind"] == "ServingRuntime"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    jsonschema.validate(doc["spec"], SPEC_SCHEMA)
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, KUBE_VERSIONS[-1], strict=True
    )


def test_model_formats_and_protocols() -> None:
    spec = runtime()["spec"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"onnx", "tensorflow", "pytorch"}
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]


def test_container_is_a_valid_kubernetes_container() -> None:
    spec = runtime()["spec"]
    [container] = spec["containers"]
    assert container["name"] == "kserve-container", "KServe finds the model server by this name"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tensorgate", "annotations": spec["annotations"]},
        "spec": {"containers": [container]},
    }
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_arguments_serve_the_storage_initializer_layout() -> None:
    spec = runtime()["spec"]
    [container] = spec["containers"]
    settings = serve_settings(container["args"])
    assert settings.store == "/mnt/models", "KServe's storage initializer downloads storageUri to /mnt/models"
    assert (settings.http_port, settings.grpc_port) == (8080, 9000), "KServe routes REST to 8080, gRPC to 9000"
    assert settings.model_control == "none", "the storage initializer fetches once; nothing to poll"
    assert container["ports"][0]["containerPort"] == settings.http_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": settings.http_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": settings.http_port}
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(settings.metrics_port)
    assert container["securityContext"]["runAsNonRoot"] is True


def test_example_inference_service_uses_the_runtime() -> None:
    isvc = yaml.safe_load(INFERENCE_SERVICE.read_text())
    model = isvc["spec"]["predictor"]["model"]
    spec = runtime()["spec"]
    assert model["runtime"] == runtime()["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert model["storageUri"].startswith("s3://")
