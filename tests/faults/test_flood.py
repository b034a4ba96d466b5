"""A flood of junk from one client (5,000 QoS 1 messages a second) does not hold panics back.

Before the fix every message, junk or not, queued in one line in front of the
rules: panic -> police p99 went from 14 ms to 2.4-6.3 s. Now the ingest judges
each message as it reads it: junk is dropped before it queues, panics take the
urgent lane, and the flooding shop's door events past its cap are dropped and
counted. The real daemon, a real Mosquitto, a bounded flood; the latency
figure itself belongs to ``bench/faults/flood.py``, the bound here is generous.
"""

from __future__ import annotations

import asyncio
import time

from lab.flood import JUNK_KINDS, RatePublisher, door_events, junk
from tests.clients import expected_nearest, open_police_session, running, wait_until

FLOODER = "S00080"
RATE = 5000
FLOOD_S = 2.0
PANIC_SHOPS = ("S00011", "S00030", "S00050", "S00064")
# Far above the gateway's figure on a quiet machine (tens of ms), below the 2.4-6.3 s of
# before: this machine is shared, so only a bound that no fair run comes near.
GENEROUS_P99_S = 2.0
CAP = 50
SHOP_CAP = {"drivers": [{"kind": "mqtt_ingest", "name": "shops", "shop_event_cap": CAP}]}


def test_panics_overtake_a_junk_flood_and_the_junk_is_counted(
    block_broker, police_broker, start_gateway
):
    """Every panic during the flood reaches the police and its 10 nearest; junk is counted."""
    gw = start_gateway(status_interval_s=0.5, **SHOP_CAP)
    open_police_session(police_broker.url)
    nearest = {shop: expected_nearest(shop) for shop in PANIC_SHOPS}
    panel_shops = sorted({*PANIC_SHOPS, *(s for near in nearest.values() for s in near)})

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=panel_shops
        ) as (panels, platform):
            assert platform is not None
            flood = RatePublisher(
                block_broker.url, "flood", RATE, round(RATE * FLOOD_S), junk(FLOODER)
            ).start()
            await wait_until(lambda: flood.published >= RATE // 4, 10, "the flood under way")
            pressed: dict[str, float] = {}
            for shop in PANIC_SHOPS:
                pressed[shop] = time.perf_counter()
                await panels[shop].send("panic")
                await asyncio.sleep(0.2)  # presses spread over the flood, as people press
            assert flood.published < flood.count, "the panics must land during the flood"

            def police_panics() -> dict[str, float]:
                return {
                    d.body["shop_id"]: d.at
                    for d in platform.unique
                    if d.body["kind"] == "panic" and d.body["shop_id"] in pressed
                }

            await wait_until(lambda: len(police_panics()) == len(PANIC_SHOPS), 20, "every panic")
            for shop, near in nearest.items():
                await wait_until(
                    lambda near=near, shop=shop: all(
                        any(n.body.get("from_shop_id") == shop for n in panels[s].notices)
                        for s in near
                    ),
                    10,
                    f"the 10 notices of {shop}",
                )
            arrived = police_panics()
            slowest = max(arrived[shop] - pressed[shop] for shop in PANIC_SHOPS)
            assert slowest < GENEROUS_P99_S, f"a panic took {slowest:.2f} s during the flood"
            await asyncio.to_thread(flood.join, 30)
            assert flood.acked == flood.count  # the broker took the whole flood

            # A quarter of the flood is door events of the flooder: all but its cap dropped.
            quarter = flood.count // len(JUNK_KINDS)

            def junk_counted() -> bool:
                rejected = gw.status()["rejected"]
                return (
                    all(
                        rejected.get(f"shops.{reason}", 0) == quarter
                        for reason in ("malformed", "unknown_device")
                    )
                    and rejected.get("shops.throttled", 0) >= quarter - 2 * CAP
                )

            await wait_until(junk_counted, 10, "every junk message counted in status")
            # Subscribed to its own shops only: another shop's topic never reaches it.
            assert "shops.unknown_shop" not in gw.status()["rejected"]
            flooder_doors = [d for d in platform.unique if d.body["shop_id"] == FLOODER]
            assert len(flooder_doors) <= 2 * CAP  # its cap per 10 s window, over at most two

    asyncio.run(scenario())
    assert "Traceback" not in gw.log_text()


ORDER_SHOPS = ("S00011", "S00030", "S00050", "S00064")
UNCAPPED = {"drivers": [{"kind": "mqtt_ingest", "name": "shops", "shop_event_cap": 10**6}]}


def test_a_shops_cancel_stays_before_its_next_panic_under_another_shops_flood(
    block_broker, police_broker, start_gateway
):
    """Shop A floods door events; shops B send cancel, then panic: the police see that order.

    The flood is routine work the gateway cannot keep up with, so each cancel
    waits in the routine lane when its panic is read; the panic may overtake
    the flood, not its own shop's cancel.
    """
    start_gateway(**UNCAPPED)
    open_police_session(police_broker.url)

    async def scenario() -> list[dict[str, object]]:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=list(ORDER_SHOPS)
        ) as (panels, platform):
            assert platform is not None
            flood = RatePublisher(
                block_broker.url, "flood", RATE, round(RATE * FLOOD_S), door_events([FLOODER])
            ).start()
            await wait_until(lambda: flood.published >= RATE // 4, 10, "the flood under way")
            for shop in ORDER_SHOPS:
                await panels[shop].send("cancel")
                await panels[shop].send("panic")
            assert flood.published < flood.count, "the presses must land during the flood"

            def theirs() -> list[dict[str, object]]:
                return [
                    d.body
                    for d in platform.unique
                    if d.body["shop_id"] in ORDER_SHOPS and d.body["kind"] in {"cancel", "panic"}
                ]

            await wait_until(lambda: len(theirs()) == 2 * len(ORDER_SHOPS), 30, "every press")
            await asyncio.to_thread(flood.join, 30)
            return theirs()

    arrived = asyncio.run(scenario())
    for shop in ORDER_SHOPS:
        assert [e["kind"] for e in arrived if e["shop_id"] == shop] == ["cancel", "panic"], shop
