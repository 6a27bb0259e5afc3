"""The classification extension: an output requested with ``classification: k`` becomes its top-k classes as
``"value:index"`` BYTES, per row."""

from __future__ import annotations

import numpy as np

from gateway.core.errors import InvalidInput
from gateway.core.types import InferResponse, RequestedOutput, Tensor


def apply_classification(response: InferResponse) -> None:
    """The classification extension: an output with ``classification: k`` becomes top-k "value:index" BYTES."""
    for i, tensor in enumerate(response.outputs):
        req: RequestedOutput | None = response.requested.get(tensor.name)
        if req is None:
            continue
        k_raw = req.parameters.get("classification")
        if k_raw is None or k_raw is False:
            continue
        try:
            k = int(k_raw)
        except (TypeError, ValueError):
            raise InvalidInput(f"output {tensor.name!r}: classification must be an integer, got {k_raw!r}") from None
        if k < 1:
            raise InvalidInput(f"output {tensor.name!r}: classification must be >= 1, got {k}")
        data = np.asarray(tensor.data)
        rows = data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(1, -1)
        kk = min(k, rows.shape[1])
        result = np.empty((rows.shape[0], kk), dtype=np.object_)
        for r, row in enumerate(rows):
            order = np.argsort(-row.astype(np.float64), kind="stable")[:kk]
            for c, idx in enumerate(order):
                result[r, c] = f"{float(row[idx]):f}:{int(idx)}".encode()
        final: np.ndarray = result.reshape(kk) if data.ndim <= 1 else result
        response.outputs[i] = Tensor(tensor.name, final)
