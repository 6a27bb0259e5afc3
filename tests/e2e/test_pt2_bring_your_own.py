"""A plain AOTInductor package (``aoti_compile_and_package``, no tensorgate sidecar) served end to end: signature
from config.yaml or from the package, answers equal to eager PyTorch over tritonclient REST and gRPC, and a
package that records nothing, with no config, UNAVAILABLE with the config keys to write in the repository index."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import yaml

from tests.serving import ServerProcess, index_row, wait_until
from tests.torch_models import eager_outputs, family_inputs, plain_aoti_package, without_wrapper_source

ATOL = 1e-4
CONFIG = {
    "runtime": "torch_aoti",
    "options": {"filename": "two_heads.pt2"},
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 8]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, 4]},
    ],
    "outputs": [
        {"name": "score", "datatype": "FP32", "shape": [-1, 6]},
        {"name": "pooled", "datatype": "FP32", "shape": [-1, 6]},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    package = plain_aoti_package(tmp_path_factory)
    store = tmp_path_factory.mktemp("byo_store")
    # config.yaml names inputs and outputs; the file keeps the name it was built under
    (store / "byo" / "1").mkdir(parents=True)
    shutil.copy(package, store / "byo" / "1" / "two_heads.pt2")
    (store / "byo" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    # no config: what the package records is enough
    (store / "byo_recorded" / "1").mkdir(parents=True)
    shutil.copy(package, store / "byo_recorded" / "1" / "model.pt2")
    # no config and nothing recorded: refused, with the fix
    (store / "byo_bare" / "1").mkdir(parents=True)
    without_wrapper_source(package, store / "byo_bare" / "1" / "model.pt2")
    proc = ServerProcess(
        store, tmp_path_factory.mktemp("byo_server"), ["--poll-interval", "0", "--no-strict-readiness"]
    )
    proc.start(timeout=300)
    wait_until(lambda: all(index_row(proc, m, 1) for m in ("byo", "byo_recorded", "byo_bare")), "every model indexed")
    yield proc
    proc.stop()


def _infer(module: object, address: str, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    client = module.InferenceServerClient(address)  # type: ignore[attr-defined]
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    return {name: result.as_numpy(name) for name in ("score", "pooled")}


def test_served_with_config_naming_inputs_and_outputs(server: ServerProcess) -> None:
    meta = server.client.get("/v2/models/byo").json()
    assert meta["platform"] == "torch_aoti"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x", "FP32", [-1, 8]),
        ("ids", "INT64", [-1, 4]),
    ]
    assert [t["name"] for t in meta["outputs"]] == ["score", "pooled"]
    assert server.client.get("/v2/models/byo/config").json()["default_model_filename"] == "two_heads.pt2"
    for batch in (1, 5):
        inputs = family_inputs("multi", batch, seed=batch)
        want = eager_outputs("multi", inputs)
        for module, address in ((th, server.http), (tg, server.grpc)):
            got = _infer(module, address, "byo", inputs)
            for name, expected in want.items():
                np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL, err_msg=f"{name} {module.__name__}")


def test_served_from_what_the_package_records(server: ServerProcess) -> None:
    meta = server.client.get("/v2/models/byo_recorded").json()
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [("input_0", [-1, 8]), ("input_1", [-1, 4])]
    inputs = family_inputs("multi", 3)
    got = _infer(th, server.http, "byo_recorded", {"input_0": inputs["x"], "input_1": inputs["ids"]})
    for name, expected in eager_outputs("multi", inputs).items():
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL, err_msg=name)


def test_a_package_without_a_signature_says_which_config_keys_to_write(server: ServerProcess) -> None:
    row = index_row(server, "byo_bare", 1)
    assert row is not None and row["state"] == "UNAVAILABLE", row
    reason = row["reason"]
    assert "config.yaml" in reason and "inputs: [{name: input_0, datatype:" in reason, reason
    assert "outputs:" in reason, reason
    reply = server.client.post("/v2/models/byo_bare/infer", json={"inputs": []})
    assert reply.status_code in (400, 404, 503), reply.text
