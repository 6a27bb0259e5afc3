"""Bench requests: random inputs shaped from metadata, encoded so that the gateway's own codecs decode them."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.cli.bench.load import concrete_shape, random_inputs, rest_payload
from gateway.grpc.client import grpc_payload
from gateway.grpc.codec import decode_request as decode_grpc
from gateway.rest.codec import decode_request as decode_rest

SPECS = [
    {"name": "x", "datatype": "FP32", "shape": [-1, 16]},
    {"name": "mask", "datatype": "BOOL", "shape": [-1, -1]},
    {"name": "ids", "datatype": "INT64", "shape": [3]},
    {"name": "text", "datatype": "BYTES", "shape": [-1]},
    {"name": "h", "datatype": "BF16", "shape": [-1, 2]},
]


def test_free_dims_become_batch_first_and_one_elsewhere() -> None:
    assert concrete_shape([-1, 16], 8) == (8, 16)
    assert concrete_shape([-1, -1, 3], 4) == (4, 1, 3)
    assert concrete_shape([3], 8) == (3,)


@pytest.mark.parametrize("decode", ["rest", "grpc"])
def test_requests_decode_to_the_same_tensors_in_the_gateway(decode: str) -> None:
    inputs = random_inputs(SPECS, batch=3, seed=1)
    if decode == "rest":
        body, headers = rest_payload(inputs)
        request = decode_rest(body, headers["Inference-Header-Content-Length"], "m", None)
        assert request.parameters["binary_data_output"] is True
    else:
        request = decode_grpc(grpc_payload("m", inputs), None)
    decoded = {t.name: t for t in request.inputs}
    assert list(decoded) == [s["name"] for s in SPECS]
    assert decoded["x"].data.shape == (3, 16) and decoded["x"].data.dtype == np.float32
    assert decoded["mask"].data.shape == (3, 1) and decoded["mask"].data.dtype == np.bool_
    assert decoded["ids"].data.shape == (3,)
    assert decoded["text"].data.shape == (3,) and all(v.startswith(b"tg-") for v in decoded["text"].data)
    assert decoded["h"].datatype == "BF16"
    assert np.isfinite(decoded["x"].data).all() and decoded["x"].data.std() > 0
