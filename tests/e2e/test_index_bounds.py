"""No single request stops the server: an index beyond an embedding's table, sent to the same model on every
runtime (ONNX, torch.export, AOTInductor — which would abort the process — and a SavedModel), is a 400 /
INVALID_ARGUMENT naming the input, and the server and its other models keep answering."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.serving import ServerProcess
from tests.torch_models import VOCAB, family_inputs, shared_torch_store

TF_VOCAB = 20


def build_embedding_savedmodel(folder: Path) -> None:
    """ids [N, 4] INT64 -> pooled [N, 6]: a lookup in a [20, 6] table (tf.gather), as a SavedModel."""
    import tensorflow as tf

    class Lookup(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.Variable(np.random.default_rng(0).standard_normal((TF_VOCAB, 6)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int64, name="ids")])
        def serve(self, ids: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"pooled": tf.reduce_sum(tf.gather(self.table, ids), axis=1)}

    module = Lookup()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    torch_store, _ = shared_torch_store(tmp_path_factory)
    store = tmp_path_factory.mktemp("bounds_store")
    for fmt in ("onnx", "torch_export", "torch_aoti"):
        shutil.copytree(torch_store / f"multi_{fmt}", store / f"multi_{fmt}")
    build_embedding_savedmodel(store / "lookup_tf" / "1")
    proc = ServerProcess(store, tmp_path_factory.mktemp("bounds"), ["--poll-interval", "0"]).start(timeout=300)
    yield proc
    proc.stop()


def _v2(inputs: dict[str, np.ndarray]) -> dict[str, object]:
    return {"inputs": [{"name": n, "datatype": "INT64" if a.dtype == np.int64 else "FP32", "shape": list(a.shape),
                        "data": a.ravel().tolist()} for n, a in inputs.items()]}  # fmt: skip


MODELS = {"multi_onnx": VOCAB, "multi_torch_export": VOCAB, "multi_torch_aoti": VOCAB, "lookup_tf": TF_VOCAB}


def _inputs(model: str, bad: int | None = None) -> dict[str, np.ndarray]:
    inputs = family_inputs("multi", 2)
    if model == "lookup_tf":
        inputs = {"ids": inputs["ids"]}
    if bad is not None:
        inputs["ids"] = inputs["ids"].copy()
        inputs["ids"][1, 2] = bad
    return inputs


@pytest.mark.parametrize("model", sorted(MODELS))
def test_an_index_beyond_the_table_is_a_400_naming_the_input(server: ServerProcess, model: str) -> None:
    url = server.http_url
    for bad in (MODELS[model] + 5, 10**9):
        refused = httpx.post(f"{url}/v2/models/{model}/infer", json=_v2(_inputs(model, bad)), timeout=60)
        assert refused.status_code == 400, refused.text
        assert "'ids'" in refused.json()["error"]
    with grpc.insecure_channel(server.grpc) as channel:
        request = service_pb2.ModelInferRequest(model_name=model)
        for name, array in _inputs(model, MODELS[model]).items():
            request.inputs.add(
                name=name, datatype="INT64" if array.dtype == np.int64 else "FP32", shape=list(array.shape)
            )
            request.raw_input_contents.append(array.tobytes())
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'ids'" in caught.value.details()
    # the server and every model keep answering
    for other in MODELS:
        ok = httpx.post(f"{url}/v2/models/{other}/infer", json=_v2(_inputs(other)), timeout=60)
        assert ok.status_code == 200, (other, ok.text)
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
