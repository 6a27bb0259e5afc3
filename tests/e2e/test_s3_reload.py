"""The store in production: a real S3-compatible server, versions swapped under load with zero failed requests,
a corrupt version that never replaces a good one, and a store outage that serving survives."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from tests.model_store.s3server import S3Server
from tests.onnx_models import dense_model
from tests.serving import ServerProcess

X = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)


class Load:
    """Closed-loop traffic over REST and gRPC in background threads; records every outcome."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.outcomes: list[tuple[str, str, str]] = []  # (protocol, version or "", error or "")
        self.outputs: dict[str, np.ndarray] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(p,), daemon=True) for p in ("rest", "grpc")]

    def _loop(self, protocol: str) -> None:
        if protocol == "rest":
            client: object = th.InferenceServerClient(self.server.http)
            inp: object = th.InferInput("x", [1, 16], "FP32")
        else:
            client = tg.InferenceServerClient(self.server.grpc)
            inp = tg.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X)  # type: ignore[attr-defined]
        while not self._stop.is_set():
            try:
                result = client.infer("dense", [inp])  # type: ignore[attr-defined]
            except Exception as exc:
                self.outcomes.append((protocol, "", str(exc)))
                continue
            response = result.get_response()
            version = response["model_version"] if protocol == "rest" else response.model_version
            self.outputs[version] = result.as_numpy("y")
            self.outcomes.append((protocol, version, ""))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def failures(self) -> list[tuple[str, str, str]]:
        return [o for o in self.outcomes if o[2]]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; last outcomes {self.outcomes[-5:]}\n{self.server.log()}"
                )
            time.sleep(0.1)

    def latest_versions(self, n: int = 20) -> set[str]:
        return {v for _p, v, _e in self.outcomes[-n:] if v}

    def versions_since(self, mark: int) -> set[str]:
        return {v for _p, v, _e in self.outcomes[mark:] if v}

    def wait_for_more(self, mark: int, n: int = 20, what: str = "") -> None:
        """Until ``n`` more requests than at ``mark`` have been answered (or failed)."""
        self.wait_for(lambda: len(self.outcomes) >= mark + n, what=f"{n} more requests {what}")


@pytest.fixture()
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


def _index(server: ServerProcess) -> dict[str, dict[str, str]]:
    rows = httpx.post(f"{server.http_url}/v2/repository/index", timeout=10).json()
    return {r["version"]: r for r in rows if r["name"] == "dense"}


def _metric(server: ServerProcess, name: str) -> float:
    for line in httpx.get(f"{server.http_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exposed")


def _wait_for_polls(load: Load, server: ServerProcess, name: str, polls: int) -> None:
    """Until the gateway has polled the store ``polls`` more times, as counted by ``name`` (a metric that changes
    at every successful poll, the last-sync timestamp, or at every failed one, the poll error counter)."""
    for k in range(polls):
        seen = _metric(server, name)
        load.wait_for(lambda seen=seen: _metric(server, name) > seen, what=f"poll {k + 1} of {polls} ({name})")


def _cached_versions(cache: Path) -> set[str]:
    """Versions of ``dense`` that have a copy in the server's S3 cache (partial downloads and markers aside)."""
    return {p.name.split("-")[0] for p in cache.glob("*/prod/dense/*") if p.is_dir() and "." not in p.name}


def test_s3_versions_swap_under_load_without_failures(s3: S3Server, tmp_path: Path) -> None:
    versions = {}
    for v in (1, 2, 4):
        folder = tmp_path / f"src{v}"
        dense_model(folder / "model.onnx", seed=v)
        versions[v] = folder
    (tmp_path / "config.yaml").write_text("warmup: {requests: 3}\n")
    s3.put("prod/dense/config.yaml", (tmp_path / "config.yaml").read_bytes())
    s3.upload_version(versions[1], "dense", 1, prefix="prod", marker="_COMPLETE")
    server = ServerProcess(
        s3.uri("prod"), tmp_path, ["--poll-interval", "0.5", "--cache-dir", str(tmp_path / "cache")], env=s3.env
    ).start()
    try:
        with Load(server) as load:
            load.wait_for(lambda: len(load.outcomes) > 50, what="traffic on v1")
            assert load.latest_versions() == {"1"}

            # a new version is loaded beside the old one and traffic moves to it
            s3.upload_version(versions[2], "dense", 2, prefix="prod", marker="_COMPLETE")
            load.wait_for(lambda: load.latest_versions() == {"2"}, what="traffic on v2")
            load.wait_for(lambda: "1" not in _index(server), what="v1 unloaded")
            # an unloaded version's copy leaves the cache (a pod's cache volume has a size limit)
            load.wait_for(lambda: _cached_versions(tmp_path / "cache") == {"2"}, what="v1's copy removed")

            # a corrupt version never replaces the good one; the failure is visible
            s3.upload_corrupt_version(versions[4], "dense", 3, prefix="prod")
            load.wait_for(lambda: _index(server).get("3", {}).get("state") == "UNAVAILABLE", what="v3 failed")
            assert _index(server)["3"]["reason"]
            failed = len(load.outcomes)
            # the store is read again with v3 still in it, and traffic goes on: all of it on v2
            _wait_for_polls(load, server, "tensorgate_store_last_sync_timestamp_seconds", 2)
            load.wait_for_more(failed, what="after v3 failed")
            assert load.versions_since(failed) == {"2"}
            assert _metric(server, "tensorgate_model_load_failures_total") >= 1

            # deleting the newer versions brings the previous one back; v2 goes
            s3.delete_version("dense", 3, prefix="prod")
            s3.delete_version("dense", 2, prefix="prod")
            load.wait_for(lambda: load.latest_versions() == {"1"}, what="traffic back on v1")
            load.wait_for(lambda: "2" not in _index(server), what="v2 unloaded")

            # the store goes away: serving continues, the store is reported stale
            s3.stop()
            load.wait_for(lambda: _metric(server, "tensorgate_store_stale") == 1.0, what="store stale")
            before = len(load.outcomes)
            # more polls fail while requests keep being answered by v1
            _wait_for_polls(load, server, "tensorgate_store_poll_errors_total", 2)
            load.wait_for_more(before, what="during the outage")
            assert load.versions_since(before) == {"1"}
            assert _metric(server, "tensorgate_store_stale") == 1.0  # all of that happened while the store was out
            assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 200

            # it comes back: polling resumes and picks up a new version
            s3.start()
            s3.upload_version(versions[4], "dense", 4, prefix="prod", marker="_COMPLETE")
            load.wait_for(lambda: _metric(server, "tensorgate_store_stale") == 0.0, what="store fresh again")
            load.wait_for(lambda: load.latest_versions() == {"4"}, what="traffic on v4")
            load.wait_for(lambda: _cached_versions(tmp_path / "cache") == {"4"}, what="only v4 cached")

        assert load.failures() == [], load.failures()[:5]
        counts = Counter(v for _p, v, _e in load.outcomes)
        assert counts["1"] and counts["2"] and counts["4"]
        assert "3" not in counts, "the corrupt version answered requests"
        assert {p for p, _v, _e in load.outcomes} == {"rest", "grpc"}
        for v in ("1", "2", "4"):
            expected = ort.InferenceSession(str(versions[int(v)] / "model.onnx")).run(None, {"x": X})[0]
            np.testing.assert_allclose(load.outputs[v], expected, rtol=1e-6)
    finally:
        server.stop()


def test_s3_store_empty_prefix_is_reported_not_silent(s3: S3Server, tmp_path: Path) -> None:
    server = ServerProcess(s3.uri("nothing-here"), tmp_path, ["--poll-interval", "0"], env=s3.env).start()
    try:
        assert httpx.post(f"{server.http_url}/v2/repository/index").json() == []
        assert httpx.get(f"{server.http_url}/v2/models/dense").status_code == 404
    finally:
        server.stop()
