"""Two gateways on one broker: each reads only its own shops' events (issue 14).

Before, every gateway subscribed to ``lianfang/v1/shop/+/event``, so on a
shared broker each parsed and rejected every other gateway's events (and a
flood at one block reached them all).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.clients import running, wait_until
from tests.harness import REPO, TestGateway, init_config

CITY = REPO / "tests" / "fixtures" / "city-60-blocks.csv"
SHOP_OF = {"GW-001": "S01001", "GW-002": "S02001"}


def test_gateways_sharing_a_broker_each_take_only_their_own_shops(
    tmp_path: Path, block_broker, police_broker, gateway_process
):
    """A panic and an answer at each block: each gateway takes its own, rejects none of the other's."""
    gateways = {}
    for gateway_id in SHOP_OF:
        config = init_config(
            tmp_path / gateway_id,
            block_url=block_broker.url,
            police_url=police_broker.url,
            survey=CITY,
            gateway=gateway_id,
            status_interval_s=0.2,
        )
        gateways[gateway_id] = TestGateway(config)
        gateway_process.append(gateways[gateway_id])
        gateways[gateway_id].start()

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=list(SHOP_OF.values())
        ) as (panels, platform):
            assert platform is not None
            for shop in SHOP_OF.values():
                await panels[shop].send("panic")
            await wait_until(lambda: len(platform.by_id) >= 2, 10, "both panics at the police")
            panics = {
                d.body["shop_id"]: d.body["gateway_id"]
                for d in platform.unique
                if d.body["kind"] == "panic"
            }
            assert panics == {shop: gateway_id for gateway_id, shop in SHOP_OF.items()}
            # An answer from each shop: its own gateway journals it, the other never sees it.
            for shop in SHOP_OF.values():
                await panels[shop].respond(f"A-{shop}", "safe")
            for gw in gateways.values():
                await wait_until(
                    lambda gw=gw: gw.status()["events"] >= 2, 10, "the panic and the answer"
                )
            for gw in gateways.values():
                # A status written after both panics were read: it counts whatever came.
                then = gw.status()["uptime_s"]
                await wait_until(
                    lambda gw=gw, then=then: gw.status()["uptime_s"] > then, 10, "a fresh status"
                )
                assert gw.status()["events"] >= 1
                assert gw.status()["rejected"] == {}

    asyncio.run(scenario())
