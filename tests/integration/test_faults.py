"""Faults with real processes: kill -9 of the gateway, a police broker outage, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable

import aiomqtt
import pytest

from firmware_stubs.mqtt_panel import ShopPanel
from tests.clients import expected_nearest, open_police_session, running, wait_until

SHOPS = [f"S{n:05d}" for n in range(1, 21)]
KINDS = ["door_open", "door_close", "test", "panic"]
# These tests count exactly what the panels sent; rules that raise events of their own
# (intrusions from doors opened while armed, area alerts) are tested in test_rules.py.
DEVICE_EVENTS_ONLY = {"rules": {"disable": ["intrusion-when-armed", "robbery-area-alert"]}}


async def publish_steadily(
    panels: dict[str, ShopPanel],
    total: int,
    rate: float,
    at_count: dict[int, Callable[[], None]] | None = None,
) -> list[tuple[str, int]]:
    """Publish ``total`` events round-robin at ``rate`` per second; start hooks at counts.

    A hook (kill the gateway, stop a broker) runs in a thread while the load goes on.
    """
    sent: list[tuple[str, int]] = []
    shops = list(panels)
    hooks: list[asyncio.Future[None]] = []
    start = time.monotonic()
    for i in range(total):
        hook = (at_count or {}).get(i)
        if hook is not None:
            hooks.append(asyncio.ensure_future(asyncio.to_thread(hook)))
        shop = shops[i % len(shops)]
        seq = await panels[shop].send(KINDS[i % len(KINDS)])
        sent.append((shop, seq))
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*hooks)
    return sent


def by_origin(platform_deliveries: list) -> dict[tuple[str, int], set[str]]:
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for d in platform_deliveries:
        ids[(d.body["shop_id"], d.body["attrs"]["seq"])].add(d.body["id"])
    return ids


@pytest.mark.parametrize(
    ("total", "rate"),
    [
        # A street block's real rates: the restart's backlog fits a stock broker's queue.
        pytest.param(600, 150, id="stock-broker"),
        # 800/s queues more than stock Mosquitto's 1,000 messages while the gateway restarts.
        pytest.param(2000, 800, id="tuned-broker", marks=pytest.mark.tuned_broker("deep queue")),
    ],
)
def test_kill_9_midway_loses_nothing_and_duplicates_keep_their_id(
    block_broker, police_broker, start_gateway, total, rate
):
    """Events at a steady rate, kill -9 halfway, restart: every event reaches the police, one id each."""
    gw = start_gateway(**DEVICE_EVENTS_ONLY)

    def crash_and_restart() -> None:
        gw.kill()
        gw.start()

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=SHOPS
        ) as (panels, platform):
            assert platform is not None
            sent = await publish_steadily(
                panels, total, rate=rate, at_count={total // 2: crash_and_restart}
            )
            await wait_until(
                lambda: len(by_origin(platform.deliveries)) >= total,
                60,
                f"all {total} events at the police",
            )
            ids = by_origin(platform.deliveries)
            assert set(ids) == set(sent)
            assert all(len(v) == 1 for v in ids.values()), "a duplicate carried a new id"
            assert len(platform.by_id) == total

    asyncio.run(scenario())


@pytest.mark.tuned_broker("the platform is away for all 1,500 events: stock Mosquitto queues 1,000")
def test_police_outage_under_load_loses_nothing_and_keeps_order_per_shop(
    block_broker, police_broker, start_gateway
):
    """The police broker is stopped for a while under load and restarted: all arrive, in order per shop."""
    start_gateway(**DEVICE_EVENTS_ONLY)

    def outage() -> None:
        police_broker.stop()
        time.sleep(1.5)
        police_broker.start()

    async def scenario() -> None:
        async with running(block_url=block_broker.url, shops=SHOPS) as (panels, _):
            # The platform's session is persistent; it reconnects after the outage.
            sent_task = asyncio.create_task(
                publish_steadily(panels, 1500, rate=500, at_count={500: outage}), name="load"
            )
            sent = await sent_task
        async with running(police_url=police_broker.url) as (_, platform):
            assert platform is not None
            await wait_until(
                lambda: len(platform.by_id) >= 1500 + 2,
                60,
                "every event and the link fault/restore at the police",
            )
            events = [d for d in platform.unique if d.body["shop_id"] is not None]
            assert {(d.body["shop_id"], d.body["attrs"]["seq"]) for d in events} == set(sent)
            per_shop: dict[str, list[int]] = defaultdict(list)
            for d in events:
                per_shop[d.body["shop_id"]].append(d.body["attrs"]["seq"])
            assert all(seqs == sorted(seqs) for seqs in per_shop.values())
            link = [d.body for d in platform.unique if d.body["shop_id"] is None]
            assert [e["kind"] for e in link] == ["device_fault", "restore"]
            assert link[0]["device_id"] == "link:forwarder[police]"

    # The platform subscribes once before the load so that its persistent session exists.
    open_police_session(police_broker.url)
    asyncio.run(scenario())


def test_sigterm_stops_cleanly_and_says_offline(block_broker, police_broker, start_gateway):
    """SIGTERM exits 0 and leaves a retained 'offline' status on both brokers."""
    gw = start_gateway(**DEVICE_EVENTS_ONLY)

    async def retained(port: int, topic: str) -> dict:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"probe-{port}") as c:
            await c.subscribe(topic, qos=1)
            async with asyncio.timeout(5):
                async for m in c.messages:
                    return json.loads(bytes(m.payload))
        raise AssertionError("no retained status")

    assert (
        asyncio.run(retained(police_broker.port, "police/v1/L1/GW-001/status"))["state"] == "online"
    )
    assert gw.stop() == 0
    assert (
        asyncio.run(retained(police_broker.port, "police/v1/L1/GW-001/status"))["state"]
        == "offline"
    )
    assert (
        asyncio.run(retained(block_broker.port, "lianfang/v1/gateway/GW-001/status"))["state"]
        == "offline"
    )


def test_kill_9_fires_the_last_will(block_broker, police_broker, start_gateway):
    """A gateway that vanishes is reported offline by its last will, so police can tell it is dead."""
    gw = start_gateway(**DEVICE_EVENTS_ONLY)

    async def watch() -> list[tuple[str, str | None]]:
        states: list[tuple[str, str | None]] = []
        async with aiomqtt.Client("127.0.0.1", police_broker.port, identifier="watcher") as c:
            await c.subscribe("police/v1/L1/GW-001/status", qos=1)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    body = json.loads(bytes(m.payload))
                    states.append((body["state"], body.get("reason")))
                    if len(states) == 1:
                        await asyncio.to_thread(gw.kill)
                    if body["state"] == "offline":
                        return states
        return states

    assert asyncio.run(watch()) == [("online", None), ("offline", "connection lost")]


def test_neighbours_are_alerted_while_the_police_link_is_down(
    block_broker, police_broker, start_gateway
):
    """With the police broker gone, a panic still alerts the neighbours at once; the police get it later."""
    start_gateway(**DEVICE_EVENTS_ONLY)
    near = expected_nearest("S00050")

    open_police_session(police_broker.url)
    police_broker.stop()

    async def alert() -> None:
        async with running(block_url=block_broker.url, shops=["S00050", *near]) as (panels, _):
            await panels["S00050"].send("panic")
            await wait_until(lambda: all(panels[s].notices for s in near), 5, "neighbours alerted")

    asyncio.run(alert())
    police_broker.start()

    async def police() -> None:
        async with running(police_url=police_broker.url) as (_, platform):
            assert platform is not None
            await wait_until(
                lambda: any(d.body["kind"] == "panic" for d in platform.unique),
                30,
                "the panic at the police after the outage",
            )

    asyncio.run(police())


def test_a_block_broker_restart_is_survived(block_broker, police_broker, start_gateway):
    """The block broker restarts; the gateway reconnects by itself and the next panic gets through."""
    gw = start_gateway(**DEVICE_EVENTS_ONLY)

    open_police_session(police_broker.url)
    block_broker.stop()
    block_broker.start()
    near = expected_nearest("S00060")

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00060", *near]
        ) as (panels, platform):
            assert platform is not None

            # The gateway resubscribes after its backoff; panels retry until it listens.
            def arrived() -> bool:
                return any(d.body["shop_id"] == "S00060" for d in platform.unique)

            for _ in range(40):
                await panels["S00060"].send("panic")
                await asyncio.sleep(0.5)
                if arrived():
                    break
            assert arrived()
            link = [
                (d.body["device_id"], d.body["kind"])
                for d in platform.unique
                if not d.body["shop_id"]
            ]
            assert ("link:driver[shops]", "device_fault") in link
            await wait_until(lambda: all(panels[s].notices for s in near), 5, "neighbours alerted")

    asyncio.run(scenario())
    assert gw.process is not None
    assert gw.process.poll() is None
