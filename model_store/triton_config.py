"""Triton's ``config.pbtxt`` (a ModelConfig in protobuf text format) read into tensorgate's ModelConfig mapping.

The message definition is the one tritonclient ships (``tritonclient.grpc.model_config_pb2``), imported lazily: it
is a core dependency already (the gRPC front end speaks Triton's protos with the same modules), and a second copy
of the ``inference`` protos could not live in the same process (the default descriptor pool refuses duplicate
symbols). Every field that is set is either mapped, or refused with a ConfigError naming it, or — where serving
anyway is what a Triton user would want — logged as a warning naming it; nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from model_store.config import ConfigError

log = logging.getLogger("tensorgate.model_store.triton")

PBTXT_FILE = "config.pbtxt"
MAX_BYTES = 1 << 20  # a config.pbtxt larger than this is refused before parsing
MAX_DIM = (1 << 31) - 1
MAX_RANK = 32
MAX_WARMUP_COUNT = 1000  # runs of one warm-up sample: a load should not take forever on a typo

#: platform or backend -> tensorgate runtime (None: a .pt2 whose kind is told by its contents) and the artefact
#: Triton looks for when ``default_model_filename`` is not set.
_PLATFORMS: dict[str, tuple[str | None, str]] = {
    "onnxruntime_onnx": ("onnx", "model.onnx"),
    "onnxruntime": ("onnx", "model.onnx"),
    "tensorflow_savedmodel": ("tf_savedmodel", "model.savedmodel"),
    "pytorch_libtorch": (None, "model.pt2"),
    "pytorch": (None, "model.pt2"),
}
_REFUSED_PLATFORMS = {
    "ensemble": "ensembles (platform ensemble) are not served; call the models in turn from the client",
    "tensorflow_graphdef": "TensorFlow GraphDef models are not served; export a SavedModel",
    "tensorrt_plan": "TensorRT plans are not served; serve the ONNX model",
    "tensorrt": "TensorRT plans are not served; serve the ONNX model",
    "python": "the Python backend is not served (it runs arbitrary code from the repository)",
    "openvino": "the OpenVINO backend is not served; serve the ONNX model",
    "fil": "the FIL backend is not served",
    "dali": "the DALI backend is not served",
    "vllm": "the vLLM backend is not served",
    "tensorrtllm": "the TensorRT-LLM backend is not served",
    "identity": "the identity backend is not served",
    "repeat": "the repeat backend is not served",
    "square": "the square backend is not served",
}

#: fields refused outright: serving without them would answer differently from Triton
_REFUSED_FIELDS = {
    "sequence_batching": "sequence batching (stateful models) is not supported",
    "ensemble_scheduling": "ensembles are not served; call the models in turn from the client",
    "batch_input": "batch inputs (ragged batching) are not supported",
    "batch_output": "batch outputs (ragged batching) are not supported",
    "model_repository_agents": "repository agents (checksum, decryption) are not supported",
    "model_transaction_policy": "decoupled models (model_transaction_policy) are not supported",
    "runtime": "backend runtimes (model.py, shared libraries) are not supported",
}
#: fields that change performance or bookkeeping only: served anyway, with a warning naming the field
_WARNED_FIELDS = {
    "optimization": "optimization settings (graph level, accelerators, CUDA graphs) are not applied",
    "cc_model_filenames": "per-compute-capability file names are not used; default_model_filename is",
    "metric_tags": "metric tags are not added to the metrics",
    "response_cache": "the response cache is not supported; every request runs",
    "model_operations": "model operations (ops libraries) are not loaded",
    "model_metrics": "custom metric histograms are not configured",
}
#: tensor fields looked at (one by one, in _tensor); ``format`` is informational in Triton too
_TENSOR_FIELDS = {
    "name", "data_type", "dims", "format", "reshape", "is_shape_tensor", "allow_ragged_batch", "optional",
    "label_filename",
}  # fmt: skip
_MAPPED_FIELDS = {
    "name", "platform", "backend", "version_policy", "max_batch_size", "input", "output", "dynamic_batching",
    "instance_group", "default_model_filename", "parameters", "model_warmup",
}  # fmt: skip

#: Triton backend parameters that have a tensorgate runtime option (ONNX Runtime's, then PyTorch's backend names)
_PARAMETER_OPTIONS = {
    "intra_op_thread_count": "intra_op_threads",
    "inter_op_thread_count": "inter_op_threads",
    "INTRA_OP_THREAD_COUNT": "intra_op_threads",
    "INTER_OP_THREAD_COUNT": "inter_op_threads",
}

_warned: set[str] = set()  # digests of the configs already warned about (the store is polled every few seconds)


def datatype(name: str, where: str) -> str:
    """``TYPE_FP32`` -> ``FP32``; ``TYPE_STRING`` -> ``BYTES``."""
    if not name.startswith("TYPE_") or name == "TYPE_INVALID":
        raise ConfigError(f"{where}: data_type {name} is not a tensor type")
    short = name[len("TYPE_") :]
    return "BYTES" if short == "STRING" else short


def to_mapping(text: bytes, model: str, where: str = PBTXT_FILE) -> dict[str, Any]:
    """Parse a config.pbtxt; return the mapping ModelConfig takes (config.yaml's form). ConfigError names the file,
    the line for a syntax error, and the field for anything tensorgate cannot honour."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text)} bytes, more than the {MAX_BYTES} a model config may have")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text: {exc}") from exc
    message = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(decoded, message)
    except text_format.ParseError as exc:
        line = f":{exc.GetLine()}" if exc.GetLine() else ""
        column = f":{exc.GetColumn()}" if exc.GetColumn() else ""
        detail = str(exc).split(" : ", 1)[-1] if exc.GetLine() else str(exc)
        raise ConfigError(f"{where}{line}{column}: {detail}") from exc
    warnings: list[str] = []
    data = _mapping(message, model, where, warnings)
    digest = hashlib.sha256(where.encode() + b"\0" + text).hexdigest()
    if warnings and digest not in _warned:
        _warned.add(digest)
        for warning in warnings:
            log.warning("%s: %s", where, warning)
    return data


def json_to_text(text: str | bytes, where: str) -> bytes:
    """Triton's ModelConfig in its JSON form (what a repository load request may carry) as config.pbtxt text."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text)} bytes, more than the {MAX_BYTES} a model config may have")
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = model_config_pb2.ModelConfig()
    try:
        json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise ConfigError(f"{where}: not a Triton model config in JSON: {exc}") from exc
    return text_format.MessageToString(message).encode()


def _mapping(msg: Any, model: str, where: str, warnings: list[str]) -> dict[str, Any]:
    present = {field.name for field, _ in msg.ListFields()}
    for name in sorted(present & set(_REFUSED_FIELDS)):
        raise ConfigError(f"{where}: field {name}: {_REFUSED_FIELDS[name]}")
    for name in sorted(present & set(_WARNED_FIELDS)):
        warnings.append(f"field {name} is ignored: {_WARNED_FIELDS[name]}")
    unknown = present - set(_REFUSED_FIELDS) - set(_WARNED_FIELDS) - _MAPPED_FIELDS
    if unknown:
        raise ConfigError(f"{where}: field(s) {', '.join(sorted(unknown))} are not supported")
    if msg.name and msg.name != model:
        raise ConfigError(f"{where}: name {msg.name!r} differs from the model's folder name {model!r}")
    out: dict[str, Any] = {}
    options: dict[str, Any] = {}
    runtime, default_file = _runtime(msg, where)
    if runtime is not None:
        out["runtime"] = runtime
    filename = msg.default_model_filename or default_file
    if filename:
        if "/" in filename or "\\" in filename or filename in (".", "..") or filename.startswith("."):
            raise ConfigError(f"{where}: default_model_filename {filename!r} must be a plain file or folder name")
        options["filename"] = filename
    if msg.max_batch_size < 0:
        raise ConfigError(f"{where}: max_batch_size must be >= 0, got {msg.max_batch_size}")
    mbs = msg.max_batch_size
    out["max_batch_size"] = mbs
    if msg.input:
        out["inputs"] = [_tensor(t, mbs, f"{where}: input {t.name!r}", inputs=True) for t in msg.input]
    if msg.output:
        out["outputs"] = [_tensor(t, mbs, f"{where}: output {t.name!r}", inputs=False) for t in msg.output]
    _check_unique(out.get("inputs", []), "input", where)
    _check_unique(out.get("outputs", []), "output", where)
    if msg.HasField("version_policy"):
        out["version_policy"] = _version_policy(msg.version_policy, where)
    if msg.HasField("dynamic_batching"):
        _dynamic_batching(msg.dynamic_batching, mbs, where, out, warnings)
    if msg.instance_group:
        _instance_groups(msg.instance_group, where, out, options, warnings)
    if msg.parameters:
        parameters = {key: value.string_value for key, value in msg.parameters.items()}
        out["parameters"] = parameters
        for key, value in parameters.items():
            option = _PARAMETER_OPTIONS.get(key)
            if option is None:
                warnings.append(f"parameters {key!r} has no meaning for tensorgate (shown in the model config only)")
                continue
            try:
                options[option] = int(value)
            except ValueError:
                raise ConfigError(f"{where}: parameters {key!r} must be an integer, got {value!r}") from None
    if msg.model_warmup:
        samples = []
        for sample in msg.model_warmup:
            if sample.batch_size == 0:  # Triton skips these too
                warnings.append(f"model_warmup {sample.name!r} has batch_size 0 and is skipped")
                continue
            samples.append(_warmup(sample, mbs, where))
        out["warmup"] = {"samples": samples}
    if options:
        out["options"] = options
    return out


def _runtime(msg: Any, where: str) -> tuple[str | None, str]:
    platform, backend = msg.platform, msg.backend
    for key, what in ((platform, "platform"), (backend, "backend")):
        if key in _REFUSED_PLATFORMS:
            raise ConfigError(f"{where}: {what} {key!r}: {_REFUSED_PLATFORMS[key]}")
    if backend == "tensorflow":
        if platform not in ("", "tensorflow_savedmodel"):
            raise ConfigError(f"{where}: platform {platform!r}: only tensorflow_savedmodel is served")
        return _PLATFORMS["tensorflow_savedmodel"]
    for key, what in ((platform, "platform"), (backend, "backend")):
        if key and key not in _PLATFORMS:
            raise ConfigError(
                f"{where}: {what} {key!r} is not served; expected one of: onnxruntime_onnx, tensorflow_savedmodel, "
                "pytorch_libtorch (a torch.export or AOTInductor .pt2), or backend onnxruntime, tensorflow, pytorch"
            )
    chosen = [_PLATFORMS[k] for k in (platform, backend) if k]
    if len({c[0] for c in chosen}) > 1:
        raise ConfigError(f"{where}: platform {platform!r} and backend {backend!r} disagree")
    if chosen:
        return chosen[0]
    return None, ""  # neither: the format is detected from the version folder, as for config.yaml


def _dims(dims: Any, where: str) -> list[int]:
    if len(dims) > MAX_RANK:
        raise ConfigError(f"{where}: {len(dims)} dims, more than {MAX_RANK}")
    out = []
    for dim in dims:
        if dim < -1:
            raise ConfigError(f"{where}: dim {dim} is negative (-1 is a variable-size dimension)")
        if dim > MAX_DIM:
            raise ConfigError(f"{where}: dim {dim} is larger than {MAX_DIM}")
        out.append(int(dim))
    return out


def _tensor(tensor: Any, mbs: int, where: str, *, inputs: bool) -> dict[str, Any]:
    if not tensor.name:
        raise ConfigError(f"{where}: a tensor needs a name")
    unknown = {field.name for field, _ in tensor.ListFields()} - _TENSOR_FIELDS
    if unknown:
        raise ConfigError(f"{where}: field(s) {', '.join(sorted(unknown))} are not supported")
    if tensor.HasField("reshape"):
        raise ConfigError(f"{where}: field reshape is not supported; give the model's own dims")
    if tensor.is_shape_tensor:
        raise ConfigError(f"{where}: field is_shape_tensor (TensorRT shape tensors) is not supported")
    if inputs and tensor.allow_ragged_batch:
        raise ConfigError(f"{where}: field allow_ragged_batch is not supported")
    if inputs and tensor.optional:
        raise ConfigError(f"{where}: field optional is not supported: every input of the model is required")
    if not inputs and tensor.label_filename:
        raise ConfigError(f"{where}: field label_filename (the classification extension) is not supported")
    if not tensor.dims:
        raise ConfigError(f"{where}: dims are required")
    dims = _dims(tensor.dims, where)
    name = _datatype_name(tensor.data_type)
    return {
        "name": tensor.name,
        "datatype": datatype(name, where),
        "shape": ([-1] if mbs > 0 else []) + dims,
    }


def _datatype_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    try:
        return str(model_config_pb2.DataType.Name(value))
    except ValueError:
        return f"<enum {value}>"


def _check_unique(tensors: list[dict[str, Any]], kind: str, where: str) -> None:
    seen: set[str] = set()
    for tensor in tensors:
        if tensor["name"] in seen:
            raise ConfigError(f"{where}: {kind} {tensor['name']!r} is declared twice")
        seen.add(tensor["name"])


def _version_policy(policy: Any, where: str) -> dict[str, Any]:
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest":
        if policy.latest.num_versions < 1:
            raise ConfigError(f"{where}: version_policy.latest.num_versions must be >= 1")
        return {"latest": int(policy.latest.num_versions)}
    if choice == "specific":
        versions = [int(v) for v in policy.specific.versions]
        if not versions or any(v < 0 for v in versions):
            raise ConfigError(f"{where}: version_policy.specific.versions must list version numbers >= 0")
        return {"specific": versions}
    if choice == "all":
        return {"all": True}
    return {"latest": 1}


def _dynamic_batching(batching: Any, mbs: int, where: str, out: dict[str, Any], warnings: list[str]) -> None:
    if mbs <= 0:
        raise ConfigError(f"{where}: dynamic_batching needs max_batch_size > 0 (the model must take a batch)")
    preferred = [int(p) for p in batching.preferred_batch_size]
    for size in preferred:
        if size < 1 or size > mbs:
            raise ConfigError(
                f"{where}: dynamic_batching.preferred_batch_size {size} must be between 1 and max_batch_size {mbs}"
            )
    out["batching"] = {
        "max_batch_size": mbs,
        "max_queue_delay_ms": batching.max_queue_delay_microseconds / 1000.0,
        "preferred_batch_sizes": preferred,
    }
    if batching.priority_levels or batching.priority_queue_policy:
        warnings.append("dynamic_batching.priority_levels / priority_queue_policy are ignored: one queue per model")
    if batching.HasField("default_queue_policy"):
        policy = batching.default_queue_policy
        if policy.max_queue_size > 0:
            out["max_queue_size"] = int(policy.max_queue_size)
        if policy.default_timeout_microseconds > 0:
            from tritonclient.grpc import model_config_pb2

            if policy.timeout_action == model_config_pb2.ModelQueuePolicy.DELAY:
                warnings.append(
                    "dynamic_batching.default_queue_policy.timeout_action DELAY is served as REJECT: a request "
                    "past its timeout fails"
                )
            out["timeout_ms"] = policy.default_timeout_microseconds / 1000.0


def _instance_groups(
    groups: Any, where: str, out: dict[str, Any], options: dict[str, Any], warnings: list[str]
) -> None:
    from tritonclient.grpc import model_config_pb2

    kinds = model_config_pb2.ModelInstanceGroup.Kind
    count = 0
    gpu = False
    for group in groups:
        label = f"instance_group {group.name!r}" if group.name else "instance_group"
        if group.count < 0:
            raise ConfigError(f"{where}: {label}.count must be >= 0, got {group.count}")
        count += group.count or 1  # Triton: count 0 means one instance
        if group.kind == kinds.Value("KIND_GPU"):
            gpu = True
        elif group.kind == kinds.Value("KIND_MODEL"):
            warnings.append(f"{label}: KIND_MODEL is served as KIND_AUTO (the runtime's device option decides)")
        for extra in ("rate_limiter", "secondary_devices", "host_policy", "profile", "passive"):
            if group.HasField(extra) if extra == "rate_limiter" else getattr(group, extra):
                warnings.append(f"{label}.{extra} is ignored")
        if len(group.gpus) > 1:
            warnings.append(f"{label}.gpus {list(group.gpus)}: every instance runs on GPU {group.gpus[0]}")
        if group.gpus:
            options["device"] = f"cuda:{group.gpus[0]}"
    if gpu and "device" not in options:
        options["device"] = "cuda"
    if count > 1024:
        raise ConfigError(f"{where}: instance_group asks for {count} instances, more than 1024")
    out["instances"] = count


def _warmup(sample: Any, mbs: int, where: str) -> dict[str, Any]:
    label = f"{where}: model_warmup {sample.name!r}"
    if not sample.name:
        raise ConfigError(f"{where}: model_warmup needs a name")
    if sample.count > MAX_WARMUP_COUNT:
        raise ConfigError(f"{label}: count {sample.count} is more than {MAX_WARMUP_COUNT} warm-up runs")
    if sample.batch_size < 1 or sample.batch_size > max(mbs, 1):
        raise ConfigError(f"{label}: batch_size {sample.batch_size} must be between 1 and max_batch_size")
    inputs = []
    for name, spec in sample.inputs.items():
        dims = _dims(spec.dims, f"{label} input {name!r}")
        if -1 in dims:
            raise ConfigError(f"{label} input {name!r}: every dim must be given (no -1)")
        source = spec.WhichOneof("input_data_type")
        if source is None:
            raise ConfigError(f"{label} input {name!r}: set zero_data, random_data or input_data_file")
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype(_datatype_name(spec.data_type), f"{label} input {name!r}"),
            "shape": ([int(sample.batch_size)] if mbs > 0 else []) + dims,
            "source": {"zero_data": "zero", "random_data": "random", "input_data_file": "file"}[source],
        }
        if source == "input_data_file":
            file = spec.input_data_file
            if not file or "/" in file or "\\" in file or file.startswith("."):
                raise ConfigError(f"{label} input {name!r}: input_data_file {file!r} must be a file name in warmup/")
            entry["file"] = file
        inputs.append(entry)
    return {"name": sample.name, "count": max(int(sample.count), 1), "batch_size": int(sample.batch_size),
            "inputs": sorted(inputs, key=lambda i: i["name"])}  # fmt: skip
