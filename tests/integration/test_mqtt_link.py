"""The gateway's MQTT link against a real broker: paced reading under a backlog, refused publishes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import PlatformNak
from gateway.mqtt import link as link_module
from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.limits import UNLIMITED_RECEIVE_MAXIMUM, LinkDown
from gateway.mqtt.link import Lane, MqttLink
from lab.broker import Mosquitto
from tests.relay import HoldingRelay


async def queue_backlog(link: MqttLink, port: int) -> None:
    """Make ``link``'s persistent session, then queue 3,000 messages on ``backlog/#`` for it."""
    async with link:
        pass
    async with aiomqtt.Client("127.0.0.1", port, identifier="producer") as p:
        for i in range(3000):
            await p.publish(f"backlog/{i % 7}", str(i).encode(), qos=1)


@pytest.mark.tuned_broker("3,000 queued messages: stock Mosquitto keeps 1,000 per client")
def test_a_backlog_arrives_complete_without_more_than_max_unacked_outstanding(block_broker):
    """3,000 queued messages reach a slow consumer in full while at most ~50 are ever unacknowledged."""
    broker = BrokerConfig(url=block_broker.url)

    def link() -> MqttLink:
        return MqttLink(
            broker, client_id="paced", persistent=True, subscribe="backlog/#", max_unacked=50
        )

    async def scenario() -> tuple[int, int]:
        await queue_backlog(link(), block_broker.port)
        got: list[int] = []
        peak_unacked = peak_queued = 0
        paced = link()
        async with paced, asyncio.TaskGroup() as tg:
            watch = tg.create_task(paced.watch(), name="watch")
            while len(got) < 3000:
                message, generation = await asyncio.wait_for(paced.messages.get(), 10)
                peak_unacked = max(peak_unacked, paced.unacked)
                peak_queued = max(peak_queued, paced.messages.qsize())
                got.append(int(message.payload))
                if len(got) % 10 == 0:
                    await asyncio.sleep(0.001)  # a consumer slower than the broker
                paced.ack(message, generation)
            watch.cancel()
        assert sorted(got) == list(range(3000))
        return peak_unacked, peak_queued

    peak_unacked, peak_queued = asyncio.run(scenario())
    assert peak_unacked <= 60, peak_unacked
    assert peak_queued <= 60, peak_queued


@pytest.mark.tuned_broker("3,000 queued messages: stock Mosquitto keeps 1,000 per client")
def test_a_resumed_sessions_backlog_is_read_as_it_is_taken_not_before_the_link_is_up(
    block_broker,
):
    """The ingest's case: the broker may send its whole backlog at once, before the SUBACK.

    Before decision 95 the link read all 3,000 into memory (screening each)
    while it waited for the SUBACK behind them, and only then was it up.
    """
    broker = BrokerConfig(url=block_broker.url)

    def link() -> MqttLink:
        return MqttLink(
            broker, client_id="resumed", persistent=True, subscribe=["backlog/#", "later/#"],
            max_unacked=50, receive_maximum=UNLIMITED_RECEIVE_MAXIMUM,
        )  # fmt: skip

    async def scenario() -> tuple[int, list[str]]:
        await queue_backlog(link(), block_broker.port)
        topics: list[str] = []
        resumed = link()
        async with resumed, asyncio.TaskGroup() as tg:
            held_when_up = resumed.messages.qsize()
            watch = tg.create_task(resumed.watch(), name="watch")
            while len(topics) < 3000:
                message, generation = await asyncio.wait_for(resumed.messages.get(), 10)
                topics.append(message.topic)
                resumed.ack(message, generation)
            # The SUBACK came after the backlog; the link still works past it.
            async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="late") as p:
                await p.publish("later/1", b"after", qos=1)
            message, generation = await asyncio.wait_for(resumed.messages.get(), 10)
            topics.append(message.topic)
            resumed.ack(message, generation)
            watch.cancel()
        return held_when_up, topics

    held_when_up, topics = asyncio.run(scenario())
    assert held_when_up <= 60, held_when_up
    assert len(topics) == 3001
    assert topics[-1] == "later/1"


@pytest.fixture
def acl_broker(tmp_path: Path):
    acl = "topic readwrite allowed/#\n"
    with Mosquitto(workdir=tmp_path / "acl-broker", acl=acl) as broker:
        yield broker


def test_a_publish_the_broker_refuses_fails_and_an_allowed_one_succeeds(acl_broker):
    """A PUBACK with 'not authorized' fails the publish with PlatformNak: never taken as delivered."""

    async def scenario() -> None:
        link = MqttLink(BrokerConfig(url=acl_broker.url), client_id="nak", persistent=False)
        async with link:
            await asyncio.wait_for(link.publish("allowed/x", b"1"), 5)
            with pytest.raises(PlatformNak) as refused:
                await asyncio.wait_for(link.publish("police/v1/L1/GW-001/events", b"1"), 5)
            assert refused.value.code == 0x87

    asyncio.run(scenario())


def test_watch_raises_when_the_broker_goes_away(block_broker):
    """Killing the broker ends watch() with LinkDown and fails publishes in flight."""

    async def scenario() -> None:
        link = MqttLink(BrokerConfig(url=block_broker.url), client_id="w", persistent=False)
        watching = asyncio.Event()

        async def watched() -> None:
            watching.set()
            await link.watch()

        async with link:
            watch = asyncio.create_task(watched(), name="watch")
            await watching.wait()
            await asyncio.to_thread(block_broker.kill)
            with pytest.raises(LinkDown):
                await asyncio.wait_for(watch, 5)
            with pytest.raises(LinkDown):
                await link.publish("t", b"x")

    asyncio.run(scenario())


def test_a_paused_link_outlives_its_keep_alive(block_broker):
    """A consumer that holds its acks past two keep-alive periods keeps its link; then all arrive."""
    broker = BrokerConfig(url=block_broker.url, keepalive_s=5)

    async def scenario() -> int:
        link = MqttLink(
            broker, client_id="held", persistent=True, subscribe="held/#", max_unacked=10
        )
        async with link:
            pass
        async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="producer") as p:
            for i in range(100):
                await p.publish("held/x", str(i).encode(), qos=1)
        got = 0
        held = MqttLink(
            broker, client_id="held", persistent=True, subscribe="held/#", max_unacked=10
        )
        async with held, asyncio.TaskGroup() as tg:
            watch = tg.create_task(held.watch(), name="watch")
            waiting = []
            while len(waiting) < 10:
                waiting.append(await asyncio.wait_for(held.messages.get(), 5))
            assert held.paused
            await asyncio.sleep(12)  # more than two keep-alive periods without an ack
            assert not watch.done(), "the paused link was dropped by its keep-alive"
            for message, generation in waiting:
                held.ack(message, generation)
                got += 1
            while got < 100:
                message, generation = await asyncio.wait_for(held.messages.get(), 5)
                held.ack(message, generation)
                got += 1
            watch.cancel()
        return got

    assert asyncio.run(scenario()) == 100


def test_a_resumed_session_whose_subscribe_is_never_answered_fails_the_link(
    block_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link is up at the CONNACK (decision 95); a SUBACK that never comes still fails it.

    A new filter (a shop added by a reload) unanswered would otherwise leave that shop
    unheard, with the link up and nothing said.
    """
    monkeypatch.setattr(link_module, "CONNECT_TIMEOUT_S", 2.0)

    async def scenario() -> str:
        async with HoldingRelay(block_broker.port) as relay:
            broker = BrokerConfig(url=relay.url)
            async with MqttLink(broker, client_id="resumed", persistent=True, subscribe="a/#"):
                pass
            relay.drop_subacks = True
            link = MqttLink(broker, client_id="resumed", persistent=True, subscribe=["a/#", "b/#"])
            async with link:
                assert link.limits.session_present
                with pytest.raises(LinkDown) as down:
                    await asyncio.wait_for(link.watch(), 10)
        return str(down.value)

    assert "no SUBACK" in asyncio.run(scenario())


def test_a_refused_subscription_names_the_filter_refused(block_broker: Mosquitto) -> None:
    """Of two filters the broker refuses the second: the installer reads that one and why.

    Mosquitto grants what its ACL denies (and delivers nothing), so the refusal is
    put into the broker's real SUBACK as the link receives it.
    """

    async def scenario() -> str:
        link = MqttLink(
            BrokerConfig(url=block_broker.url),
            client_id="refused",
            persistent=False,
            subscribe=["a/#", "b/#"],
        )
        received = link._client.on_subscribe

        def refusing_b(c: object, u: object, mid: int, reasons: list, p: object) -> None:
            refused = ReasonCode(PacketTypes.SUBACK, "Not authorized")
            received(c, u, mid, [reasons[0], refused], p)

        link._client.on_subscribe = refusing_b
        with pytest.raises(LinkDown) as down:
            async with link:
                pass
        return str(down.value)

    assert "refused the subscription to b/# (of 2 filters): Not authorized" in asyncio.run(
        scenario()
    )


def test_a_resumed_session_drained_slowly_but_steadily_keeps_its_link(
    block_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog still arriving is the SUBACK's turn coming: no "no SUBACK" however long it takes.

    The ingest screens each message as it reads it, so a big backlog keeps reading
    busy without pausing for longer than the SUBACK's bound (here 0.5 s, 800 x 2 ms).
    """
    monkeypatch.setattr(link_module, "CONNECT_TIMEOUT_S", 0.5)

    def slow_screen(_message: object) -> Lane:
        time.sleep(0.002)  # the ingest's screen and parse, on a loaded machine
        return Lane.ROUTINE

    def link() -> MqttLink:
        return MqttLink(
            BrokerConfig(url=block_broker.url),
            client_id="slow-drain",
            persistent=True,
            subscribe=["backlog/#", "later/#"],
            max_unacked=100_000,
            receive_maximum=UNLIMITED_RECEIVE_MAXIMUM,
            screen=slow_screen,
        )

    async def scenario() -> int:
        async with link():
            pass
        async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="producer") as p:
            for i in range(800):
                await p.publish(f"backlog/{i % 7}", str(i).encode(), qos=1)
        got = 0
        resumed = link()
        async with resumed, asyncio.TaskGroup() as tg:
            watch = tg.create_task(resumed.watch(), name="watch")
            while got < 800:
                message, generation = await asyncio.wait_for(resumed.messages.get(), 10)
                resumed.ack(message, generation)
                got += 1
            await asyncio.sleep(1.5)  # past a watch turn with the SUBACK read: still up
            assert not watch.done()
            watch.cancel()
        return got

    assert asyncio.run(scenario()) == 800
