"""V2 REST codec: JSON and Triton's binary tensor extension <-> InferRequest / InferResponse.

No FastAPI here: pure bytes in, bytes out, so the hot path parses with orjson and numpy only
(zero-copy ``np.frombuffer`` for binary tensors).
"""

from __future__ import annotations

import gzip
import time
import zlib
from typing import Any

import numpy as np
import orjson

from gateway.core.errors import InvalidInput, PayloadTooLarge
from gateway.core.raw import from_raw, to_raw
from gateway.core.shared_memory import SharedInput, shared_slice
from gateway.core.types import DATATYPES, InferRequest, InferResponse, RequestedOutput, Tensor, element_count

HEADER_LENGTH = "inference-header-content-length"
_JSON_FORBIDDEN = {"FP16", "BF16"}


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate (deflate = zlib stream); reject others."""
    encoding = (encoding or "").strip().lower()  # content codings are case-insensitive
    if not encoding or encoding == "identity":
        return body
    try:
        if encoding == "gzip":
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            stream = zlib.decompressobj()
        else:
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or identity")
        out = stream.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding} data: {exc}") from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not stream.eof:  # cut short: the checksum was never verified
        raise InvalidInput(f"request body is truncated {encoding} data")
    return out


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    if not accept_encoding:
        return body, None
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 1), "deflate"
    return body, None


def _header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {value!r}") from None
    if n < 0 or n > body_length:
        raise InvalidInput(f"Inference-Header-Content-Length {n} is outside the request body of {body_length} bytes")
    return n


def decode_request(
    body: bytes,
    header_length: str | None,
    model: str,
    version: str | None,
    raw_input: tuple[str, str, list[int]] | None = None,
) -> InferRequest:
    """Parse a V2 infer body. ``raw_input`` (name, datatype, shape) serves header length 0 (no JSON part)."""
    n = _header_length(header_length, len(body))
    if n == 0:
        if raw_input is None:
            raise InvalidInput("a raw binary request (header length 0) needs a model with exactly one input")
        name, datatype, shape = raw_input
        array = from_raw(memoryview(body), name, datatype, shape)
        return InferRequest(
            model=model, version=version, inputs=[Tensor(name, array)],
            parameters={"binary_data_output": True},
        )  # fmt: skip
    json_part = body if n is None else body[:n]
    binary = memoryview(body)[n:] if n is not None else memoryview(b"")
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    offset = 0
    tensors: list[Tensor] = []
    shared: list[SharedInput] = []
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, datatype, shape and data")
        name, datatype, shape = _tensor_header(item, f"inputs[{i}]")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"input {name!r}: 'parameters' must be an object")
        where = shared_slice(params, f"input {name!r}")
        size = params.get("binary_data_size")
        if where is not None:
            if "data" in item or size is not None:
                raise InvalidInput(
                    f"input {name!r}: give exactly one of 'data', parameters.binary_data_size and "
                    "parameters.shared_memory_region"
                )
            shared.append(SharedInput(name, datatype, shape, where))
            continue
        if size is not None:
            if not isinstance(size, int) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} runs past the end of the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            array = from_raw(binary[offset : offset + size], name, datatype, shape)
            offset += size
        else:
            if "data" not in item:
                raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            array = _from_json(item["data"], name, datatype, shape)
        tensors.append(Tensor(name, array))
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object")
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list of {name, parameters}")
        outputs = []
        for j, out in enumerate(raw_outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InvalidInput(f"outputs[{j}] must be an object with a string 'name'")
            oparams = out.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise InvalidInput(f"output {out['name']!r}: 'parameters' must be an object")
            shared_slice(oparams, f"output {out['name']!r}")  # complete and well-typed (the DataPlane reads it)
            outputs.append(RequestedOutput(out["name"], oparams))
    request_id = doc.get("id")
    request = InferRequest(
        model=model,
        version=version,
        id=str(request_id) if request_id is not None else None,
        inputs=tensors,
        outputs=outputs,
        parameters=params,
        shared_inputs=shared,
    )
    timeout = params.get("timeout")
    if timeout is not None:
        if not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidInput("parameters.timeout must be a non-negative number of microseconds")
        if timeout > 0:
            request.deadline = time.monotonic() + float(timeout) / 1e6
    return request


def _tensor_header(item: dict[str, Any], where: str) -> tuple[str, str, list[int]]:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}: 'name' must be a non-empty string")
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return name, datatype, shape


def _from_json(data: Any, name: str, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype in _JSON_FORBIDDEN:
        raise InvalidInput(f"input {name!r}: {datatype} cannot be sent as JSON; use the binary tensor extension")
    count = element_count(shape)
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r}: {len(flat)} values given, shape {shape} needs {count}")
        out = np.empty(count, dtype=np.object_)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                out[i] = v.encode("utf-8")
            elif isinstance(v, bytes):
                out[i] = v
            else:
                raise InvalidInput(f"input {name!r}: BYTES data must be strings, got {type(v).__name__}")
        return out.reshape(shape)
    dt = DATATYPES[datatype].numpy
    try:
        if datatype == "BOOL":
            array = _bools(data, name)
        else:
            probe = np.asarray(data)  # numbers only: numpy would also parse strings such as "NaN" or "12"
            if probe.dtype.kind not in "biuf":
                raise InvalidInput(f"input {name!r}: data is not a valid {datatype} array: values must be JSON numbers")
            array = probe.astype(dt, copy=False) if dt.kind == "f" else np.asarray(data, dtype=dt)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidInput(f"input {name!r}: data is not a valid {datatype} array: {exc}") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} values given, shape {shape} needs {count}")
    if array.ndim > 1 and list(array.shape) != shape:
        raise InvalidInput(f"input {name!r}: nested data has shape {list(array.shape)}, declared shape {shape}")
    return array.reshape(shape)


def _bools(data: Any, name: str) -> np.ndarray:
    flat = _flatten(data)
    if not all(isinstance(v, bool) for v in flat):
        raise InvalidInput(f"input {name!r}: BOOL data must be true/false")
    return np.asarray(flat, dtype=np.bool_)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _json_data(tensor: Tensor) -> list[Any]:
    data = tensor.data
    if data.dtype == np.object_ or data.dtype.kind in ("S", "U"):
        return [(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for v in data.reshape(-1).tolist()]
    if tensor.datatype in _JSON_FORBIDDEN:
        return data.astype(np.float32).reshape(-1).tolist()  # type: ignore[no-any-return]
    return data.reshape(-1).tolist()  # type: ignore[no-any-return]


def encode_response(response: InferResponse, binary_default: bool) -> tuple[bytes, int | None]:
    """Returns (body, json_length) where json_length is set when binary outputs follow the JSON part."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        if tensor.name in response.shared_outputs:  # in the client's shared memory: the header only, as Triton
            outputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape})
            continue
        req = response.requested.get(tensor.name)
        binary = binary_default
        if req is not None and "binary_data" in req.parameters:
            binary = bool(req.parameters["binary_data"])
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if binary:
            raw = to_raw(tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model,
        "model_version": response.version,
        "outputs": outputs,
    }
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)
