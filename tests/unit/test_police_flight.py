"""The police forwarder's flight: room for routine rows, and the wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.forwarders.base import ForwarderContext
from gateway.forwarders.mqtt_police import PoliceMqttConfig, PoliceMqttForwarder, _Flight
from gateway.journal import Journal
from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.link import MqttLink
from gateway.outbox import OutboxCursor


@pytest.fixture
def flight(tmp_path: Path) -> Iterator[_Flight]:
    config = PoliceMqttConfig(
        name="police", kind="police_mqtt", broker=BrokerConfig(url="mqtt://127.0.0.1:1"), window=2
    )
    journal = Journal(
        tmp_path / "journal.sqlite3", route=lambda _e: ["police"], max_size_bytes=10**8
    )
    cursor = OutboxCursor(journal, "police")
    forwarder = PoliceMqttForwarder(
        config, context=ForwarderContext("GW-T", "L1", {}, dict, 60), cursor=cursor
    )
    yield _Flight(forwarder, MqttLink(config.broker, client_id="flight-test", persistent=False))
    cursor.close()
    journal.close()


def test_room_freed_before_the_wait_is_not_waited_for(flight: _Flight) -> None:
    """PUBACKs that freed the room while the forwarder read the journal for alarms end the wait at once.

    The wait used to forget them and sleep until the next alarm: after a police
    outage the backlog's routine rows stalled for good once the alarms stopped.
    """
    flight.room = 0
    flight._freed.set()  # a routine PUBACK came while take_alarms awaited the journal
    flight.room = 1

    async def wait() -> None:
        await asyncio.wait_for(flight.freed_or(asyncio.Event()), 5)

    asyncio.run(wait())


def test_with_no_room_the_wait_lasts_until_an_alarm_is_ready(flight: _Flight) -> None:
    """No room and no alarm: the forwarder waits; an alarm ends the wait."""
    flight.room = 0

    async def wait() -> None:
        alarm_ready = asyncio.Event()
        waiting = asyncio.ensure_future(flight.freed_or(alarm_ready))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        alarm_ready.set()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(wait())
