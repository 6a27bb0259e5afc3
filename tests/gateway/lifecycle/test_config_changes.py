"""What a changed config.yaml does to what is loaded: labels and the version policy only re-route (the versions that
stay are the same loaded objects), anything a load depends on loads the versions again."""

from __future__ import annotations

import asyncio

from tests.gateway.testbed import StoreFolder, Testbed


def test_labels_and_policy_reroute_without_reloading(store: StoreFolder) -> None:
    for v in (1, 2, 3):
        store.add("m", v)
    store.config("m", "version_policy: {specific: [1, 2]}\nversion_labels: {stable: 1}\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            loaded = dict(bed.host.models["m"].versions)
            assert sorted(loaded) == [1, 2]
            store.config("m", "version_policy: {specific: [2, 3]}\nversion_labels: {stable: 2, canary: 3}\n")
            await bed.controller.sync()
            entry = bed.host.models["m"]
            assert sorted(entry.versions) == [2, 3]
            assert entry.versions[2] is loaded[2]  # kept serving as it was
            assert bed.router.resolve("m", label="stable") is loaded[2]
            assert bed.router.resolve("m", label="canary").version == 3

            store.config("m", "version_policy: {specific: [2, 3]}\nversion_labels: {stable: 2}\ninstances: 1\n")
            await bed.controller.sync()
            assert bed.host.models["m"].versions[2] is not loaded[2]  # a load setting changed: loaded again
            assert bed.host.models["m"].versions[2].config.instances == 1

    asyncio.run(scenario())
