"""TensorFlow Serving REST API (/v1/models/...): status, metadata, :predict, :classify, :regress.

Thin adapters over the DataPlane: every model is reachable, whatever its runtime. Errors use TF Serving's shape
(``{"error": ...}``); TF Serving's HTTP codes for each status are exactly those of ``gateway.core.errors``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.core.dataplane import DataPlane
from gateway.core.errors import InvalidInput
from gateway.core.exchange import ROUTE_KEY_HEADER, VARIANT_HEADER, VARIANT_PARAMETER, Exchange, Origin, request_id
from gateway.core.tfserving import check_signature, version_state
from gateway.core.types import InferRequest, InferResponse, Tensor
from gateway.rest import tfserving_codec as codec
from gateway.rest.body import request_body
from runtimes.base import CLASSIFY_METHOD, REGRESS_METHOD

router = APIRouter()

_PATH = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$",
    re.IGNORECASE,
)


def _target(request: Request, strict: bool = True) -> dict[str, Any]:
    """The path's parts; a path that names no model is InvalidInput (or, not ``strict``, a target without one)."""
    match = _PATH.match(request.url.path)
    if match is None:
        if strict:
            raise InvalidInput(f"Malformed request: {request.method} {request.url.path}")
        return {"model": "", "version": None, "label": None, "metadata": None, "verb": None}
    return match.groupdict()


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.get("/v1/models/{rest:path}")
async def get(request: Request) -> Response:
    dp: DataPlane = request.app.state.dataplane
    t = _target(request)
    if t["verb"]:
        raise InvalidInput(f"Malformed request: GET {request.url.path}")
    if t["metadata"]:
        model, signatures = dp.signatures(t["model"], t["version"], t["label"])
        return _json(codec.encode_metadata(t["model"], model.version, signatures))
    rows = dp.version_status(t["model"], t["version"], t["label"])
    return _json(codec.encode_status([(v, version_state(state), reason) for v, state, reason in rows]))


@router.post("/v1/models/{rest:path}")
async def post(request: Request) -> Response:
    received = time.perf_counter()
    dp: DataPlane = request.app.state.dataplane
    t = _target(request, strict=False)  # even a malformed one is counted, by the data plane
    headers = request.headers
    origin = Origin(
        request_id(headers.get("x-request-id")), headers.get("traceparent"), headers.get("tracestate"), request.client
    )
    origin.route_key = headers.get(ROUTE_KEY_HEADER)
    call = _PostCall(request, t, origin)
    result: Response = await dp.infer(
        "tfs_rest", call.decode, call.encode, name=t["model"], version=t["version"], received=received, origin=origin
    )
    result.headers["x-request-id"] = origin.request_id or ""
    return result


class _PostCall:
    """One :predict / :classify / :regress request: the decoder picks the signature, the encoder answers in the
    request's own format."""

    def __init__(self, request: Request, target: dict[str, Any], origin: Origin) -> None:
        self.request = request
        self.origin = origin
        self.target = target
        self.verb = (target["verb"] or "").lower()
        self.row_format = False
        self.examples = 0

    async def decode(self, x: Exchange) -> InferRequest:
        t, verb = self.target, self.verb
        if not t["model"] or t["metadata"] or verb not in ("predict", "classify", "regress"):
            raise InvalidInput(f"Malformed request: POST {self.request.url.path}")
        body = await request_body(self.request)
        self.origin.request_bytes = len(body)
        doc = codec.loads(body)
        try:
            return self._decode(x, doc)
        except RecursionError:  # data nested deeper than any tensor's rank, walked by the codec
            raise InvalidInput(codec.NESTING) from None

    def _decode(self, x: Exchange, doc: dict[str, Any]) -> InferRequest:
        t, verb = self.target, self.verb
        model = x.resolve(t["model"], t["version"], t["label"])
        signature = model.signature_for(codec.signature_name(doc))
        if verb == "predict":
            parsed = codec.decode_predict(doc, signature.inputs)
            inputs = parsed.inputs
            self.row_format = parsed.row_format
        else:
            input_name = check_signature(signature, CLASSIFY_METHOD if verb == "classify" else REGRESS_METHOD)
            examples = codec.decode_examples(doc, verb)
            self.examples = len(examples)
            inputs = {input_name: examples}
        return InferRequest(
            model=model.name,
            version=str(model.version),
            inputs=[Tensor(name, array) for name, array in inputs.items()],
            signature=signature.name,
        )

    def encode(self, response: InferResponse) -> Response:
        outputs = {o.name: o.data for o in response.outputs}
        if self.verb == "predict":
            body = codec.encode_predict(outputs, self.row_format)
        else:
            encoder = codec.encode_classify if self.verb == "classify" else codec.encode_regress
            body = encoder(outputs, self.examples)
        self.origin.response_bytes = len(body)
        reply = _json(body)
        variant = response.parameters.get(VARIANT_PARAMETER)
        if variant:
            reply.headers[VARIANT_HEADER] = str(variant)
        return reply
