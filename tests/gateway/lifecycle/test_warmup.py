"""Warm-up inputs: declared samples (zeros, random values, Triton's warm-up files) built and checked before anything
is allocated; synthetic inputs refuse shapes too large to allocate."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from gateway.lifecycle.warmup import MAX_WARMUP_ELEMENTS, Warmer, synthetic_inputs
from model_store.config import WarmupSample
from model_store.local import LocalStore
from runtimes import RuntimeLoadError, Signature, TensorSpec


def sample(*inputs: dict[str, object]) -> WarmupSample:
    return WarmupSample.model_validate({"name": "s", "inputs": list(inputs)})


@pytest.fixture
def warmer(tmp_path: Path) -> Warmer:
    folder = tmp_path / "m" / "warmup"
    folder.mkdir(parents=True)
    (folder / "ints").write_bytes(np.arange(6, dtype=np.int32).tobytes())
    (folder / "words").write_bytes(b"".join(struct.pack("<I", len(w)) + w for w in (b"ab", b"", b"cde")))
    (folder / "truncated").write_bytes(struct.pack("<I", 10) + b"abc")
    (folder / "extra").write_bytes(struct.pack("<I", 1) + b"a" + b"junk")
    return Warmer(LocalStore(tmp_path))


def test_declared_samples_are_built_from_their_source(warmer: Warmer) -> None:
    inputs = warmer.sample_inputs(
        "m",
        sample(
            {"name": "zeros", "datatype": "FP32", "shape": [2, 3]},
            {"name": "random", "datatype": "INT64", "shape": [4], "source": "random"},
            {"name": "ints", "datatype": "INT32", "shape": [2, 3], "source": "file", "file": "ints"},
            {"name": "words", "datatype": "BYTES", "shape": [3], "source": "file", "file": "words"},
            {"name": "empty", "datatype": "BYTES", "shape": [1, 2], "source": "random"},
        ),
    )
    np.testing.assert_array_equal(inputs["zeros"], np.zeros((2, 3), np.float32))
    assert inputs["random"].dtype == np.int64 and inputs["random"].shape == (4,)
    np.testing.assert_array_equal(inputs["ints"], np.arange(6, dtype=np.int32).reshape(2, 3))
    assert inputs["words"].tolist() == [b"ab", b"", b"cde"]
    assert inputs["empty"].tolist() == [[b"", b""]]  # Triton: synthetic strings are empty


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"datatype": "INT32", "shape": [7], "source": "file", "file": "ints"}, "24 bytes, expected 28"),
        ({"datatype": "BYTES", "shape": [1], "source": "file", "file": "truncated"}, "runs past the end"),
        ({"datatype": "BYTES", "shape": [1], "source": "file", "file": "extra"}, "expected 1 strings filling"),
        ({"datatype": "BYTES", "shape": [4], "source": "file", "file": "words"}, "expected 4 strings"),
        ({"datatype": "FP32", "shape": [1], "source": "file", "file": "missing"}, "m/warmup/missing does not exist"),
        ({"datatype": "FP32", "shape": [1 << 20, 1 << 20]}, f"more than {MAX_WARMUP_ELEMENTS} elements"),
        ({"datatype": "NOPE", "shape": [1]}, "unknown datatype NOPE"),
    ],
)
def test_bad_samples_name_the_sample_and_input(warmer: Warmer, spec: dict[str, object], words: str) -> None:
    with pytest.raises(RuntimeLoadError, match="warm-up sample 's' input 'x'") as info:
        warmer.sample_inputs("m", sample({"name": "x", **spec}))
    assert words in str(info.value)


def test_synthetic_inputs_refuse_huge_shapes_before_allocating() -> None:
    signature = Signature((TensorSpec("x", "FP32", (-1, 1 << 20, 1 << 20)),), ())
    with pytest.raises(RuntimeLoadError, match="synthetic warm-up input 'x'"):
        synthetic_inputs(signature)
    small = synthetic_inputs(Signature((TensorSpec("x", "FP32", (-1, 4)),), ()), batch=2)
    assert small["x"].shape == (2, 4)
