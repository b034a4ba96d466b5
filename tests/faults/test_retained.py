"""A retained panic (and a retained answer) on a shop's topics, the real daemon restarted 3 times.

The broker replays a retained message at every subscription: before the fix
each restart raised the panic again (3 restarts: 4 panics at the police, 40
notices). Now the live message is taken once and every replay is counted as
``retained`` and dropped; the gateway itself publishes nothing retained to shops.
"""

from __future__ import annotations

import asyncio

import aiomqtt

from bench.faults.retained import publish_retained
from tests.clients import expected_nearest, open_police_session, running, wait_until

ORIGIN = "S00050"
RESTARTS = 3
DEVICE_EVENTS_ONLY = {"rules": {"disable": ["intrusion-when-armed", "robbery-area-alert"]}}
REPLAY_LOG = "ignoring retained messages"


async def retained_on(url: str, topic_filter: str) -> list[str]:
    """Topics under ``topic_filter`` that hold a retained message on the broker at ``url``.

    The broker sends retained messages right after the SUBACK; a marker we
    publish after subscribing arrives after all of them, so waiting for it is
    waiting for the complete answer.
    """
    host, port = url.removeprefix("mqtt://").split(":")
    marker = topic_filter.replace("+", "marker-shop")
    found: list[str] = []
    async with aiomqtt.Client(
        host, int(port), identifier="retained-probe", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(topic_filter, qos=1)
        await client.publish(marker, b"marker", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                if str(message.topic) == marker:
                    return found
                found.append(str(message.topic))
    return found


def test_a_retained_panic_is_taken_once_however_often_the_gateway_restarts(
    block_broker, police_broker, start_gateway
):
    gw = start_gateway(status_interval_s=0.5, **DEVICE_EVENTS_ONLY)
    open_police_session(police_broker.url)
    near = expected_nearest(ORIGIN)
    answering, marking = near[0], near[1]

    def replays_logged(reader: str) -> int:
        return gw.log_text().count(f"{reader}: {REPLAY_LOG}")

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=near
        ) as (panels, platform):
            assert platform is not None

            def delivered(kind: str, shop: str) -> list[dict]:
                return [
                    d.body
                    for d in platform.unique
                    if d.body["kind"] == kind and d.body["shop_id"] == shop
                ]

            # No seq or ts: nothing tells a replay from a new press but the retain flag.
            panic = {"device_id": "panel-1", "kind": "panic"}
            await publish_retained(block_broker.url, f"lianfang/v1/shop/{ORIGIN}/event", panic)
            await wait_until(lambda: delivered("panic", ORIGIN), 15, "the live panic at the police")
            await wait_until(lambda: all(panels[s].notices for s in near), 10, "neighbours alerted")
            # Told once means confirmed by the broker before the first stop: a stop between
            # the panels' notices and the gateway reading the PUBACKs rightly tells them again.
            await wait_until(
                lambda: gw.status().get("neighbour_notices") == len(near),
                10,
                "the notices confirmed to the gateway",
            )
            alert_id = panels[answering].notices[0].body["alert_id"]
            await publish_retained(
                block_broker.url,
                f"lianfang/v1/shop/{answering}/response",
                {"alert_id": alert_id, "response": "coming"},
            )
            await wait_until(
                lambda: delivered("response", answering), 15, "the live answer at the police"
            )

            for restart in range(1, RESTARTS + 1):
                await asyncio.to_thread(gw.stop)
                await asyncio.to_thread(gw.start)
                await wait_until(
                    lambda n=restart: (
                        replays_logged("shops") == n and replays_logged("responses") == n
                    ),
                    15,
                    f"both replays seen and dropped after restart {restart}",
                )
                # A later event from another shop: anything journalled from the replays
                # (alarms drain first) would reach the police before it.
                await panels[marking].send("door_close")
                await wait_until(
                    lambda n=restart: len(delivered("door_close", marking)) == n,
                    15,
                    f"the marker after restart {restart}",
                )
            await wait_until(
                lambda: (
                    gw.status()["rejected"].get("shops.retained") == 1
                    and gw.status()["rejected"].get("responses.retained") == 1
                ),
                10,
                "the replays counted as retained in the status",
            )
            assert len(delivered("panic", ORIGIN)) == 1
            assert len(delivered("response", answering)) == 1
            assert platform.duplicates == 0
            assert {s: len(panels[s].notices) for s in near} == dict.fromkeys(near, 1)
            # The gateway's notices are never retained: no shop finds an old one on subscribing.
            assert await retained_on(block_broker.url, "lianfang/v1/shop/+/notify") == []

    asyncio.run(scenario())
