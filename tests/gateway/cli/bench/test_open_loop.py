"""The bench that tells the truth: open-loop timing from the intended send time (a backlog shows in the latencies,
where the closed loop's stay flat), golden samples with their own sequence lengths sent to a real gateway, and
perf_analyzer's --input-data format."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from gateway.cli.bench.inputs import InputError, perf_analyzer_samples
from gateway.cli.bench.load import arrival_offsets, closed_loop, open_loop
from model_store.golden import write_golden
from tests.e2e.test_access_log import access_lines
from tests.gateway.cli.bench.test_command import bench
from tests.onnx_models import _save
from tests.serving import ServerProcess

LENGTHS = (3, 7, 12)


def test_arrivals_have_the_asked_rate() -> None:
    constant = arrival_offsets(100, 2.0, "constant")
    assert len(constant) == 200 and np.allclose(np.diff(constant), 0.01)
    poisson = arrival_offsets(1000, 5.0, "poisson", seed=3)
    assert 4700 < len(poisson) < 5300 and poisson.max() < 5.0
    gaps = np.diff(poisson)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps


def test_open_loop_shows_the_backlog_the_closed_loop_hides() -> None:
    """A service of 10 ms per request, one at a time (100/s), offered 200/s: open-loop latency grows with the
    backlog (the last requests waited ~half the window); the closed loop's stays one service time per worker."""

    async def main() -> tuple[list[float], list[float]]:
        lock = asyncio.Lock()

        async def send() -> str | None:
            async with lock:
                await asyncio.sleep(0.01)
            return None

        opened = await open_loop(send, 200, 1.0, "constant")
        closed = await closed_loop(send, 2, 1.0)
        return [v / 1e6 for v in opened.latencies_ns], [v / 1e6 for v in closed.latencies_ns]

    opened, closed = asyncio.run(main())
    assert len(opened) == 200
    assert np.percentile(opened, 99) > 400  # ms: 100 requests of backlog at 10 ms each
    assert np.mean(opened[-20:]) > 5 * np.mean(opened[:20])  # it grows over the window
    assert np.percentile(closed, 99) < 100  # two workers: never more than two requests waiting


def seq_store(root: Path) -> Path:
    """``seq``: identity over x [batch, seq] FP32, with golden samples of sequence lengths 3, 7 and 12."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])],
    )
    _save(graph, root / "seq" / "1" / "model.onnx")
    (root / "seq" / "config.yaml").write_text("sla: {p99_ms: 500}\n")
    rng = np.random.default_rng(0)
    samples = [(lambda x: ({"x": x}, {"y": x}))(rng.standard_normal((1, n)).astype(np.float32)) for n in LENGTHS]
    write_golden(root / "seq", samples)
    return root


def test_open_loop_bench_sends_the_golden_sequence_lengths(tmp_path: Path) -> None:
    store = seq_store(tmp_path / "store")
    server = ServerProcess(store, tmp_path, ["--poll-interval", "0", "--access-log", "--log-format", "json"]).start()
    try:
        code, _stdout, stderr = bench(
            [
                "--url", server.http, "--store", str(store), "--models", "seq", "--protocol", "rest",
                "--concurrency", "", "--rate", "60", "--duration", "1", "--warmup", "0",
                "--json", str(tmp_path / "bench.json"), "--no-progress",
            ]
        )  # fmt: skip
        assert code == 0, stderr
        doc = json.loads((tmp_path / "bench.json").read_text())
        assert doc["settings"]["inputs"]["seq"] == {"source": "golden", "shapes": [[[1, n]] for n in LENGTHS]}
        (run,) = doc["runs"]
        assert (run["mode"], run["rate_rps"], run["error_count"]) == ("open", 60.0, 0)
        assert doc["verdict"] == "open loop" and doc["winner"]["mode"] == "open"
        time.sleep(0.3)
        sizes = Counter(line["request_bytes"] for line in access_lines(server))
    finally:
        server.stop()
    # every request carried one of the three samples, in turn: three body sizes, each its JSON header (within a
    # digit of the others: the shape is written in it) plus 4 bytes per element of its sequence
    big = sorted(size for size, count in sizes.items() if count >= 10)
    assert len(big) == 3
    headers = [size - 4 * n for size, n in zip(big, LENGTHS, strict=True)]
    assert max(headers) - min(headers) <= 2, (big, headers)


SPECS = [
    {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
    {"name": "scale", "datatype": "FP32", "shape": [-1, 2]},
]


def test_perf_analyzer_input_data(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"ids": {"content": [1, 2, 3, 4, 5], "shape": [5]}, "scale": [0.5, 2.0]},
                    {"ids": {"content": [7, 8], "shape": [1, 2]}, "scale": {"content": [1.0, 1.0], "shape": [2]}},
                ]
            }
        )
    )
    first, second = perf_analyzer_samples(path, SPECS, batch=1)
    assert [t.shape for t in first] == [(1, 5), (1, 2)]
    assert np.frombuffer(first[0].data, np.int64).tolist() == [1, 2, 3, 4, 5]
    assert [t.shape for t in second] == [(1, 2), (1, 2)]
    batched = perf_analyzer_samples(path, SPECS, batch=3)
    assert [t.shape for t in batched[0]] == [(3, 5), (3, 2)]
    path.write_text(json.dumps({"data": [{"m": [1, 2, 3]}]}))
    with pytest.raises(InputError, match=r"data\[0\]\.m: .*several free dimensions"):
        perf_analyzer_samples(path, [{"name": "m", "datatype": "FP32", "shape": [-1, -1, -1]}], batch=1)
    path.write_text(json.dumps({"data": [{"ids": {"content": [1], "shape": [1]}}]}))
    with pytest.raises(InputError, match=r"data\[0\] has no input 'scale'"):
        perf_analyzer_samples(path, SPECS, batch=1)
