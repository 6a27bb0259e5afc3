"""TensorFlow Serving REST API (/v1/models/...): status, metadata, :predict, :classify, :regress.

Thin adapters over the DataPlane: every model is reachable, whatever its runtime. Errors use TF Serving's shape
(``{"error": ...}``); TF Serving's HTTP codes for each status are exactly the ones in ``gateway.errors.STATUS_TABLE``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, InvalidInput
from gateway.rest import tfserving_codec as codec
from gateway.rest.body import read_body
from gateway.tfserving_results import check_signature, version_state
from gateway.types import InferRequest, InferResponse, Tensor
from runtimes.base import CLASSIFY_METHOD, REGRESS_METHOD

router = APIRouter()

_PATH = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$",
    re.IGNORECASE,
)


def _target(request: Request) -> dict[str, Any]:
    match = _PATH.match(request.url.path)
    if match is None:
        raise InvalidInput(f"Malformed request: {request.method} {request.url.path}")
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
    t = _target(request)
    try:
        return await _post(request, dp, t, received)
    except GatewayError as exc:
        if not exc.recorded:
            dp.reject(t["model"], t["version"], "tfs_rest", exc, received)
        raise


async def _post(request: Request, dp: DataPlane, t: dict[str, Any], received: float) -> Response:
    verb = (t["verb"] or "").lower()
    if t["metadata"] or verb not in ("predict", "classify", "regress"):
        raise InvalidInput(f"Malformed request: POST {request.url.path}")
    doc = codec.loads(await read_body(request))
    model = dp.model(t["model"], t["version"], t["label"])
    signature = dp.signature(model, codec.signature_name(doc))
    if verb == "predict":
        parsed = codec.decode_predict(doc, signature.inputs)
        inputs = parsed.inputs

        def encode(response: InferResponse) -> Response:
            return _json(codec.encode_predict({o.name: o.data for o in response.outputs}, parsed.row_format))

    else:
        method = CLASSIFY_METHOD if verb == "classify" else REGRESS_METHOD
        input_name = check_signature(signature, method)
        examples = codec.decode_examples(doc, verb)
        inputs = {input_name: examples}
        encoder = codec.encode_classify if verb == "classify" else codec.encode_regress

        def encode(response: InferResponse) -> Response:
            return _json(encoder({o.name: o.data for o in response.outputs}, len(examples)))

    req = InferRequest(
        model=t["model"],
        version=str(model.version),
        inputs=[Tensor(name, array) for name, array in inputs.items()],
        signature=signature.name,
        protocol="tfs_rest",
        received=received,
    )
    result: Response = await dp.infer(req, encode)
    return result
