"""An ONNX Runtime model served by the KServe 0.21 Python model server, in its fairest fast configuration.

Runs inside ``.tools/peers/kserve`` (made by ``setup.sh``). The model is KServe's idiomatic custom predictor: a
``kserve.Model`` subclass with ``load`` and a ``predict`` that returns a V2 ``InferResponse``, started with
``kserve.ModelServer().start([model])``. Per-request latency logging is off and the access and trace loggers
are raised to WARNING; ``--workers N`` forks N uvicorn REST processes (KServe's own multi-process mode; its
gRPC server stays in the main process); the rest stays at KServe's defaults.

    python kserve_onnx.py --model_name NAME --onnx PATH --http_port N --grpc_port M
"""

from __future__ import annotations

import argparse
import logging
import sys

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, model_server
from kserve.utils.utils import generate_uuid


class OnnxModel(kserve.Model):
    """One ORT session, one intra-op thread, sequential execution: the same settings every server gets."""

    def __init__(self, name: str, onnx_path: str) -> None:
        super().__init__(name)
        self.onnx_path = onnx_path
        self.ready = False

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(self.onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        data = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        results = self._session.run(self._outputs, {self._input: data})
        outputs = [
            InferOutput(name=name, shape=list(value.shape), datatype="FP32", data=value)
            for name, value in zip(self._outputs, results, strict=True)
        ]
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or generate_uuid())

    # KServe's --workers > 1 spawns its REST processes and pickles the registered models into them: an ORT
    # session cannot be pickled, so each process opens its own from the path.
    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        for key in ("_session", "_input", "_outputs"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if self.ready:
            self.load()


def main() -> int:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--onnx", required=True, help="path of the model.onnx to serve")
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.onnx)
    model.load()
    # --workers > 1: KServe forks that many uvicorn REST processes; its gRPC server stays in this process.
    server = kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, enable_latency_logging=False, workers=args.workers
    )
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
