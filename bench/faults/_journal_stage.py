"""What the journal's fault scenarios share: brokers, the gateway as a process, panels, police.

Not a scenario itself (its name starts with ``_``). Latencies are measured in
this process: a panel's publish and the platform's receipt share one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.brokers import broker_pair
from bench.latency import write_config
from bench.stats import percentile
from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_platform import Delivery, PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from lab.process import GatewayProcess

# Counted exactly: no area alerts or intrusions raised by the rules themselves.
DEVICE_EVENTS_ONLY = {"disable": ["intrusion-when-armed", "robbery-area-alert"]}
PANIC_SHOPS = ["S00011", "S00005", "S00017", "S00003", "S00014"]
TROUBLE_SHOPS = ["S00002", "S00008"]
WAIT_S = 30.0


@dataclass
class Traffic:
    """What the panels sent, and when (this process's clock)."""

    panics: dict[tuple[str, int], float] = field(default_factory=dict)
    troubles: list[tuple[str, int]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Events sent in all."""
        return len(self.panics) + len(self.troubles)


@contextlib.contextmanager
def brokers(work: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """The block's and the police's Mosquitto (tuned), the police's keeping its sessions."""
    with broker_pair("tuned", work) as pair:
        yield pair


def gateway(work: Path, block: Mosquitto, police: Mosquitto, **settings: Any) -> GatewayProcess:  # noqa: ANN401 - YAML values
    """The gateway's process on a config from ``lianfang init`` with ``settings`` over it."""
    path, _ = write_config(work / "gateway", block.url, police.url)
    data = yaml.safe_load(path.read_text())
    data["rules"] = {**data.get("rules", {}), **DEVICE_EVENTS_ONLY}
    data.update(settings)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return GatewayProcess(path)


@contextlib.asynccontextmanager
async def panels_on(block: Mosquitto) -> AsyncIterator[dict[str, ShopPanel]]:
    """Connected panels of the panic and trouble shops."""
    panels = {s: ShopPanel(BrokerConfig(url=block.url), s) for s in PANIC_SHOPS + TROUBLE_SHOPS}
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
        for panel in panels.values():
            await asyncio.wait_for(panel.ready.wait(), WAIT_S)
        try:
            yield panels
        finally:
            for task in tasks:
                task.cancel()


@contextlib.asynccontextmanager
async def police_on(police: Mosquitto) -> AsyncIterator[PolicePlatform]:
    """The police platform, subscribed with a persistent session."""
    platform = PolicePlatform(BrokerConfig(url=police.url), client_id="bench-police")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(platform.run(), name="police")
        await asyncio.wait_for(platform.ready.wait(), WAIT_S)
        try:
            yield platform
        finally:
            task.cancel()


async def send_panics(panels: dict[str, ShopPanel], traffic: Traffic) -> None:
    """One panic from each panic shop, then a trouble from each trouble shop, ten times over."""
    for _ in range(10):
        for shop in PANIC_SHOPS:
            sent = time.perf_counter()
            traffic.panics[shop, await panels[shop].send("panic")] = sent
        for shop in TROUBLE_SHOPS:
            traffic.troubles.append((shop, await panels[shop].send("low_battery")))


async def wait_for(predicate: Any, what: str, timeout_s: float = WAIT_S) -> None:  # noqa: ANN401 - any predicate
    """Poll ``predicate`` until true; raise with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:g} s for {what}")
        await asyncio.sleep(0.02)


def keys(platform: PolicePlatform, kind: str) -> Counter[tuple[str, int]]:
    """(shop, panel seq) of each ``kind`` delivery at the police, repeats counted."""
    return Counter(
        (d.body["shop_id"], d.body["attrs"]["seq"])
        for d in platform.deliveries
        if d.body["kind"] == kind
    )


def p99_ms(platform: PolicePlatform, panics: dict[tuple[str, int], float]) -> float | None:
    """Panic -> police p99 over ``panics`` (first deliveries), ms."""
    first: dict[tuple[str, int], Delivery] = {}
    for d in platform.deliveries:
        if d.body["kind"] == "panic":
            first.setdefault((d.body["shop_id"], d.body["attrs"]["seq"]), d)
    waits = [(first[k].at - sent) * 1000 for k, sent in panics.items() if k in first]
    return round(percentile(waits, 99), 1) if waits else None
