"""What system shared memory saves: the same requests as JSON, as the binary tensor extension, and through shared
memory (Triton's extension, with tritonclient.utils.shared_memory), over REST, plus raw contents vs shared memory
over gRPC — on the demo CNN and on a multi-MB tensor (a [1, N] FP32 input scaled into an output of the same size).

Builds a store in a temporary folder (the CNN exported to ONNX, the scale model written with onnx.helper), starts a
gateway with ``--allow-client-shm``, checks every mode's answer against numpy once, then runs rounds in which every
mode sends requests back to back (one at a time) for ``--window`` seconds, the order of the modes alternating
between rounds. The table shows each mode's median latency and throughput over its requests, and the ratio of its
median latency to the binary extension's.

    .venv/bin/python bench/shared_memory.py --rounds 3 --window 2 [--elements 4194304] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.table import Table

from gateway.cli.bench.server import GatewayProcess

MODES = ("rest-json", "rest-binary", "rest-shm", "grpc-raw", "grpc-shm")
console = Console(stderr=True)


def say(line: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}")


def scale_model(path: Path) -> None:
    """x [1, -1] FP32 -> y = 2x: the data moved dominates, the compute is one pass."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n"])],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_store(root: Path) -> None:
    from gateway.cli.export import export_torch

    say("exporting the demo CNN to ONNX")
    export_torch("gateway.cli.demo:cnn", root, "cnn", ("image:FP32:-1,3,64,64",), output_names=("logits",),
                 max_batch=32, formats=("onnx",), progress=lambda line: say(f"  {line}"))  # fmt: skip
    scale_model(root / "scale" / "1" / "model.onnx")


class Case:
    """One model, one input, one output: the clients and shared memory regions each mode uses."""

    def __init__(self, name: str, model: str, x: np.ndarray, output: str, expected: np.ndarray, gw: GatewayProcess):
        self.name, self.model, self.x, self.output, self.expected = name, model, x, output, expected
        self.input = "x" if model.startswith("scale") else "image"
        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{gw.ports['http']}", connection_timeout=600,
                                                     network_timeout=600)  # fmt: skip
        self.grpc = grpcclient.InferenceServerClient(gw.grpc_target)
        self.in_size, self.out_size = x.nbytes, expected.nbytes
        tag = uuid.uuid4().hex[:8]
        self.in_region, self.out_region = f"{name}_in_{tag}", f"{name}_out_{tag}"
        self.in_handle = shm.create_shared_memory_region(self.in_region, f"/tg_bench_{tag}_in", self.in_size)
        self.out_handle = shm.create_shared_memory_region(self.out_region, f"/tg_bench_{tag}_out", self.out_size)
        self.http.register_system_shared_memory(self.in_region, f"/tg_bench_{tag}_in", self.in_size)
        self.http.register_system_shared_memory(self.out_region, f"/tg_bench_{tag}_out", self.out_size)

    def close(self) -> None:
        self.http.unregister_system_shared_memory(self.in_region)
        self.http.unregister_system_shared_memory(self.out_region)
        shm.destroy_shared_memory_region(self.in_handle)
        shm.destroy_shared_memory_region(self.out_handle)
        self.http.close()
        self.grpc.close()

    def call(self, mode: str) -> np.ndarray:
        """One request in ``mode``: the client's whole job, from its array to the answer's array."""
        module: Any = grpcclient if mode.startswith("grpc") else httpclient
        client: Any = self.grpc if mode.startswith("grpc") else self.http
        inp = module.InferInput(self.input, list(self.x.shape), "FP32")
        out = module.InferRequestedOutput(self.output) if module is grpcclient else \
            module.InferRequestedOutput(self.output, binary_data=mode != "rest-json")  # fmt: skip
        if mode.endswith("shm"):
            shm.set_shared_memory_region(self.in_handle, [self.x])
            inp.set_shared_memory(self.in_region, self.in_size)
            out.set_shared_memory(self.out_region, self.out_size)
            client.infer(self.model, [inp], outputs=[out])
            return shm.get_contents_as_numpy(self.out_handle, np.float32, list(self.expected.shape))
        if module is httpclient:
            inp.set_data_from_numpy(self.x, binary_data=mode == "rest-binary")
        else:
            inp.set_data_from_numpy(self.x)
        result = client.infer(self.model, [inp], outputs=[out])
        return result.as_numpy(self.output)  # type: ignore[no-any-return]


def window(call: Callable[[], Any], seconds: float) -> list[float]:
    """Requests back to back for ``seconds`` (at least one): each one's latency in seconds."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tensorgate-shm-bench-") as tmp:
        store = Path(tmp) / "store"
        build_store(store)
        say("starting the gateway (--allow-client-shm)")
        gw = GatewayProcess(str(store), ["--allow-client-shm", "--max-request-bytes", str(1 << 30),
                                         "--grpc-max-message-bytes", str(1 << 30)]).start()  # fmt: skip
        rng = np.random.default_rng(0)
        try:
            import torch

            from runtimes.export.demo_networks import cnn

            image = rng.standard_normal((args.cnn_batch, 3, 64, 64)).astype(np.float32)
            with torch.no_grad():
                logits = cnn()(torch.from_numpy(image)).numpy()
            big = rng.standard_normal((1, args.elements)).astype(np.float32)
            cases = [
                Case("cnn", "cnn_onnx", image, "logits", logits, gw),
                Case("big", "scale", big, "y", big * 2, gw),
            ]
            for case in cases:
                for mode in MODES:
                    np.testing.assert_allclose(case.call(mode), case.expected, rtol=1e-4, atol=1e-4)
                say(f"{case.name}: every mode answers correctly ({case.x.nbytes / 1e6:.2f} MB in)")
            times: dict[tuple[str, str], list[float]] = {(c.name, m): [] for c in cases for m in MODES}
            for r in range(args.rounds):
                order = MODES if r % 2 == 0 else tuple(reversed(MODES))
                for case in cases:
                    for mode in order:
                        seconds = window(functools.partial(case.call, mode), args.window)
                        times[(case.name, mode)].extend(seconds)
                        say(f"round {r + 1}/{args.rounds} {case.name} {mode}: {len(seconds)} requests, "
                            f"median {statistics.median(seconds) * 1e3:.2f} ms")  # fmt: skip
            for case in cases:
                case.close()
        finally:
            gw.stop()
    rows = []
    for case in cases:
        binary = statistics.median(times[(case.name, "rest-binary")])
        for mode in MODES:
            t = times[(case.name, mode)]
            median = statistics.median(t)
            rows.append({
                "case": case.name, "mode": mode, "bytes_in": case.in_size, "bytes_out": case.out_size,
                "requests": len(t), "median_ms": median * 1e3, "req_per_s": len(t) / sum(t),
                "vs_binary": median / binary,
            })  # fmt: skip
    return {"rounds": args.rounds, "window_s": args.window, "elements": args.elements, "rows": rows}


def show(result: dict[str, Any]) -> None:
    table = Table(title="shared memory vs the binary extension vs JSON (one request at a time)")
    for column in ("case", "mode", "MB in/out", "requests", "median ms", "req/s", "latency vs rest-binary"):
        table.add_column(column, justify="left" if column in ("case", "mode") else "right")
    for row in result["rows"]:
        table.add_row(row["case"], row["mode"], f"{row['bytes_in'] / 1e6:.2f}/{row['bytes_out'] / 1e6:.2f}",
                      str(row["requests"]), f"{row['median_ms']:.2f}", f"{row['req_per_s']:.1f}",
                      f"{row['vs_binary']:.2f}x")  # fmt: skip
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every mode (default 3)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per mode per round (default 2)")
    parser.add_argument("--elements", type=int, default=4 * 1024 * 1024, help="FP32 elements of the big input")
    parser.add_argument("--cnn-batch", type=int, default=8, help="images per CNN request (default 8)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
