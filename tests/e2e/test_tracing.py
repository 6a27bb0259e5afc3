"""OpenTelemetry tracing end to end, into a real OTLP/HTTP receiver: a caller's W3C ``traceparent`` (tritonclient
headers over REST, gRPC metadata) makes the gateway's request span a child of the caller's span, with decode,
queue, compute and encode children; under dynamic batching one compute span per batch links to the requests in it;
and a server without ``--tracing`` creates no span at all, even with an OTLP endpoint configured."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from tests.e2e.conftest import observed_store
from tests.e2e.test_access_log import lines_for
from tests.otlp_receiver import OtlpReceiver, Span
from tests.serving import ServerProcess

X = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)


def caller() -> tuple[str, str, str]:
    """A caller's trace ID, span ID and the traceparent header naming them (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def trace_of(otlp: OtlpReceiver, trace_id: str, names: set[str]) -> dict[str, list[Span]]:
    spans = otlp.wait_for(
        lambda all_: (
            [s for s in all_ if s.trace_id == trace_id]
            if names <= {s.name for s in all_ if s.trace_id == trace_id}
            else []
        )
    )
    out: dict[str, list[Span]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def rest_infer(server: ServerProcess, model: str, headers: dict[str, str]) -> None:
    with th.InferenceServerClient(server.http) as client:
        inp = th.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X, binary_data=True)
        client.infer(model, [inp], headers=headers)


def grpc_infer(server: ServerProcess, model: str, headers: dict[str, str]) -> None:
    client = tg.InferenceServerClient(server.grpc)
    try:
        inp = tg.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X)
        client.infer(model, [inp], headers=headers)
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_request_span_joins_the_callers_trace(observed: ServerProcess, otlp: OtlpReceiver, protocol: str) -> None:
    trace_id, parent, traceparent = caller()
    rid = f"trace-{protocol}-{secrets.token_hex(4)}"
    send = rest_infer if protocol == "rest" else grpc_infer
    send(observed, "dense", {"traceparent": traceparent, "x-request-id": rid})
    spans = trace_of(otlp, trace_id, {"infer dense", "decode", "queue", "compute", "encode"})
    assert set(spans) == {"infer dense", "decode", "queue", "compute", "encode"}, set(spans)
    (request,) = spans["infer dense"]
    assert request.parent_span_id == parent  # the caller's span
    assert request.kind == 2  # SERVER
    assert request.service == "tensorgate-e2e"
    assert request.attributes["tensorgate.protocol"] == protocol
    assert request.attributes["tensorgate.request_id"] == rid
    assert (request.attributes["tensorgate.model"], request.attributes["tensorgate.code"]) == ("dense", "OK")
    for name in ("decode", "queue", "compute", "encode"):
        (child,) = spans[name]
        assert child.parent_span_id == request.span_id
        assert request.start_ns <= child.start_ns <= child.end_ns <= request.end_ns
    (line,) = lines_for(observed, rid)
    assert line["trace_id"] == trace_id  # the log line points at the trace


def test_failed_request_is_traced_with_error_status(observed: ServerProcess, otlp: OtlpReceiver) -> None:
    trace_id, parent, traceparent = caller()
    with pytest.raises(Exception, match=r"unknown model|not found"):
        rest_infer(observed, "nope", {"traceparent": traceparent})
    spans = trace_of(otlp, trace_id, {"infer nope"})
    (request,) = spans["infer nope"]
    assert request.parent_span_id == parent
    assert request.status_code == 2  # ERROR
    assert request.attributes["tensorgate.code"] == "NOT_FOUND"


def test_batched_compute_span_links_the_requests_in_it(observed: ServerProcess, otlp: OtlpReceiver) -> None:
    callers = [caller() for _ in range(6)]
    start = threading.Barrier(len(callers))

    def one(traceparent: str) -> None:
        start.wait()
        grpc_infer(observed, "batched", {"traceparent": traceparent})

    threads = [threading.Thread(target=one, args=(tp,)) for _, _, tp in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    requests: dict[str, Span] = {}
    for trace_id, parent, _ in callers:
        spans = trace_of(otlp, trace_id, {"infer batched", "queue", "encode"})
        (request,) = spans["infer batched"]
        assert request.parent_span_id == parent
        requests[request.span_id] = request
    trace_ids = {t for t, _, _ in callers}
    computes = otlp.wait_for(
        lambda all_: [s for s in all_ if s.name == "compute" and any(t in trace_ids for t, _ in s.links)]
    )
    linked: dict[str, Span] = {}
    for compute in computes:
        assert compute.attributes["tensorgate.batch.requests"] == len(compute.links)
        assert compute.parent_span_id in {span_id for _, span_id in compute.links}  # child of its first request
        for _trace, span_id in compute.links:
            linked[span_id] = compute
    assert set(linked) == set(requests)  # every request's batch, once
    assert max(len(c.links) for c in computes) >= 2  # requests did share a runtime call


def test_tracing_off_creates_no_span(tmp_path: Path, otlp: OtlpReceiver, observed: ServerProcess) -> None:
    """A server without --tracing exports nothing, though an endpoint is configured and callers send traceparent;
    the traced server, sent the same requests, does export (so the receiver was listening)."""
    store = observed_store(tmp_path / "store")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    plain = ServerProcess(store, tmp_path, ["--poll-interval", "0"], env=env).start()
    try:
        untraced = [caller() for _ in range(3)]
        for _, _, traceparent in untraced:
            rest_infer(plain, "dense", {"traceparent": traceparent})
            grpc_infer(plain, "dense", {"traceparent": traceparent})
        control, _, traceparent = caller()
        rest_infer(observed, "dense", {"traceparent": traceparent})
        assert trace_of(otlp, control, {"infer dense"})  # exported within the same time
        time.sleep(0.5)
        ids = {t for t, _, _ in untraced}
        assert [s for s in otlp.spans if s.trace_id in ids] == []
    finally:
        plain.stop()
