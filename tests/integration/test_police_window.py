"""The police forwarder with its window full of routine rows whose PUBACKs never come.

A real Mosquitto behind a relay that holds every reply to the forwarder: the
routine rows fill the forwarder's room and the link's routine share. An alarm
committed then still reaches the broker, after its own shop's cancel and
before every other routine row waiting: with the backlog in the cursor's
buffer, and with one too big for it (the cursor reads the journal).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.events import EventKind
from gateway.outbox import LIVE_BUFFER
from lab.broker import Mosquitto
from tests.clients import wait_until
from tests.forwarder_rig import event, forwarding
from tests.relay import HoldingRelay

WINDOW = 16


async def _police(port: int, received: list[dict[str, Any]], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="police") as sub:
        await sub.subscribe("police/v1/+/+/events", qos=1)
        ready.set()
        async for message in sub.messages:
            received.append(json.loads(bytes(message.payload)))  # noqa: PERF401 - read while it grows


@pytest.mark.parametrize("doors", [3 * WINDOW, LIVE_BUFFER + 100], ids=["buffered", "from_disk"])
def test_an_alarm_and_its_shops_cancel_overtake_routine_rows_whose_pubacks_are_held(
    tmp_path: Path, block_broker: Mosquitto, doors: int
) -> None:
    """Door rows of one shop fill the window; another shop's cancel and panic still go, in order."""

    async def scenario() -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        ready = asyncio.Event()
        async with HoldingRelay(block_broker.port) as relay, asyncio.TaskGroup() as tg:
            police = tg.create_task(_police(block_broker.port, received, ready), name="police")
            await asyncio.wait_for(ready.wait(), 10)
            async with forwarding(
                tmp_path, kind="police_mqtt", broker={"url": relay.url}, window=WINDOW
            ) as rig:
                await asyncio.wait_for(rig.forwarder.link_up.wait(), 10)
                relay.held = True
                await rig.send(*(event(EventKind.DOOR_OPEN, shop="S00011") for _ in range(doors)))
                await wait_until(lambda: len(received) >= WINDOW // 2, 10, "the window filling")
                cursor = rig.forwarder.cursor
                await wait_until(
                    lambda: cursor._from_disk == (doors > LIVE_BUFFER), 10, "the cursor's mode"
                )
                await rig.send(
                    event(EventKind.CANCEL, shop="S00012"), event(EventKind.PANIC, shop="S00012")
                )
                await wait_until(
                    lambda: any(e["kind"] == "panic" for e in received),
                    10,
                    "the panic, with every routine PUBACK held",
                )
                relay.release()
                await wait_until(lambda: len(received) == doors + 2, 30, "every row")
            police.cancel()
        return received

    received = asyncio.run(scenario())
    kinds = [e["kind"] for e in received]
    assert kinds.index("cancel") + 1 == kinds.index("panic")
    assert kinds.index("panic") < WINDOW
    assert kinds.count("door_open") == doors
