"""Bench inputs: what each request carries — the model's golden samples (their own free dimensions, e.g. the
sequence lengths of a text model), a user's file in perf_analyzer's ``--input-data`` JSON format, or random
tensors (free dimensions other than the batch set to 1). Each sample becomes one pre-encoded request; the load
cycles through them."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from gateway.cli.bench.load import InputTensor
from gateway.core.types import DATATYPES

Sample = list[InputTensor]


class InputError(ValueError):
    """An input file or sample that does not fit the model; the message names the input and what is wrong."""


def encode(name: str, datatype: str, array: np.ndarray) -> InputTensor:
    """A numpy array as a V2 binary-extension input."""
    if datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(array, dtype=object).ravel()]
        data = b"".join(struct.pack("<I", len(item)) + item for item in items)
        return InputTensor(name, datatype, tuple(array.shape), data)
    dtype = DATATYPES[datatype].numpy
    return InputTensor(name, datatype, tuple(array.shape), np.ascontiguousarray(array, dtype=dtype).tobytes())


def with_batch(array: np.ndarray, batch: int | None) -> np.ndarray:
    """``array`` with ``batch`` rows (its rows repeated in turn), or as it is when ``batch`` is None."""
    if batch is None or array.ndim == 0 or array.shape[0] == batch:
        return array
    return np.take(array, np.arange(batch) % array.shape[0], axis=0)


def golden_samples(store_uri: str, model: str, specs: Sequence[dict[str, Any]], batch: int | None) -> list[Sample]:
    """The model's golden samples as requests ([] when it has none)."""
    from model_store import open_store
    from model_store.golden import load_golden

    samples = load_golden(open_store(store_uri), model)
    out: list[Sample] = []
    for k, (inputs, _outputs) in enumerate(samples):
        sample = []
        for spec in specs:
            if spec["name"] not in inputs:
                raise InputError(f"golden sample {k} of {model!r} has no input {spec['name']!r}")
            sample.append(encode(spec["name"], spec["datatype"], with_batch(inputs[spec["name"]], batch)))
        out.append(sample)
    return out


def perf_analyzer_samples(path: Path, specs: Sequence[dict[str, Any]], batch: int) -> list[Sample]:
    """``{"data": [{"<input>": [values] | {"content": [...], "shape": [...]} | {"b64": "..."}}, ...]}`` — the
    format of perf_analyzer's ``--input-data``. A shape without the batch dimension (as perf_analyzer writes it
    for batching models) gets ``batch`` prepended; without a shape, the model's shape is used with the batch first
    and one other free dimension taken from the number of values."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"--input-data {path}: {exc}") from None
    rows = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise InputError(f'--input-data {path}: expected {{"data": [{{"<input>": ...}}, ...]}}')
    out: list[Sample] = []
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"--input-data {path}: data[{k}] is not an object")
        sample = []
        for spec in specs:
            if spec["name"] not in row:
                raise InputError(f"--input-data {path}: data[{k}] has no input {spec['name']!r}")
            array = _array(row[spec["name"]], spec, batch, f"data[{k}].{spec['name']}")
            sample.append(encode(spec["name"], spec["datatype"], array))
        out.append(sample)
    return out


def _array(value: Any, spec: dict[str, Any], batch: int, where: str) -> np.ndarray:
    datatype, model_shape = spec["datatype"], [int(d) for d in spec["shape"]]
    shape = None
    if isinstance(value, dict):
        shape = value.get("shape")
        if "b64" in value:
            raw = base64.b64decode(value["b64"])
            if datatype == "BYTES":
                raise InputError(f"{where}: b64 content for a BYTES input is not supported; give a list of strings")
            flat = np.frombuffer(raw, dtype=DATATYPES[datatype].numpy)
        elif "content" in value:
            flat = np.asarray(value["content"], dtype=object if datatype == "BYTES" else DATATYPES[datatype].numpy)
        else:
            raise InputError(f"{where}: an object needs 'content' or 'b64'")
    else:
        flat = np.asarray(value, dtype=object if datatype == "BYTES" else DATATYPES[datatype].numpy)
    flat = flat.ravel()
    if shape is not None:
        shape = [int(d) for d in shape]
        if len(shape) == len(model_shape) - 1 and model_shape and model_shape[0] == -1:
            shape = [1, *shape]
    else:
        shape = [1 if (i == 0 and d == -1) else d for i, d in enumerate(model_shape)]
        free = [i for i, d in enumerate(shape) if d == -1]
        known = int(np.prod([d for d in shape if d != -1])) if shape else 1
        if len(free) > 1:
            raise InputError(f"{where}: the model's shape {model_shape} has several free dimensions; give 'shape'")
        if free:
            if known == 0 or flat.size % known:
                raise InputError(f"{where}: {flat.size} values do not fill shape {model_shape}")
            shape[free[0]] = flat.size // known
    if int(np.prod(shape)) != flat.size:
        raise InputError(f"{where}: {flat.size} values do not fill shape {shape}")
    return with_batch(flat.reshape(shape), batch if model_shape and model_shape[0] == -1 else None)
