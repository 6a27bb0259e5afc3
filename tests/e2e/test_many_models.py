"""Many idle models cost no threads: a server with 100 tiny ONNX models holds fewer threads than models, traffic
starts at most ``instances`` threads for a model, and they retire once it is idle (``--idle-thread-s``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as th

from tests.onnx_models import dense_model, dense_weights
from tests.serving import ServerProcess, wait_until

MODELS = 100


def threads(server: ServerProcess) -> int:
    assert server.proc is not None
    return len(os.listdir(f"/proc/{server.proc.pid}/task"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store = tmp_path_factory.mktemp("many_models")
    data = dense_model(store / "_template.onnx").read_bytes()
    (store / "_template.onnx").unlink()
    for i in range(MODELS):
        (store / f"m{i:03d}" / "1").mkdir(parents=True)
        (store / f"m{i:03d}" / "1" / "model.onnx").write_bytes(data)
        (store / f"m{i:03d}" / "config.yaml").write_text("instances: 2\n")
    args = ["--poll-interval", "1", "--idle-thread-s", "1"]
    proc = ServerProcess(store, tmp_path_factory.mktemp("many_models_server"), args).start(timeout=300)
    yield proc
    proc.stop()


def test_idle_models_hold_no_threads(server: ServerProcess, tmp_path: Path) -> None:
    # Strict readiness: every model is READY. With an executor thread per model (or two) the process would hold
    # over 100 (200) threads; what it holds does not depend on the model count.
    idle = threads(server)
    assert idle < MODELS // 2, f"{idle} threads for {MODELS} idle models"

    client = th.InferenceServerClient(server.http)
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    tensor = th.InferInput("x", [1, 16], "FP32")
    tensor.set_data_from_numpy(x)
    answers = [client.infer(f"m{i:03d}", [tensor]).as_numpy("y") for i in range(MODELS)]
    weights, bias = dense_weights()
    for answer in answers:
        np.testing.assert_allclose(answer, x @ weights + bias, rtol=1e-5, atol=1e-5)
    # every model has served, so every model has started an executor thread; idle for a second, they retire
    wait_until(lambda: threads(server) < MODELS // 2, "executor threads retired", timeout=60, server=server)
    # and a model that gets traffic again is served at once
    again = client.infer("m007", [tensor]).as_numpy("y")
    np.testing.assert_array_equal(again, answers[7])
