"""V2 datatype names <-> numpy dtypes for the runtimes (which stay independent of ``gateway.core.types``)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)

# BYTES is absent: no numeric framework here takes strings.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": BF16,
}


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype carrying V2 ``datatype``; ValueError for BYTES and unknown names."""
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        raise ValueError(f"V2 datatype {datatype!r} has no numeric numpy dtype") from None
