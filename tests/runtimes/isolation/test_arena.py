"""Arena layout: every numeric dtype and memory order the runtimes hand over comes back from the shared segment
with its dtype, shape and values (written as raw bytes, read as views or copies)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from runtimes.isolation import arena


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
        np.array(3.5, dtype=np.float64),  # 0-d
        np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16),
        np.array([1 + 2j, -3j], np.complex64),
        np.array([True, False]),
        np.zeros((0, 4), np.int8),
        np.arange(-5, 5, dtype=np.int64).reshape(2, 5),
    ],
    ids=["transposed", "scalar", "bfloat16", "complex64", "bool", "empty", "int64"],
)
def test_tensors_round_trip(array: np.ndarray) -> None:
    segment = arena.Arena.create(1 << 16)
    try:
        tensors = {"a": np.ones(3, np.float32), "t": array}  # a second tensor at a later offset
        parts, size = arena.layout(tensors)
        assert size <= segment.size
        entries = arena.write(segment, tensors, parts)
        for copy in (True, False):
            out = arena.read(segment, entries, copy=copy)
            for name, want in tensors.items():
                assert out[name].dtype == want.dtype and out[name].shape == want.shape
                if want.dtype.kind == "V":  # bfloat16: compared as the floats it holds
                    np.testing.assert_array_equal(out[name].astype(np.float32), want.astype(np.float32))
                else:
                    np.testing.assert_array_equal(out[name], want)
            del out
    finally:
        segment.close()
