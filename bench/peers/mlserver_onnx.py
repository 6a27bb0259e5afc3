"""An ONNX Runtime model for Seldon MLServer 1.7.1, and the generator of the settings that serve it.

Runs inside ``.tools/peers/mlserver`` (made by ``setup.sh``). The model is MLServer's idiomatic custom runtime:
an ``MLModel`` subclass that opens an ORT session in ``load`` and decodes the request with ``NumpyCodec`` in
an ``async predict``. The generator writes ``settings.json`` and ``<model>/model-settings.json`` for the fairest
fast configuration (``parallel_workers: 0`` keeps inference in the process that serves HTTP/gRPC; ``debug:
false`` turns the per-request access log off); everything else stays at MLServer's defaults.

    python mlserver_onnx.py write-settings --root DIR --model NAME --onnx PATH --http-port N --grpc-port M \
        --metrics-port K [--max-batch-size 8 --max-batch-time-ms 2]
    PYTHONPATH=bench/peers mlserver start DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    """One ORT session, one intra-op thread, sequential execution: the same settings every server gets."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        data = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        results = self._session.run(self._outputs, {self._input: data})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name=name, payload=value)
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )


def write_settings(args: argparse.Namespace) -> None:
    """Write settings.json and <model>/model-settings.json under args.root, validated by MLServer's classes."""
    root = Path(args.root)
    (root / args.model).mkdir(parents=True, exist_ok=True)
    server = {
        "debug": False,
        "parallel_workers": args.parallel_workers,
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "model_repository_root": str(root),
        "load_models_at_startup": True,
    }
    model: dict[str, object] = {
        "name": args.model,
        "implementation": "mlserver_onnx.OnnxModel",
        "parameters": {"uri": str(Path(args.onnx).resolve())},
    }
    if args.max_batch_size > 1:
        model["max_batch_size"] = args.max_batch_size
        model["max_batch_time"] = args.max_batch_time_ms / 1000.0
    Settings.model_validate(server)
    ModelSettings.model_validate({**model, "implementation": "mlserver.MLModel"})
    (root / "settings.json").write_text(json.dumps(server, indent=1))
    (root / args.model / "model-settings.json").write_text(json.dumps(model, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-settings", help="write settings.json and model-settings.json")
    w.add_argument("--root", required=True)
    w.add_argument("--model", required=True)
    w.add_argument("--onnx", required=True)
    w.add_argument("--http-port", type=int, required=True)
    w.add_argument("--grpc-port", type=int, required=True)
    w.add_argument("--metrics-port", type=int, required=True)
    w.add_argument("--parallel-workers", type=int, default=0, help="inference processes (0: in the serving one)")
    w.add_argument("--max-batch-size", type=int, default=0, help="> 1 turns adaptive batching on")
    w.add_argument("--max-batch-time-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    write_settings(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
