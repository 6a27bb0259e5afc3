"""Config overrides (``--config-overrides`` folder, the chart's ``models.*``) are merged into the store's config.yaml
field by field: an override of ``sla`` alone keeps the store's options, batching and version policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.lifecycle.controller import ModelController
from model_store import ConfigError, ModelConfig
from model_store.local import LocalStore
from tests.gateway.testbed import StoreFolder, Testbed


def test_an_sla_override_keeps_the_stores_other_fields(store: StoreFolder, tmp_path: Path) -> None:
    store.add("m", 1)
    store.add("m", 2)
    store.config(
        "m",
        "version_policy: {all: true}\noptions: {device: cpu, intra_op_threads: 2}\n"
        "batching: {max_batch_size: 8, max_queue_delay_ms: 2}\nsla: {p50_ms: 5, p99_ms: 20}\n",
    )
    overrides = tmp_path / "overrides"
    overrides.mkdir()
    (overrides / "m.yaml").write_text("sla: {p99_ms: 50}\n")

    async def scenario() -> None:
        async with Testbed(store, sync=False) as bed:
            bed.controller = ModelController(LocalStore(store.root), bed.host, bed.metrics, config_overrides=overrides)
            await bed.controller.sync()
            config = bed.host.models["m"].config
            assert config.sla.p99_ms == 50 and config.sla.p50_ms == 5  # merged inside sla too
            assert config.options == {"device": "cpu", "intra_op_threads": 2}
            assert config.batching is not None and config.batching.max_batch_size == 8
            assert sorted(bed.host.models["m"].versions) == [1, 2]  # the store's version policy still applies

    asyncio.run(scenario())


def test_merge_rules_and_errors_name_both_files() -> None:
    base = "options: {device: cpu, threads: 2}\ninstances: 2\nwarmup: {enabled: true, requests: 3}\n"
    merged = ModelConfig.merged(base, "options: {threads: 4}\ninstances: 1\nwarmup: null\n", "m/config.yaml", "o.yaml")
    assert merged.options == {"device": "cpu", "threads": 4} and merged.instances == 1
    assert merged.warmup.requests == ModelConfig().warmup.requests  # null removed the store's value
    with pytest.raises(ConfigError, match=r"m/config.yaml with o.yaml: instances"):
        ModelConfig.merged(base, "instances: many\n", "m/config.yaml", "o.yaml")
