"""The link's window and reader against a real Mosquitto behind a relay that holds its replies.

- Routine publishes never take the last slots of the window: with every
  routine PUBACK held back, an alarm still goes out at once.
- One shop's cancel waiting for the window is not overtaken by its panic.
- A burst read at once (one TLS record, or one chunk of the buffered reader
  over TCP) is read to the end, though the reader stops every ``READ_BATCH``
  packets to let the loop breathe and select() cannot see what it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest

from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.link import READ_BATCH, MqttLink
from lab.broker import Mosquitto
from tests.clients import wait_until
from tests.relay import HoldingRelay, relay_tls

WINDOW = 16  # below the stock Receive Maximum (20): the link's own; 2 slots kept for alarms
KEPT = 2


async def _platform(port: int, received: list[bytes], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="platform") as sub:
        await sub.subscribe("out/#", qos=1)
        ready.set()
        async for message in sub.messages:
            received.append(bytes(message.payload))  # noqa: PERF401 - read while it grows


def _held_scenario(
    broker: Mosquitto, body: Callable[[MqttLink, list[bytes]], Awaitable[None]]
) -> None:
    """Run ``body`` with a link whose PUBACKs are held; ``received``: what the broker delivered."""

    async def scenario() -> None:
        received: list[bytes] = []
        ready = asyncio.Event()
        async with HoldingRelay(broker.port) as relay, asyncio.TaskGroup() as tg:
            platform = tg.create_task(_platform(broker.port, received, ready), name="platform")
            await asyncio.wait_for(ready.wait(), 10)
            link = MqttLink(
                BrokerConfig(url=relay.url), client_id="fwd", persistent=False, max_inflight=WINDOW
            )
            async with link:
                watch = tg.create_task(link.watch(), name="watch")
                relay.held = True  # no PUBACK reaches the link from here on
                await body(link, received)
                relay.release()
                watch.cancel()
            platform.cancel()

    asyncio.run(scenario())


def test_an_alarm_goes_out_while_the_routine_share_of_the_window_waits_for_pubacks(
    block_broker: Mosquitto,
) -> None:
    """Routine publishes fill their share; the alarm takes a kept slot and reaches the broker."""

    async def body(link: MqttLink, received: list[bytes]) -> None:
        for i in range(3 * WINDOW):
            link.publish("out/e", f"routine-{i}".encode())
        share = WINDOW - KEPT
        await wait_until(lambda: len(received) == share, 10, "the routine share sent")
        assert link.in_flight == share
        link.publish("out/e", b"alarm", urgent=True)
        await wait_until(lambda: b"alarm" in received, 10, "the alarm, PUBACKs still held")
        assert received == [*(f"routine-{i}".encode() for i in range(share)), b"alarm"]

    _held_scenario(block_broker, body)


def test_a_shops_cancel_waiting_for_the_window_goes_before_its_panic(
    block_broker: Mosquitto,
) -> None:
    """Shop B's cancel waits behind shop A's routine rows; B's panic takes it along, A's stay."""

    async def body(link: MqttLink, received: list[bytes]) -> None:
        for i in range(WINDOW):
            link.publish("out/e", f"A-door-{i}".encode(), key="A")
        link.publish("out/e", b"B-cancel", key="B", bound=True)
        link.publish("out/e", b"A-door-late", key="A")
        link.publish("out/e", b"B-panic", urgent=True, key="B")
        await wait_until(lambda: b"B-panic" in received, 10, "the panic, PUBACKs still held")
        assert received[-2:] == [b"B-cancel", b"B-panic"]
        assert b"A-door-late" not in received

    _held_scenario(block_broker, body)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_burst_read_at_once_is_read_to_its_end(
    tmp_path: Path, block_broker: Mosquitto, *, tls: bool
) -> None:
    """More packets than one read batch, read (or decrypted) at once, all reach the reader."""
    server, tls_config = relay_tls(tmp_path, tls=tls)
    count = 2 * READ_BATCH + 10

    async def scenario() -> int:
        async with HoldingRelay(block_broker.port, tls=server) as relay:
            link = MqttLink(
                BrokerConfig(url=relay.url, tls=tls_config),
                client_id="reader",
                persistent=False,
                subscribe="burst/#",
            )
            async with link, asyncio.TaskGroup() as tg:
                watch = tg.create_task(link.watch(), name="watch")
                relay.held = True
                async with aiomqtt.Client("127.0.0.1", block_broker.port) as producer:
                    for i in range(count):
                        await producer.publish("burst/x", str(i).encode(), qos=1)
                # Every PUBLISH (QoS 1, MQTT v5, no properties) is with the relay, none
                # with the reader yet.
                size = sum(2 + 2 + len("burst/x") + 2 + 1 + len(str(i)) for i in range(count))
                await wait_until(lambda: relay.held_bytes == size, 10, "the burst held")
                relay.release()
                await wait_until(
                    lambda: link.messages.qsize() == count, 10, "every message of the burst"
                )
                watch.cancel()
            return link.messages.qsize()

    assert asyncio.run(scenario()) == count
