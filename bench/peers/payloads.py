"""Request bodies of the comparison (V2 JSON, V2 binary extension, gRPC frames) and decoding of the replies."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
from tritonclient.grpc import service_pb2

INPUT = "input"
OUTPUT = "output"


def json_body(x: np.ndarray) -> bytes:
    """A V2 REST request with the tensor inline as a JSON list (what every server accepts)."""
    return orjson.dumps(
        {"inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    )


def binary_body(x: np.ndarray) -> tuple[bytes, int]:
    """A V2 REST request using the binary tensor extension, asking for a binary output too.

    Returns (body, length of its JSON header) for the ``Inference-Header-Content-Length`` header."""
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": INPUT,
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
        }
    )
    return header + raw, len(header)


def grpc_request(model: str, x: np.ndarray) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest carrying the tensor in raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = INPUT
    tensor.datatype = "FP32"
    tensor.shape.extend(x.shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return request


def grpc_frame(message: bytes) -> bytes:
    """The gRPC length-prefixed message: a zero (uncompressed) byte, then the big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def decode_rest(body: bytes, header_length: str | None) -> np.ndarray:
    """The ``output`` tensor of a V2 REST response, JSON or binary extension."""
    if header_length is None:
        doc = json.loads(body)
        raw_bytes = b""
    else:
        n = int(header_length)
        doc, raw_bytes = json.loads(body[:n]), body[n:]
    offset = 0
    for out in doc["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk, offset = raw_bytes[offset : offset + size], offset + size
        if out["name"] != OUTPUT:
            continue
        if size is not None:
            return np.frombuffer(chunk, dtype=np.float32).reshape(out["shape"])
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    raise ValueError(f"no output named {OUTPUT!r} in {sorted(o['name'] for o in doc['outputs'])}")


def decode_grpc(response: service_pb2.ModelInferResponse) -> np.ndarray:
    """The ``output`` tensor of a ModelInferResponse (raw_output_contents or typed contents)."""
    for i, out in enumerate(response.outputs):
        if out.name != OUTPUT:
            continue
        shape = list(out.shape)
        if len(response.raw_output_contents) > i:
            return np.frombuffer(response.raw_output_contents[i], dtype=np.float32).reshape(shape)
        return np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(shape)
    raise ValueError(f"no output named {OUTPUT!r} in {[o.name for o in response.outputs]}")
