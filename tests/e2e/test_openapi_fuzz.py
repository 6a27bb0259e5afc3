"""The served OpenAPI document is complete (V2 infer, TF Serving routes, their errors) and schemathesis, fuzzing a
real server from it (bounded: a few examples per operation), finds no server error on any operation."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.serving import ServerProcess


def test_the_document_lists_every_route_group(server: ServerProcess) -> None:
    doc = httpx.get(f"{server.http_url}/openapi.json").json()
    paths = doc["paths"]
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer", "/v1/models/{model}:predict",
                 "/v1/models/{model}/labels/{label}:classify", "/v2/repository/models/{model}/unload", "/metrics"):  # fmt: skip
        assert path in paths, path
    infer = paths["/v2/models/{model}/infer"]["post"]
    assert {"400", "401", "403", "404", "413", "429", "503", "504"} <= set(infer["responses"])
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferRequest"
    }
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_no_operation_answers_a_server_error(server: ServerProcess) -> None:
    """Every operation of the served document, each with a bounded number of generated requests (schemathesis
    strategies driven by hypothesis here, one operation after the other)."""
    api = schemathesis.openapi.from_url(f"{server.http_url}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    statuses: dict[int, int] = {}
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1
        declared = set(operation.definition.raw.get("responses", {}))

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def fuzz(case: Any) -> None:
            response = case.call()
            # a documented 501 is an answer, not a crash (fuzz runs within this iteration: ``declared`` is its own)
            if response.status_code != 501 or "501" not in declared:  # noqa: B023
                case.validate_response(response, checks=[not_a_server_error])
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            fuzz()
        except Exception as exc:
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:800]}"
    assert operations >= 30  # 17 V2 + 12 TF Serving + metrics + the document
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
    assert sum(statuses.values()) > 5 * operations and {200, 400, 404} <= set(statuses), statuses
