"""Testbed: a LocalStore folder of fake models plus the real host, controller, router and data plane over it.

Async tests run each scenario with ``asyncio.run`` (one event loop per test) inside ``async with Testbed(...)``,
which builds the core on a fresh Prometheus registry and closes every model on the way out.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.dataplane import DataPlane
from gateway.core.exchange import Exchange
from gateway.core.types import InferRequest, InferResponse, RequestedOutput, Tensor
from gateway.lifecycle.assembly import Assembler
from gateway.lifecycle.controller import ModelController
from gateway.lifecycle.host import ModelHost
from gateway.lifecycle.model import ModelVersion
from gateway.routing.routes import RouteRouter
from gateway.telemetry.metrics import Metrics
from model_store.local import LocalStore
from tests.gateway.fake_runtime import FakeRuntime, runtime_class


class StoreFolder:
    """Writes fake model versions and config.yaml files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, model: str, version: int, behaviour: str = "2") -> Path:
        folder = self.root / model / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_text(behaviour)
        return folder

    def config(self, model: str, text: str = "", runtime: str = "onnx") -> None:
        (self.root / model).mkdir(parents=True, exist_ok=True)
        head = f"runtime: {runtime}\n" if runtime else ""
        (self.root / model / "config.yaml").write_text(head + text)

    def remove(self, model: str, version: int | None = None) -> None:
        target = self.root / model if version is None else self.root / model / str(version)
        shutil.rmtree(target)


class Testbed:
    """``async with Testbed(folder) as bed``: the store synced once, data plane started."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, folder: StoreFolder, *, sync: bool = True) -> None:
        self.folder = folder
        self.runtime = runtime_class()
        self.metrics = Metrics(CollectorRegistry(auto_describe=False))
        self.ready_log: list[tuple[str, int]] = []
        store = LocalStore(folder.root)
        assembler = Assembler(lambda fmt: self.runtime, self.metrics)
        self.host = ModelHost(store, self.metrics, assembler, on_ready=self._on_ready, drain_timeout=5.0)
        self.controller = ModelController(store, self.host, self.metrics)
        self.router = RouteRouter(self.host, self.metrics.routes)
        self.dataplane = DataPlane(self.host, self.router, self.metrics, self.controller)
        self._sync = sync

    def _on_ready(self, model: ModelVersion) -> None:
        self.runtime.events.append(("ready", model.version))

    async def __aenter__(self) -> Testbed:
        if self._sync:
            await self.controller.sync()
        self.dataplane.started = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.host.close()

    def runtime_of(self, model: str, version: str | int | None = None) -> FakeRuntime:
        runtime = self.router.resolve(model, version).runtime
        assert isinstance(runtime, FakeRuntime)
        return runtime

    async def infer(self, request: InferRequest, protocol: str = "rest") -> InferResponse:
        """``request`` through the data plane's one request path, as a front end of ``protocol`` would send it."""

        async def decode(x: Exchange) -> InferRequest:
            return request

        response: InferResponse = await self.dataplane.infer(
            protocol, decode, lambda r: r, name=request.model, version=request.version
        )
        return response

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample named ``name`` in the exposition, keyed by its sorted labels."""
        text = self.metrics.exposition().decode()
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    out[tuple(sorted(sample.labels.items()))] = sample.value
        return out


def request(
    model: str = "m",
    x: np.ndarray | None = None,
    *,
    version: str | None = None,
    outputs: list[RequestedOutput] | None = None,
    extra: list[Tensor] | None = None,
) -> InferRequest:
    """An InferRequest for the fake model's input ``x`` (default one row [1, 2, 3])."""
    data = np.array([[1.0, 2.0, 3.0]], dtype=np.float32) if x is None else x
    return InferRequest(
        model=model,
        version=version,
        inputs=[Tensor("x", data), *(extra or [])],
        outputs=outputs,
    )


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))
