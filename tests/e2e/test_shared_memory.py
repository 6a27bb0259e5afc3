"""Triton's system shared-memory extension end to end: tritonclient's HTTP and gRPC clients with
``tritonclient.utils.shared_memory``, as Triton's simple_http_shm_client.py / simple_grpc_shm_client.py use them
(register input and output regions, infer, read the outputs from shared memory, status, unregister), the errors
over both protocols, CUDA shared memory refused clearly, and each request counted once."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException, serialize_byte_tensor, serialized_byte_size

from tests.serving import ServerProcess, metric_value

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory (/dev/shm)")

A = np.arange(8, dtype=np.float32).reshape(2, 4)
B = np.full((2, 4), 3.0, dtype=np.float32)
SIZE = A.nbytes  # 32 bytes per tensor


@pytest.fixture(scope="module")
def shm_server(onnx_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--poll-interval", "0", "--no-strict-readiness", "--allow-client-shm=true"]  # Triton's spelling
    proc = ServerProcess(onnx_store, tmp_path_factory.mktemp("shm_server"), args).start()
    yield proc
    proc.stop()


@pytest.fixture
def http(shm_server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(shm_server.http)
    yield client
    client.unregister_system_shared_memory()
    client.close()


@pytest.fixture
def grpc(shm_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(shm_server.grpc)
    yield client
    client.unregister_system_shared_memory()
    client.close()


@pytest.fixture
def regions() -> Iterator[Callable[[str, int], tuple[Any, str]]]:
    """Creates shared memory objects with tritonclient (unique keys) and destroys them after the test."""
    made: list[Any] = []

    def create(name: str, byte_size: int) -> tuple[Any, str]:
        key = f"/tg_test_{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        made.append(handle)
        return handle, key

    yield create
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _inputs(module: Any) -> list[Any]:
    inputs = [module.InferInput("a", [2, 4], "FP32"), module.InferInput("b", [2, 4], "FP32")]
    inputs[0].set_shared_memory("input_data", SIZE)
    inputs[1].set_shared_memory("input_data", SIZE, offset=SIZE)
    return inputs


def _outputs(module: Any) -> list[Any]:
    outputs = [module.InferRequestedOutput("sum"), module.InferRequestedOutput("prod")]
    outputs[0].set_shared_memory("output_data", SIZE)
    outputs[1].set_shared_memory("output_data", SIZE, offset=SIZE)
    return outputs


def _prepare(client: Any, regions: Callable[[str, int], tuple[Any, str]]) -> tuple[Any, str, str]:
    """Triton's example, on two_io: inputs a and b in one region, outputs sum and prod in another."""
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    out_handle, out_key = regions("output_data", SIZE * 2)
    client.register_system_shared_memory("output_data", out_key, SIZE * 2)
    in_handle, in_key = regions("input_data", SIZE * 2)
    shm.set_shared_memory_region(in_handle, [A])
    shm.set_shared_memory_region(in_handle, [B], offset=SIZE)
    client.register_system_shared_memory("input_data", in_key, SIZE * 2)
    return out_handle, in_key, out_key


def _read_outputs(result: Any, out_handle: Any) -> tuple[np.ndarray, np.ndarray]:
    found = []
    for name, offset in (("sum", 0), ("prod", SIZE)):
        output = result.get_output(name)
        if isinstance(output, dict):  # HTTP: the JSON header
            datatype, shape = output["datatype"], output["shape"]
            assert "data" not in output and "parameters" not in output
        else:
            datatype, shape = output.datatype, list(output.shape)
        found.append(shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(datatype), shape, offset=offset))
    return found[0], found[1]


def test_http_example_flow(http: httpclient.InferenceServerClient, regions: Any) -> None:
    out_handle, in_key, out_key = _prepare(http, regions)
    result = http.infer("two_io", _inputs(httpclient), outputs=_outputs(httpclient))
    total, product = _read_outputs(result, out_handle)
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(product, A * B)
    status = {r["name"]: r for r in http.get_system_shared_memory_status()}
    assert status == {
        "input_data": {"name": "input_data", "key": in_key, "offset": 0, "byte_size": SIZE * 2},
        "output_data": {"name": "output_data", "key": out_key, "offset": 0, "byte_size": SIZE * 2},
    }
    assert http.get_system_shared_memory_status("input_data") == [status["input_data"]]
    http.unregister_system_shared_memory("input_data")
    assert [r["name"] for r in http.get_system_shared_memory_status()] == ["output_data"]
    http.unregister_system_shared_memory()
    assert http.get_system_shared_memory_status() == []
    assert "system_shared_memory" in http.get_server_metadata()["extensions"]


def test_grpc_example_flow_unary_and_stream(grpc: grpcclient.InferenceServerClient, regions: Any) -> None:
    out_handle, in_key, _ = _prepare(grpc, regions)
    result = grpc.infer("two_io", _inputs(grpcclient), outputs=_outputs(grpcclient))
    assert [len(raw) for raw in result.get_response().raw_output_contents] == [0, 0]
    total, product = _read_outputs(result, out_handle)
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(product, A * B)
    status = grpc.get_system_shared_memory_status()
    assert sorted(status.regions) == ["input_data", "output_data"]
    assert (status.regions["input_data"].key, status.regions["input_data"].byte_size) == (in_key, SIZE * 2)

    shm.set_shared_memory_region(out_handle, [np.zeros((4, 4), np.float32)])  # the stream must write it again
    answers: list[Any] = []
    grpc.start_stream(callback=lambda result, error: answers.append((result, error)))
    try:
        grpc.async_stream_infer("two_io", _inputs(grpcclient), outputs=_outputs(grpcclient))
    finally:
        grpc.stop_stream()  # waits for the answers
    [(streamed, error)] = answers
    assert error is None
    total, product = _read_outputs(streamed, out_handle)
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(product, A * B)
    grpc.unregister_system_shared_memory()
    assert len(grpc.get_system_shared_memory_status().regions) == 0


def test_mixed_inputs_and_outputs(grpc: grpcclient.InferenceServerClient, regions: Any) -> None:
    """One input in shared memory and one raw; one output in shared memory and one in the response."""
    handle, key = regions("mixed", SIZE * 2)
    shm.set_shared_memory_region(handle, [A])
    grpc.register_system_shared_memory("mixed", key, SIZE * 2)
    inputs = [grpcclient.InferInput("a", [2, 4], "FP32"), grpcclient.InferInput("b", [2, 4], "FP32")]
    inputs[0].set_shared_memory("mixed", SIZE)
    inputs[1].set_data_from_numpy(B)
    outputs = [grpcclient.InferRequestedOutput("sum"), grpcclient.InferRequestedOutput("prod")]
    outputs[0].set_shared_memory("mixed", SIZE, offset=SIZE)
    result = grpc.infer("two_io", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("prod"), A * B)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [2, 4], offset=SIZE), A + B)


def test_bytes_tensors_use_length_prefixes(http: httpclient.InferenceServerClient, regions: Any) -> None:
    data = np.array([[b"shared", b"", "m\u00e9moire".encode()]], dtype=np.object_)
    serialized = serialize_byte_tensor(data)
    size = serialized_byte_size(serialized)
    in_handle, in_key = regions("bytes_in", size)
    shm.set_shared_memory_region(in_handle, [serialized])
    out_handle, out_key = regions("bytes_out", size + 16)
    http.register_system_shared_memory("bytes_in", in_key, size)
    http.register_system_shared_memory("bytes_out", out_key, size + 16)
    inputs = [httpclient.InferInput("input", [1, 3], "BYTES")]
    inputs[0].set_shared_memory("bytes_in", size)
    outputs = [httpclient.InferRequestedOutput("output")]
    outputs[0].set_shared_memory("bytes_out", size + 16)
    result = http.infer("identity_bytes", inputs, outputs=outputs)
    header = result.get_output("output")
    assert (header["datatype"], header["shape"]) == ("BYTES", [1, 3])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.object_, [1, 3]), data)


# -- errors, over both protocols -----------------------------------------------------------------------------------
def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), info.value.message()


def _both(shm_server: ServerProcess) -> list[tuple[Any, Any, dict[str, str]]]:
    """(client module, client, code names as each client reports them)."""
    codes = {"INVALID_ARGUMENT": "400", "PERMISSION_DENIED": "403", "NOT_FOUND": "404", "ALREADY_EXISTS": "409",
             "UNIMPLEMENTED": "501"}  # fmt: skip
    return [
        (httpclient, httpclient.InferenceServerClient(shm_server.http), codes),
        (grpcclient, grpcclient.InferenceServerClient(shm_server.grpc), {c: f"StatusCode.{c}" for c in codes}),
    ]


def _object(tmp_name: str, size: int) -> str:
    """A shared memory object made by hand: /dev/shm/<name> of ``size`` bytes; its key."""
    path = Path("/dev/shm") / tmp_name
    with open(path, "wb") as f:
        f.truncate(size)
    return "/" + tmp_name


def test_registration_errors(shm_server: ServerProcess, tmp_path: Path) -> None:
    name = f"tg_test_{uuid.uuid4().hex[:12]}"
    key = _object(name, 64)
    link = f"{name}_link"
    os.symlink(f"/dev/shm/{name}", f"/dev/shm/{link}")
    try:
        for _module, client, code in _both(shm_server):
            client.register_system_shared_memory("r", key, 64)
            status, message = _error(lambda c=client: c.register_system_shared_memory("r", key, 64))
            assert status == code["ALREADY_EXISTS"] and "already registered" in message
            for bad_key, expected in (
                ("/../etc/passwd", "not a POSIX shared memory name"),
                ("/a/b", "not a POSIX shared memory name"),
                ("/..", "not a POSIX shared memory name"),
                (f"/{name}_missing", "no shared memory object"),
                (f"/{link}", "cannot open"),  # a symbolic link is never followed
            ):
                status, message = _error(lambda c=client, k=bad_key: c.register_system_shared_memory("s", k, 8))
                assert status == code["INVALID_ARGUMENT"] and expected in message, message
            status, message = _error(lambda c=client: c.register_system_shared_memory("s", key, 64, offset=8))
            assert status == code["INVALID_ARGUMENT"] and "runs past the end" in message
            status, message = _error(lambda c=client: c.register_system_shared_memory("bad/name", key, 8))
            assert status in (code["INVALID_ARGUMENT"], "404"), message  # REST: no such route for a slash
            status, message = _error(lambda c=client: c.get_system_shared_memory_status("nope"))
            assert status == code["NOT_FOUND"] and "nope" in message
            client.unregister_system_shared_memory("nope")  # unknown: not an error (as in Triton)
            client.unregister_system_shared_memory()
            client.close()
    finally:
        os.unlink(f"/dev/shm/{link}")
        os.unlink(f"/dev/shm/{name}")


def test_inference_errors(shm_server: ServerProcess) -> None:
    name = f"tg_test_{uuid.uuid4().hex[:12]}"
    key = _object(name, SIZE * 2)
    try:
        for module, client, code in _both(shm_server):
            client.register_system_shared_memory("region", key, SIZE * 2)

            def infer(
                size: int = SIZE, offset: int = 0, region: str = "region", out_size: int = SIZE, c: Any = client,
                m: Any = module,
            ) -> Any:  # fmt: skip
                inputs = [m.InferInput("a", [2, 4], "FP32"), m.InferInput("b", [2, 4], "FP32")]
                inputs[0].set_shared_memory(region, size, offset=offset)
                inputs[1].set_data_from_numpy(B)
                outputs = [m.InferRequestedOutput("sum")]
                outputs[0].set_shared_memory("region", out_size, offset=SIZE)
                return c.infer("two_io", inputs, outputs=outputs)

            infer()  # all fine
            status, message = _error(lambda f=infer: f(region="unknown"))
            assert status == code["NOT_FOUND"] and "'unknown'" in message and "input 'a'" in message
            status, message = _error(lambda f=infer: f(size=SIZE - 4))
            assert status == code["INVALID_ARGUMENT"] and "input 'a'" in message and str(SIZE) in message
            status, message = _error(lambda f=infer: f(offset=SIZE + 4))
            assert status == code["INVALID_ARGUMENT"] and "runs past the end" in message
            status, message = _error(lambda f=infer: f(out_size=SIZE - 1))
            assert status == code["INVALID_ARGUMENT"] and "output 'sum'" in message and "at least" in message
            os.truncate(f"/dev/shm/{name}", 8)  # the client shrinks its object behind the server's back
            status, message = _error(infer)
            assert status == code["INVALID_ARGUMENT"] and "register it again" in message
            os.truncate(f"/dev/shm/{name}", SIZE * 2)
            infer()  # the server lived through it
            client.unregister_system_shared_memory()
            status, message = _error(infer)
            assert status == code["NOT_FOUND"]
            client.close()
    finally:
        os.unlink(f"/dev/shm/{name}")


def test_cuda_shared_memory_is_unsupported(shm_server: ServerProcess) -> None:
    for module, client, code in _both(shm_server):
        client.unregister_cuda_shared_memory()  # nothing registered: succeeds, as perf_analyzer needs
        if module is httpclient:
            assert client.get_cuda_shared_memory_status() == []
        else:
            assert len(client.get_cuda_shared_memory_status().regions) == 0
        status, message = _error(lambda c=client: c.register_cuda_shared_memory("c", b"aGFuZGxl", 0, 64))
        assert status == code["UNIMPLEMENTED"]
        assert "CUDA shared memory is not supported" in message
        client.close()


def test_disabled_unless_allowed(server: ServerProcess) -> None:
    """The session's server runs without --allow-client-shm."""
    for _module, client, code in _both(server):
        status, message = _error(lambda c=client: c.register_system_shared_memory("r", "/anything", 8))
        assert status == code["PERMISSION_DENIED"] and "--allow-client-shm" in message
        assert _status_list(client) == []
        client.close()
    assert "system_shared_memory" not in httpx.get(f"{server.http_url}/v2").json()["extensions"]


def _status_list(client: Any) -> list[Any]:
    status = client.get_system_shared_memory_status()
    return list(status) if isinstance(status, list) else list(status.regions)


def test_outcomes_are_counted_once(shm_server: ServerProcess, http: Any, regions: Any) -> None:
    def count(code: str) -> float:
        labels = {"model": "two_io", "version": "1", "protocol": "rest", "code": code}
        return metric_value(shm_server, "tensorgate_requests_total", **labels) or 0.0

    _prepare(http, regions)
    ok, bad = count("OK"), count("INVALID_ARGUMENT")
    http.infer("two_io", _inputs(httpclient), outputs=_outputs(httpclient))
    inputs = _inputs(httpclient)
    inputs[0].set_shared_memory("input_data", SIZE * 2)  # wrong size
    _error(lambda: http.infer("two_io", inputs, outputs=_outputs(httpclient)))
    assert (count("OK") - ok, count("INVALID_ARGUMENT") - bad) == (1.0, 1.0)


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_perf_analyzer_with_shared_memory(shm_server: ServerProcess, tmp_path: Path, kind: str) -> None:
    """Triton's perf_analyzer ``--shared-memory system`` (it unregisters every system and CUDA region first, then
    registers its own and sends every tensor through them)."""
    from tests.e2e.test_perf_analyzer import perf_analyzer

    def ok() -> float:
        labels = {"model": "dense", "version": "2", "protocol": "rest" if kind == "http" else "grpc", "code": "OK"}
        return metric_value(shm_server, "tensorgate_requests_total", **labels) or 0.0

    before = ok()
    cmd = [str(perf_analyzer()), "-m", "dense", "-u", shm_server.http if kind == "http" else shm_server.grpc,
           "-i", kind, "--shared-memory", "system", "--concurrency-range", "1:1", "--request-count", "50"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    output = f"$ {' '.join(cmd)}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0 and "error" not in (run.stdout + run.stderr).lower(), output
    assert "Successful request count: 50" in run.stdout, output
    assert ok() - before >= 50
