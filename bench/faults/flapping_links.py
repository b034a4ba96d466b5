"""The police broker flapping: stopped and started by PID, a panic waiting through each outage.

Each outage: stop the police Mosquitto, press a panic on a shop's panel, keep
the broker down, start it again and time the panic from the broker's return
to its arrival at the police platform. Before links came back fast the panics
waited 3.9 to 57 s with the broker up (issue 11); the target is 2 s at p99.
``tests/faults/test_flapping_links.py`` runs the same outages with a bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from bench.faults import FaultRow
from bench.faults._gateway import block_with_gateway
from bench.stats import percentile
from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_platform import PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto

FAULT = "police broker flapping: 10 outages of 1 s and one of 30 s, a panic in each"
ORIGIN = "S00050"
FLAPS = (1.0,) * 10
LONG_OUTAGE_S = 30.0
PLATFORM_RETRY_S = 0.02
"""How soon the stand-in platform reconnects: it must not be what is measured."""


@dataclass(frozen=True)
class Flapping:
    """What the outages did to the panics pressed during them."""

    after_return_s: list[float | None]
    """Per outage: broker back -> that panic at the police (None: never arrived)."""
    duplicated: int
    """Panics the gateway journalled twice (two event ids for one press)."""

    @property
    def lost(self) -> int:
        """Panics that never arrived."""
        return sum(1 for s in self.after_return_s if s is None)


async def keep_receiving(platform: PolicePlatform) -> None:
    """Run the platform, reconnecting at once each time its broker comes back."""
    while True:
        try:
            await platform.run()
        except aiomqtt.MqttError:
            platform.ready.clear()
            await asyncio.sleep(PLATFORM_RETRY_S)


async def flap_police(
    block_url: str, police: Mosquitto, outages: Sequence[float], *, wait_s: float
) -> Flapping:
    """Take ``police`` down for each of ``outages`` (seconds) with a panic waiting; time each.

    The gateway must be running on ``block_url`` and ``police``; a panic that
    takes longer than ``wait_s`` after the broker's return counts as lost.
    """
    panel = ShopPanel(BrokerConfig(url=block_url), ORIGIN)
    platform = PolicePlatform(BrokerConfig(url=police.url), client_id="police-flapping")
    after_return: list[float | None] = []
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(panel.run(), name="panel"),
            tg.create_task(keep_receiving(platform), name="platform"),
        ]
        try:
            async with asyncio.timeout(10):
                await panel.ready.wait()
                await platform.ready.wait()
            for down_s in outages:
                await asyncio.to_thread(police.stop)
                seq = await panel.send("panic")
                await asyncio.sleep(down_s)  # the outage itself, not a wait for anything
                await asyncio.to_thread(police.start)
                back = time.perf_counter()
                after_return.append(await _arrival(platform, seq, back, wait_s))
        finally:
            for task in tasks:
                task.cancel()
    ids: dict[int, set[str]] = defaultdict(set)
    for d in platform.deliveries:
        if d.body["kind"] == "panic" and d.body["shop_id"] == ORIGIN:
            ids[d.body["attrs"]["seq"]].add(d.body["id"])
    return Flapping(after_return, sum(len(i) - 1 for i in ids.values()))


async def _arrival(platform: PolicePlatform, seq: int, back: float, wait_s: float) -> float | None:
    """Seconds from ``back`` to the panic ``seq`` at the platform; None after ``wait_s``."""
    deadline = back + wait_s
    while time.perf_counter() < deadline:
        for d in platform.unique:
            if d.body["kind"] == "panic" and d.body["attrs"].get("seq") == seq:
                return d.at - back
        await asyncio.sleep(0.005)
    return None


def run(work: Path) -> FaultRow:
    """Ten 1 s flaps and one long outage against the real daemon; p99 after each return."""
    with block_with_gateway(work) as (block, police, _):
        result = asyncio.run(flap_police(block.url, police, [*FLAPS, LONG_OUTAGE_S], wait_s=60))
    arrived = [s for s in result.after_return_s if s is not None]
    shown = ", ".join("lost" if s is None else f"{s:.2f}" for s in result.after_return_s)
    return FaultRow(
        FAULT,
        sent=len(result.after_return_s),
        lost=result.lost,
        duplicated=result.duplicated,
        p99_during_ms=None,
        p99_after_ms=round(percentile(arrived, 99) * 1000, 1) if arrived else None,
        recover_s=round(max(arrived), 2) if arrived else None,
        note=f"broker back -> panic at the police, s: {shown}",
    )
