"""A scrape never stalls inference: with ~17,000 series in the exposition (150 models that have served traffic),
/metrics scraped back to back on the same HTTP port (OpenMetrics and text, from another process) delays a stream
of cheap inference requests by a few milliseconds at most — where rendering on the event loop used to stall every
request behind it for the whole render (hundreds of ms at this size)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.onnx_models import dense_model
from tests.serving import ServerProcess

MODELS = 150
BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]})
SCRAPER = """
import sys, httpx
url = sys.argv[1]
with httpx.Client(timeout=30) as c:
    n = 0
    while True:
        accept = "application/openmetrics-text; version=1.0.0" if n % 2 else "text/plain"
        c.get(url, headers={"accept": accept, "accept-encoding": "gzip"}).raise_for_status()
        n += 1
        print(n, flush=True)
"""


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("crowded_store")
    data = dense_model(root / "template.onnx").read_bytes()
    (root / "template.onnx").unlink()
    for i in range(MODELS):
        (root / f"m{i:03d}" / "1").mkdir(parents=True)
        (root / f"m{i:03d}" / "1" / "model.onnx").write_bytes(data)
    server = ServerProcess(root, tmp_path_factory.mktemp("crowded"), ["--poll-interval", "0"]).start(timeout=300)
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        for i in range(MODELS):
            assert client.post(f"/v2/models/m{i:03d}/infer", content=BODY).status_code == 200
    yield server
    server.stop()


def latencies(server: ServerProcess, seconds: float) -> np.ndarray:
    out = []
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            assert client.post("/v2/models/m000/infer", content=BODY).status_code == 200
            out.append(time.perf_counter() - t0)
    return np.asarray(out) * 1e3


def test_scrapes_do_not_stall_inference(crowded: ServerProcess, tmp_path: Path) -> None:
    series = sum(1 for line in httpx.get(f"{crowded.http_url}/metrics").text.splitlines() if line[:1] != "#")
    assert series > 15_000
    quiet = latencies(crowded, 2.0)
    log = (tmp_path / "scrapes.txt").open("w")
    scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, f"{crowded.http_url}/metrics"], stdout=log)
    try:
        time.sleep(0.3)
        busy = latencies(crowded, 3.0)
    finally:
        scraper.terminate()
        scraper.wait()
        log.close()
    scrapes = len((tmp_path / "scrapes.txt").read_text().split())
    assert scrapes >= 5, "the scraper did not get through"
    quiet_p99, busy_p99 = np.percentile(quiet, 99), np.percentile(busy, 99)
    # generous for a shared 2-core box; a render on the loop put every scrape's whole render time in here
    assert busy_p99 < quiet_p99 + 15, (quiet_p99, busy_p99, scrapes)
    assert np.median(busy) < np.median(quiet) + 3, (np.median(quiet), np.median(busy))
