"""The signature of a PyTorch ``.pt2`` model: derived from an ExportedProgram or read from ``signature.json``,
config overrides, and the input checks both PyTorch runtimes run before calling the model.

``signature.json`` (written by the exporter beside ``model.pt2``; one schema for both formats)::

    {"schema": 1, "torch": "2.13.0+cpu", "device": "cpu",
     "inputs":  [{"name": "x", "datatype": "FP32", "dims": ["batch", 784]}],
     "outputs": [{"name": "logits", "datatype": "FP32", "dims": ["batch", 10]}],
     "ranges":  {"batch": {"min": 1, "max": 64}}}

``dims`` holds, per axis, a fixed size (int), the name of a dynamic dim (str; inputs sharing a name must agree,
and ``ranges`` bounds it; ``max`` null means unbounded) or null (dynamic, unchecked). Inputs are listed in the
order the model takes them; outputs in the order of the flattened output pytree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import sympy
import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import OutputKind
from torch.utils._sympy.numbers import int_oo

from runtimes.base import RuntimeInputError, RuntimeLoadError, Signature, TensorSpec
from runtimes.datatype import numpy_dtype
from runtimes.torch_tensor import v2_datatype

SIDECAR = "signature.json"
SCHEMA = 1
ARTIFACT = "model.pt2"

Dim = int | str | None


def pt2_file(folder: Path, options: Mapping[str, Any]) -> Path:
    """The ``.pt2`` file of a version folder: ``model.pt2``, or the plain file name ``options.filename`` gives."""
    name = options.get("filename") or ARTIFACT
    if not isinstance(name, str) or not artifact_name_ok(name):
        raise RuntimeLoadError(f"options.filename={name!r}: expected a plain file name in the version folder")
    file = folder / name
    if not file.is_file():
        named = " (options.filename)" if name != ARTIFACT else ""
        raise RuntimeLoadError(f"{file}{named} does not exist")
    return file


def artifact_name_ok(name: str) -> bool:
    """A file name without folders, not hidden: nothing a config names may leave the version folder."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name


@dataclass(frozen=True)
class PT2Tensor:
    """One input or output: V2 datatype and, per axis, a fixed size, a dynamic dim's name, or None."""

    name: str
    datatype: str
    dims: tuple[Dim, ...]
    values: tuple[int, int] | None = None  # an index input: its valid values [low, high)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self.dims)

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, self.shape, self.values)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "dims": list(self.dims)}
        if self.values is not None:
            doc["values"] = {"min": self.values[0], "max": self.values[1] - 1}
        return doc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PT2Tensor:
        dims = tuple(d if d is None or isinstance(d, str) else int(d) for d in data["dims"])
        values = data.get("values")
        bounds = (int(values["min"]), int(values["max"]) + 1) if isinstance(values, Mapping) else None
        return cls(str(data["name"]), str(data["datatype"]), dims, bounds)


@dataclass(frozen=True)
class PT2Signature:
    """Inputs (in call order), outputs (flattened pytree order) and the ranges of the dynamic dims."""

    inputs: tuple[PT2Tensor, ...]
    outputs: tuple[PT2Tensor, ...]
    ranges: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)
    device: str = "cpu"
    torch_version: str = ""
    _dtypes: tuple[np.dtype, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_dtypes", tuple(numpy_dtype(t.datatype) for t in self.inputs))

    # ---------------------------------------------------------------- derive / read / write

    @classmethod
    def from_exported_program(cls, ep: ExportedProgram) -> PT2Signature:
        """Names from the graph's user inputs and the output pytree; shapes from the example metadata."""
        placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        bounds = index_bounds(ep)
        inputs = tuple(
            replace(_tensor(name, placeholders[name].meta.get("val"), "input"), values=bounds.get(name))
            for name in ep.graph_signature.user_inputs
        )
        output_node = next(n for n in ep.graph.nodes if n.op == "output")
        returned = output_node.args[0]
        user_values = [
            returned[i] for i, spec in enumerate(ep.graph_signature.output_specs) if spec.kind == OutputKind.USER_OUTPUT
        ]
        names = output_names(ep.call_spec.out_spec, len(user_values))
        outputs = tuple(
            _tensor(name, getattr(value, "meta", {}).get("val"), "output")
            for name, value in zip(names, user_values, strict=True)
        )
        ranges: dict[str, tuple[int, int | None]] = {}
        for symbol, bounds in ep.range_constraints.items():
            if isinstance(symbol, sympy.Symbol):
                upper = None if bounds.upper in (int_oo, sympy.oo) else int(bounds.upper)
                ranges[str(symbol)] = (int(bounds.lower), upper)
        return cls(inputs, outputs, ranges, "cpu", torch.__version__)

    @classmethod
    def read(cls, path: Path) -> PT2Signature:
        """Read ``signature.json``; RuntimeLoadError names the file and what is wrong with it."""
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r} is not {SCHEMA}")
            return cls(
                inputs=tuple(PT2Tensor.from_json(t) for t in data["inputs"]),
                outputs=tuple(PT2Tensor.from_json(t) for t in data["outputs"]),
                ranges={
                    str(k): (int(v["min"]), None if v.get("max") is None else int(v["max"]))
                    for k, v in data.get("ranges", {}).items()
                },
                device=str(data.get("device", "cpu")),
                torch_version=str(data.get("torch", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeLoadError(f"{path}: not a readable signature sidecar: {exc}") from exc

    def write(self, path: Path) -> None:
        data = {
            "schema": SCHEMA,
            "torch": self.torch_version,
            "device": self.device,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "ranges": {k: {"min": lo, "max": hi} for k, (lo, hi) in self.ranges.items()},
        }
        path.write_text(json.dumps(data, indent=2) + "\n")

    # ---------------------------------------------------------------- transform

    def renamed(self, inputs: Sequence[str] | None = None, outputs: Sequence[str] | None = None) -> PT2Signature:
        """The same signature with new input and/or output names (counts must match)."""
        new_in, new_out = self.inputs, self.outputs
        if inputs is not None:
            new_in = _rename(self.inputs, inputs, "input")
        if outputs is not None:
            new_out = _rename(self.outputs, outputs, "output")
        return replace(self, inputs=new_in, outputs=new_out)

    def renamed_dims(self, names: Mapping[str, str]) -> PT2Signature:
        """Give dynamic dims readable names (``s23`` -> ``batch``) in tensors and ranges."""

        def one(t: PT2Tensor) -> PT2Tensor:
            return replace(t, dims=tuple(names.get(d, d) if isinstance(d, str) else d for d in t.dims))

        return replace(
            self,
            inputs=tuple(one(t) for t in self.inputs),
            outputs=tuple(one(t) for t in self.outputs),
            ranges={names.get(k, k): v for k, v in self.ranges.items()},
        )

    def overridden(
        self, inputs: Sequence[Mapping[str, Any]] | None, outputs: Sequence[Mapping[str, Any]] | None
    ) -> PT2Signature:
        """Apply config overrides (``options["inputs"]`` / ``options["outputs"]``); see ``apply_override``."""
        new = self
        if inputs:
            new = replace(new, inputs=apply_override(self.inputs, inputs, "input", self.ranges))
        if outputs:
            new = replace(new, outputs=apply_override(self.outputs, outputs, "output", self.ranges))
        return new

    # ---------------------------------------------------------------- use

    def signature(self) -> Signature:
        extra: dict[str, Any] = {}
        if self.ranges:
            extra["dim_ranges"] = {k: list(v) for k, v in self.ranges.items()}
        return Signature(
            inputs=tuple(t.spec() for t in self.inputs),
            outputs=tuple(t.spec() for t in self.outputs),
            extra=extra,
        )

    def check(self, inputs: Mapping[str, np.ndarray]) -> None:
        """RuntimeInputError naming the input and what was expected, before the model ever sees the data."""
        if len(inputs) != len(self.inputs) or any(name not in inputs for name in self.input_names):
            missing = [n for n in self.input_names if n not in inputs]
            unknown = [n for n in inputs if n not in self.input_names]
            parts = []
            if missing:
                parts.append(f"missing input {', '.join(repr(n) for n in missing)}")
            if unknown:
                parts.append(f"unknown input {', '.join(repr(n) for n in unknown)}")
            raise RuntimeInputError(f"{'; '.join(parts)}: the model takes {', '.join(self.input_names)}")
        bound: dict[str, tuple[int, str]] = {}
        for spec, dtype in zip(self.inputs, self._dtypes, strict=True):
            array = inputs[spec.name]
            if array.dtype != dtype:
                raise RuntimeInputError(
                    f"input {spec.name!r} has numpy dtype {array.dtype}, expected {spec.datatype} ({dtype})"
                )
            if array.ndim != len(spec.dims):
                raise RuntimeInputError(
                    f"input {spec.name!r} has shape {list(array.shape)} (rank {array.ndim}), "
                    f"expected rank {len(spec.dims)} shape {list(spec.shape)}"
                )
            if spec.values is not None and array.size:
                first, stop = spec.values
                if array.min() < first or array.max() >= stop:
                    raise RuntimeInputError(
                        f"input {spec.name!r} holds values outside [{first}, {stop}): it indexes a table of {stop} rows"
                    )
            for axis, (dim, size) in enumerate(zip(spec.dims, array.shape, strict=True)):
                if isinstance(dim, int):
                    if size != dim:
                        raise RuntimeInputError(
                            f"input {spec.name!r} has shape {list(array.shape)}: dim {axis} is {size}, "
                            f"expected {dim} (shape {list(spec.shape)})"
                        )
                elif isinstance(dim, str):
                    low, high = self.ranges.get(dim, (0, None))
                    if size < low or (high is not None and size > high):
                        allowed = f"[{low}, {high}]" if high is not None else f"[{low}, ...)"
                        raise RuntimeInputError(
                            f"input {spec.name!r} dim {axis} ({dim}) is {size}, outside the exported range {allowed}"
                        )
                    seen = bound.setdefault(dim, (size, spec.name))
                    if seen[0] != size:
                        raise RuntimeInputError(
                            f"input {spec.name!r} dim {axis} is {size} but input {seen[1]!r} has {seen[0]} "
                            f"for the same dynamic dim ({dim})"
                        )

    def output_index(self, names: Sequence[str] | None) -> list[tuple[int, str]]:
        """(flat position, name) of the requested outputs, all when ``names`` is None."""
        if names is None:
            return list(enumerate(self.output_names))
        index = {n: i for i, n in enumerate(self.output_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise RuntimeInputError(
                f"unknown output {', '.join(repr(n) for n in unknown)}: the model has {', '.join(self.output_names)}"
            )
        return [(index[n], n) for n in names]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


#: Ops whose second argument indexes the rows of their first (a table from the model's parameters).
_INDEXING = ("aten.embedding.default",)


def index_bounds(ep: ExportedProgram) -> dict[str, tuple[int, int]]:
    """User inputs used directly as indices into a parameter table (an embedding): their valid values [0, rows).
    Out-of-range indices raise IndexError in eager PyTorch and abort an AOTInductor model, so they are refused
    before the call."""
    users = set(ep.graph_signature.user_inputs)
    found: dict[str, tuple[int, int]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or str(node.target) not in _INDEXING or len(node.args) < 2:
            continue
        table, indices = node.args[0], node.args[1]
        value = getattr(table, "meta", {}).get("val")
        if getattr(indices, "op", None) != "placeholder" or indices.name not in users or value is None:
            continue
        rows = int(value.shape[0])
        low, high = found.get(indices.name, (0, rows))
        found[indices.name] = (low, min(high, rows))
    return found


def output_names(out_spec: pytree.TreeSpec, count: int) -> list[str]:
    """Names of the flattened outputs: dict keys, ``output_<i>`` for tuple/list positions, dotted when nested."""
    tree = pytree.tree_unflatten(list(range(count)), out_spec)
    paths, _ = pytree.tree_flatten_with_path(tree)
    names = []
    for path, _leaf in paths:
        parts: list[str] = []
        for key in path:
            if isinstance(key, pytree.MappingKey):
                parts.append(str(key.key))
            elif isinstance(key, pytree.SequenceKey):
                parts.append(f"output_{key.idx}" if not parts else str(key.idx))
            else:
                parts.append(str(getattr(key, "name", key)))
        names.append(".".join(parts) or "output_0")
    return names


def _tensor(name: str, value: Any, kind: str) -> PT2Tensor:
    if not isinstance(value, torch.Tensor):
        raise RuntimeLoadError(f"{kind} {name!r} is not a tensor ({type(value).__name__}); only tensors are served")
    try:
        datatype = v2_datatype(value.dtype)
    except ValueError as exc:
        raise RuntimeLoadError(f"{kind} {name!r}: {exc}") from None
    return PT2Tensor(name, datatype, tuple(_dim(size) for size in value.shape))


def _dim(size: int | torch.SymInt) -> Dim:
    if isinstance(size, int):
        return size
    expr = size.node.expr
    if isinstance(expr, sympy.Symbol):
        return str(expr)
    if expr.is_number:
        return int(expr)
    return None


def _rename(tensors: tuple[PT2Tensor, ...], names: Sequence[str], kind: str) -> tuple[PT2Tensor, ...]:
    if len(names) != len(tensors):
        raise RuntimeLoadError(
            f"{len(names)} {kind} names given ({', '.join(names)}) but the model has {len(tensors)} {kind}s"
        )
    return tuple(replace(t, name=str(n)) for t, n in zip(tensors, names, strict=True))


def apply_override(
    tensors: tuple[PT2Tensor, ...],
    overrides: Sequence[Mapping[str, Any]],
    kind: str,
    ranges: Mapping[str, tuple[int, int | None]],
) -> tuple[PT2Tensor, ...]:
    """Config overrides: a list of ``{name, datatype, shape}`` mappings.

    When every override names an existing tensor they match by name (a partial list is fine); otherwise the list
    must cover every tensor in order and renames them. ``datatype`` must equal the model's (no casts). ``shape``
    must have the model's rank; -1 keeps the model's dim, a number must equal a fixed dim or pin a dynamic one
    (inside its range).
    """
    by_name = {t.name: i for i, t in enumerate(tensors)}
    if all(str(o.get("name")) in by_name for o in overrides):
        targets = [by_name[str(o["name"])] for o in overrides]
    elif len(overrides) == len(tensors):
        targets = list(range(len(tensors)))
    else:
        raise RuntimeLoadError(
            f"{kind} overrides {[o.get('name') for o in overrides]} neither name the model's {kind}s "
            f"({', '.join(by_name)}) nor list all {len(tensors)} of them in order"
        )
    result = list(tensors)
    for index, override in zip(targets, overrides, strict=True):
        model = tensors[index]
        name = str(override.get("name", model.name))
        datatype = str(override.get("datatype", model.datatype))
        if datatype != model.datatype:
            raise RuntimeLoadError(
                f"{kind} override {name!r}: datatype {datatype} differs from the model's {model.datatype}"
            )
        shape = override.get("shape")
        dims = model.dims
        if shape is not None:
            if len(shape) != len(model.dims):
                raise RuntimeLoadError(
                    f"{kind} override {name!r}: shape {list(shape)} has rank {len(shape)}, "
                    f"the model's {list(model.shape)} has rank {len(model.dims)}"
                )
            new_dims: list[Dim] = []
            for axis, (want, have) in enumerate(zip(shape, model.dims, strict=True)):
                want = int(want)
                if want == -1:
                    new_dims.append(have)
                elif isinstance(have, int):
                    if want != have:
                        raise RuntimeLoadError(
                            f"{kind} override {name!r}: dim {axis} is {want} but the model fixes it at {have}"
                        )
                    new_dims.append(have)
                else:
                    low, high = ranges.get(have, (0, None)) if have is not None else (0, None)
                    if want < low or (high is not None and want > high):
                        raise RuntimeLoadError(
                            f"{kind} override {name!r}: dim {axis} = {want} is outside the model's range "
                            f"[{low}, {high if high is not None else '...'}]"
                        )
                    new_dims.append(want)
            dims = tuple(new_dims)
        result[index] = PT2Tensor(name, datatype, dims, model.values)
    return tuple(result)
