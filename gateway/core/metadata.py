"""What a resolved version says about itself: V2 model metadata and Triton's ModelConfig in its JSON form (proto
field names, enum names), which perf_analyzer and Triton's clients read."""

from __future__ import annotations

from typing import Any

from gateway.core.types import DATATYPES, ModelMetadata, TensorMetadata
from gateway.lifecycle.model import ModelEntry, ModelVersion
from model_store.config import WarmupSample


def model_metadata(name: str, model: ModelVersion, entry: ModelEntry) -> ModelMetadata:
    sig = model.signature_for()
    params: dict[str, Any] = {"runtime": model.format}
    source = model.config.source.get("model")
    if source:
        params["source"] = str(source)
    sla = {k: v for k, v in model.config.sla.model_dump().items() if v is not None}
    if sla:
        params["sla"] = sla
    return ModelMetadata(
        name=name,
        versions=[str(m.version) for m in entry.ready_versions()],
        platform=model.platform,
        inputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in sig.inputs],
        outputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in sig.outputs],
        parameters=params,
    )


#: Triton's backend name for each runtime (the runtime itself is in the ``runtime`` parameter)
_BACKENDS = {"onnx": "onnxruntime", "tf_savedmodel": "tensorflow", "torch_export": "pytorch", "torch_aoti": "pytorch"}


def model_config(name: str, model: ModelVersion) -> dict[str, Any]:
    sig = model.signature_for()
    mbs = model.max_batch_size
    drop = 1 if mbs > 0 else 0

    def tensor(spec: Any, key: str) -> dict[str, Any]:
        return {"name": spec.name, "data_type": DATATYPES[spec.datatype].triton, key: list(spec.shape[drop:])}

    cfg = model.config
    device = model.runtime.device if model.runtime is not None else "cpu"
    kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"
    gpus = {"gpus": [int(device.partition(":")[2] or 0)]} if kind == "KIND_GPU" else {}
    config: dict[str, Any] = {
        "name": name,
        "platform": model.platform,
        "backend": _BACKENDS.get(model.format, model.format),
        "version_policy": cfg.version_policy.to_triton(),
        "max_batch_size": mbs,
        "input": [tensor(s, "dims") for s in sig.inputs],
        "output": [tensor(s, "dims") for s in sig.outputs],
        "instance_group": [{"name": name, "kind": kind, "count": cfg.instances, **gpus}],
        "default_model_filename": model.artifact,
        "parameters": {
            **{key: {"string_value": value} for key, value in cfg.parameters.items()},
            **{f"sla.{k}": {"string_value": str(v)} for k, v in cfg.sla.model_dump().items() if v is not None},
            "runtime": {"string_value": model.format},
        },
    }
    if cfg.batching is not None and mbs > 0:
        queue: dict[str, Any] = {"max_queue_size": cfg.max_queue_size}
        if cfg.timeout_ms is not None:
            queue.update(timeout_action="REJECT", default_timeout_microseconds=int(cfg.timeout_ms * 1000))
        config["dynamic_batching"] = {
            "preferred_batch_size": list(cfg.batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(cfg.batching.max_queue_delay_ms * 1000),
            "default_queue_policy": queue,
        }
    if cfg.warmup.enabled and cfg.warmup.samples:
        config["model_warmup"] = [_warmup(sample, mbs > 0) for sample in cfg.warmup.samples]
    return config


def _warmup(sample: WarmupSample, batched: bool) -> dict[str, Any]:
    """A declared warm-up sample in Triton's form (dims without the batch dim, which is batch_size)."""
    inputs: dict[str, Any] = {}
    for spec in sample.inputs:
        dims = spec.shape[1:] if batched else spec.shape
        source: dict[str, Any] = (
            {"input_data_file": spec.file} if spec.source == "file" else {f"{spec.source}_data": True}
        )
        inputs[spec.name] = {"data_type": DATATYPES[spec.datatype].triton, "dims": list(dims), **source}
    return {"name": sample.name, "batch_size": sample.batch_size, "count": sample.count, "inputs": inputs}
