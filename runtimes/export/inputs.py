"""ExportInput: one model input as an exporter sees it (name, V2 datatype, shape, value range), framework-neutral.

Parsed from ``name:DATATYPE:shape[:low..high]`` (e.g. ``x:FP32:-1,784`` or ``ids:INT64:-1,16:0..999``);
a leading -1 marks the dynamic batch dim. It also draws the random sample batches used for export and golden data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtimes.datatype import NUMPY_DTYPES


@dataclass(frozen=True)
class ExportInput:
    """A model input: V2 datatype, shape (-1 first = dynamic batch), and the range random samples are drawn from.

    Samples: floats are standard normal unless ``low``/``high`` are given (then uniform); integers are uniform in
    ``[low, high)`` (default ``[0, 10)``; set it to an embedding's vocabulary size); BOOL is a fair coin.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an input needs a name")
        if self.datatype not in NUMPY_DTYPES:
            raise ValueError(f"input {self.name!r}: datatype {self.datatype!r} is not one of {', '.join(NUMPY_DTYPES)}")
        if any(d == -1 for d in self.shape[1:]) or any(d < -1 or d == 0 for d in self.shape):
            raise ValueError(
                f"input {self.name!r}: shape {list(self.shape)} may only have -1 as its first (batch) dim, "
                "other dims must be positive"
            )
        if self.low is not None and self.high is not None and self.high <= self.low:
            raise ValueError(f"input {self.name!r}: empty value range {self.low}..{self.high}")

    @classmethod
    def parse(cls, text: str) -> ExportInput:
        """``name:DATATYPE:d0,d1,...[:low..high]``; ValueError says what is wrong."""
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"input {text!r}: expected name:DATATYPE:shape[:low..high], e.g. x:FP32:-1,784")
        name, datatype, shape_text = parts[0], parts[1].upper(), parts[2]
        try:
            shape = tuple(int(d) for d in shape_text.split(",") if d.strip())
        except ValueError:
            raise ValueError(f"input {text!r}: shape {shape_text!r} is not a comma-separated list of ints") from None
        low = high = None
        if len(parts) == 4:
            low_text, sep, high_text = parts[3].partition("..")
            try:
                if not sep:
                    raise ValueError
                low, high = float(low_text), float(high_text)
            except ValueError:
                raise ValueError(f"input {text!r}: value range {parts[3]!r} is not low..high") from None
        return cls(name, datatype, shape, low, high)

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1

    @property
    def numpy_dtype(self) -> np.dtype:
        return NUMPY_DTYPES[self.datatype]

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape[1:]) if self.dynamic_batch else self.shape

    def sample(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """A random array of this input's dtype, ``batch`` rows when the batch dim is dynamic."""
        shape = self.concrete_shape(batch)
        dtype = self.numpy_dtype
        if self.datatype == "BOOL":
            return rng.random(shape) < 0.5
        if dtype.kind in "iu":
            first = int(self.low) if self.low is not None else 0
            stop = int(self.high) if self.high is not None else 10
            return rng.integers(first, stop, size=shape, dtype=dtype)
        if self.low is not None or self.high is not None:
            low = self.low if self.low is not None else 0.0
            high = self.high if self.high is not None else low + 1.0
            return rng.uniform(low, high, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)
