"""A junk flood from one client (5,000 QoS 1 messages a second): panics during it and after.

The real daemon on the Changping Road config, a stock Mosquitto pair, every
shop's panel connected. One client floods its shop's event topic with junk
(``lab.flood``) while panics are pressed at other shops every 150 ms; then
the flood ends and the presses go on. Figures: panic -> police and panic ->
10th neighbour notice, p99 during and after the flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.faults import FaultRow
from bench.scale import CHANGPING, NEIGHBOURS, RADIUS_M, Place, write_config
from bench.stats import percentile
from firmware_stubs.mqtt_panel import ReceivedNotice, ShopPanel
from firmware_stubs.police_platform import Delivery, PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from lab.process import GatewayProcess
from rules.geo import neighbour_table

FAULT = "5,000 junk messages/s (QoS 1) from one client"
FLOODER = "S00080"
RATE = 5000
FLOOD_S = 6.0
PRESS_EVERY_S = 0.15
PRESSES_AFTER = 20
SETTLE_S = 10.0


@dataclass
class Press:
    """One panic press and when its police delivery arrived."""

    shop: str
    at: float
    during: bool
    police_at: float | None = None
    event_id: str | None = None


@dataclass
class Tally:
    """Police deliveries matched to presses; notices kept by event id (they may come first)."""

    presses: dict[tuple[str, int], Press] = field(default_factory=dict)
    notices: dict[str, list[float]] = field(default_factory=dict)
    duplicates: int = 0

    def on_police(self, delivery: Delivery) -> None:
        """Match a police delivery to its press."""
        body = delivery.body
        seq = (body.get("attrs") or {}).get("seq")
        is_panic = body["kind"] == "panic"
        press = self.presses.get((body.get("shop_id", ""), seq)) if is_panic else None
        if press is None:
            return
        if press.police_at is not None:
            self.duplicates += 1
            return
        press.police_at, press.event_id = delivery.at, body["id"]

    def on_notice(self, notice: ReceivedNotice) -> None:
        """Keep a notice's arrival under its event id."""
        self.notices.setdefault(notice.body.get("event_id", ""), []).append(notice.at)

    def tenth_notice(self, press: Press) -> float | None:
        """When the press's 10th notice arrived, if it did."""
        arrivals = sorted(self.notices.get(press.event_id or "", []))
        return arrivals[NEIGHBOURS - 1] if len(arrivals) >= NEIGHBOURS else None


def p99_ms(values: list[float]) -> float | None:
    """The 99th percentile in ms, None for no values."""
    return round(percentile(values, 99) * 1000, 1) if values else None


async def press_all(
    panels: dict[str, ShopPanel], shops: list[str], tally: Tally, flood: asyncio.subprocess.Process
) -> None:
    """Press panic at ``shops`` in turn during the flood, then ``PRESSES_AFTER`` more."""
    after = 0
    for shop in itertools.cycle(shops):
        during = flood.returncode is None
        if not during:
            after += 1
            if after > PRESSES_AFTER:
                return
        at = time.perf_counter()
        seq = await panels[shop].send("panic")
        tally.presses[(shop, seq)] = Press(shop, at, during)
        await asyncio.sleep(PRESS_EVERY_S)  # pacing the presses, not waiting for anything


async def scenario(
    block: Mosquitto, police: Mosquitto, shop_ids: list[str], near: dict[str, list[str]]
) -> tuple[Tally, dict[str, float]]:
    """Panels, platform, flood and presses: the settled tally, and the flood's own figures."""
    tally = Tally()
    panels = {
        s: ShopPanel(BrokerConfig(url=block.url), s, on_notice=tally.on_notice) for s in shop_ids
    }
    platform = PolicePlatform(BrokerConfig(url=police.url), on_event=tally.on_police)
    pressing = [s for s in shop_ids if len(near[s]) == NEIGHBOURS and s != FLOODER][::7]
    command = [
        sys.executable, "-m", "lab.flood", "--url", block.url, "--shop", FLOODER,
        "--rate", str(RATE), "--count", str(round(RATE * FLOOD_S)),
    ]  # fmt: skip
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
        tasks.append(tg.create_task(platform.run(), name="platform"))
        await asyncio.wait_for(platform.ready.wait(), 10)
        for panel in panels.values():
            await asyncio.wait_for(panel.ready.wait(), 10)
        # Its own process: publishing 5,000 a second in ours would hold up our clocks.
        flood = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        try:
            await press_all(panels, pressing, tally, flood)
            await settled(tally)
        finally:
            if flood.returncode is None:
                flood.kill()
            output, _ = await asyncio.wait_for(flood.communicate(), 30)
            for task in tasks:
                task.cancel()
    return tally, json.loads(output or b"{}")


async def settled(tally: Tally) -> None:
    """Wait (at most ``SETTLE_S``) until every press reached the police and 10 shops."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if all(p.police_at and tally.tenth_notice(p) for p in tally.presses.values()):
            return
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline


def run(work: Path) -> FaultRow:
    """Stage the flood and measure the panics through it."""
    with Mosquitto(workdir=work / "block") as block, Mosquitto(workdir=work / "police") as police:
        config = write_config(work / "gateway", CHANGPING, block.url, police.url)
        shops = yaml.safe_load(config.read_text())["shops"]
        places = [Place(s["id"], float(s["lat"]), float(s["lon"])) for s in shops]
        table = neighbour_table(places, places, count=NEIGHBOURS, radius_m=RADIUS_M)
        near = {k: [n.shop_id for n in v] for k, v in table.items()}
        gateway = GatewayProcess(config, log=work / "gateway.log")
        gateway.start()
        try:
            tally, flood = asyncio.run(scenario(block, police, list(near), near))
        finally:
            with contextlib.suppress(Exception):
                gateway.stop()
    presses = list(tally.presses.values())

    def latencies(*, during: bool, notices: bool) -> list[float]:
        arrivals = [
            (p, tally.tenth_notice(p) if notices else p.police_at)
            for p in presses
            if p.during is during
        ]
        return [at - p.at for p, at in arrivals if at is not None]

    lost = sum(p.police_at is None for p in presses)
    short = sum(tally.tenth_notice(p) is None for p in presses)
    return FaultRow(
        fault=FAULT,
        sent=len(presses),
        lost=lost,
        duplicated=tally.duplicates,
        p99_during_ms=p99_ms(latencies(during=True, notices=False)),
        p99_after_ms=p99_ms(latencies(during=False, notices=False)),
        recover_s=None,
        note=(
            f"flood {flood.get('published')} msgs at {flood.get('rate', 0):,.0f}/s; "
            f"10th notice p99 during {p99_ms(latencies(during=True, notices=True))} ms, "
            f"after {p99_ms(latencies(during=False, notices=True))} ms; "
            f"{sum(p.during for p in presses)} presses during; {short} short of 10 notices"
        ),
    )
