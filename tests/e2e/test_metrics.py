"""Metrics after real traffic: counts, bucket totals and labels for a model on each runtime, over both protocols;
SLA targets as bucket boundaries; a flood of unknown model names adds no label values."""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from prometheus_client.parser import text_string_to_metric_families

from tests.onnx_models import dense_model
from tests.serving import ServerProcess
from tests.tf_models import MLP_INPUT, build_keras_savedmodel
from tests.torch_models import shared_torch_store

N = 7
RUNTIMES = {
    "dense": ("onnx", "x", (1, 16)),
    "mlp_torch_export": ("torch_export", "x", (1, 784)),
    "mlp_torch_aoti": ("torch_aoti", "x", (1, 784)),
    "keras_mlp": ("tf_savedmodel", MLP_INPUT, (1, 16)),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    torch_store, _ = shared_torch_store(tmp_path_factory)
    root = tmp_path_factory.mktemp("metrics_store")
    for name in ("mlp_torch_export", "mlp_torch_aoti"):
        shutil.copytree(torch_store / name, root / name)
    dense_model(root / "dense" / "1" / "model.onnx")
    build_keras_savedmodel(root, "keras_mlp")
    for name in RUNTIMES:
        (root / name / "config.yaml").write_text(
            (root / name / "config.yaml").read_text() if (root / name / "config.yaml").exists() else ""
        )
        with open(root / name / "config.yaml", "a") as fh:
            fh.write("\nsla: {p99_ms: 20, p50_ms: 7}\nwarmup: {enabled: false}\n")
    proc = ServerProcess(root, tmp_path_factory.mktemp("metrics_server"), ["--poll-interval", "0"]).start(timeout=300)
    yield proc
    proc.stop()


def _samples(server: ServerProcess) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _drive(server: ServerProcess) -> None:
    for model, (_runtime, input_name, shape) in RUNTIMES.items():
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        for module, address in ((th, server.http), (tg, server.grpc)):
            client = module.InferenceServerClient(address)  # type: ignore[attr-defined]
            inp = module.InferInput(input_name, list(shape), "FP32")  # type: ignore[attr-defined]
            inp.set_data_from_numpy(x)
            for _ in range(N):
                client.infer(model, [inp])


def test_counts_buckets_and_labels_per_runtime_and_protocol(server: ServerProcess) -> None:
    _drive(server)
    samples = _samples(server)
    for model, (runtime, _input, _shape) in RUNTIMES.items():
        for protocol in ("rest", "grpc"):
            labels = {"model": model, "version": "1", "runtime": runtime, "protocol": protocol}

            def value(name: str, extra: dict[str, str] | None = None, labels: dict[str, str] = labels) -> float:
                want = {**labels, **(extra or {})}
                found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in want.items())]
                assert found, f"no {name} {want}"
                return found[0]

            assert value("tensorgate_requests_total", {"code": "OK"}) == N
            for stage in ("request", "queue", "compute", "overhead"):
                assert value(f"tensorgate_{stage}_duration_seconds_count") == N
                assert value(f"tensorgate_{stage}_duration_seconds_bucket", {"le": "+Inf"}) == N
            buckets = sorted(
                (float(lab["le"]), v)
                for n, lab, v in samples
                if n == "tensorgate_request_duration_seconds_bucket" and all(lab.get(k) == x for k, x in labels.items())
            )
            counts = [v for _le, v in buckets]
            assert counts == sorted(counts), "buckets must be cumulative"
            assert {0.02, 0.007} <= {le for le, _v in buckets}, "the SLA targets are bucket boundaries"
            assert value("tensorgate_request_duration_seconds_sum") > 0
        state = [
            v
            for n, lab, v in samples
            if n == "tensorgate_model_state" and lab["model"] == model and lab["state"] == "READY"
        ]
        assert state == [1.0]
        sla = {
            lab["objective"]: v
            for n, lab, v in samples
            if n == "tensorgate_sla_target_seconds" and lab["model"] == model
        }
        assert sla == {"p99": 0.02, "p50": 0.007}
        assert any(
            n == "tensorgate_model_load_duration_seconds_count" and lab["runtime"] == runtime for n, lab, _ in samples
        )


def test_unknown_names_do_not_add_label_values(server: ServerProcess) -> None:
    def model_labels() -> set[str]:
        return {lab["model"] for n, lab, _ in _samples(server) if "model" in lab}

    client = th.InferenceServerClient(server.http)
    inp = th.InferInput("x", [1, 16], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 16), np.float32))
    client.infer("dense", [inp])
    before = model_labels()
    for i in range(150):
        httpx.post(f"{server.http_url}/v2/models/attack_{i}/infer", json={"inputs": []}, timeout=10)
        httpx.post(f"{server.http_url}/v2/models/dense/versions/{1000 + i}/infer", content=b"{}", timeout=10)
    after = model_labels()
    assert after - before <= {"_unknown"}
    per_code: dict[str, float] = defaultdict(float)
    dense_versions: dict[str, float] = defaultdict(float)
    for n, lab, v in _samples(server):
        if n == "tensorgate_requests_total" and lab["model"] == "_unknown":
            per_code[lab["code"]] += v
        if n == "tensorgate_requests_total" and lab["model"] == "dense" and lab["protocol"] == "rest":
            dense_versions[lab["version"]] += v
    assert sum(per_code.values()) >= 150
    # unknown versions of a known model stay under its name, in one version label
    assert set(dense_versions) <= {"1", "_unknown"} and dense_versions["_unknown"] >= 150
