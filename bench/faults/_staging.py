"""The stage the clock and restart scenarios share: brokers, a block of panels, the police.

The gateway is the real daemon on a config from ``lianfang init`` (Changping
Road); every shop has a panel on the block broker, the police platform listens
on a persistent police broker. Latencies are panic sent -> first delivery at
the police, from the platform's own receive times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.latency import write_config
from bench.stats import percentile
from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_platform import PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from lab.process import GatewayProcess

WAIT_S = 30.0
"""Longest wait for anything the gateway should deliver."""


@dataclass
class Block:
    """The running block: panels by shop, the police platform, and when each panic left."""

    panels: dict[str, ShopPanel]
    police: PolicePlatform
    sent_at: dict[str, float]
    """perf_counter time each panic left, by shop (one panic per shop per scenario)."""

    async def panic(self, shop: str) -> None:
        """Press panic at ``shop``."""
        self.sent_at[shop] = time.perf_counter()
        await self.panels[shop].send("panic")

    def delivered(self, kind: str) -> list[dict[str, Any]]:
        """Bodies of the events of ``kind`` the police received, first deliveries only."""
        return [d.body for d in self.police.unique if d.body["kind"] == kind]

    def latencies_ms(self, shops: list[str]) -> list[float]:
        """Panic -> police for ``shops``' panics that arrived."""
        arrived = {d.body["shop_id"]: d.at for d in self.police.unique if d.body["kind"] == "panic"}
        return [(arrived[s] - self.sent_at[s]) * 1000 for s in shops if s in arrived]

    async def until(
        self, done: Callable[[], object], what: str, timeout_s: float = WAIT_S
    ) -> float:
        """Wait until ``done()`` is true; the seconds it took."""
        started = time.perf_counter()
        while not done():
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"no {what} within {timeout_s:g} s")
            await asyncio.sleep(0.01)
        return time.perf_counter() - started


@contextlib.contextmanager
def staged_gateway(work: Path, **overrides: Any) -> Iterator[tuple[GatewayProcess, list[str]]]:  # noqa: ANN401 - config sections
    """Brokers and a gateway config with ``overrides``; the daemon (not started) and its shops."""
    block = Mosquitto(workdir=work / "block-broker")
    police = Mosquitto(workdir=work / "police-broker", persistent=True)
    with block, police:
        config, _ = write_config(work / "gateway", block.url, police.url)
        data = yaml.safe_load(config.read_text())
        data.update(overrides)
        config.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        gateway = GatewayProcess(config)
        try:
            yield gateway, [s["id"] for s in data["shops"]]
        finally:
            gateway.kill()


def broker_urls(gateway: GatewayProcess) -> tuple[str, str]:
    """The block and police broker URLs of ``gateway``'s config."""
    data = yaml.safe_load(gateway.config.read_text())
    police = next(f for f in data["forwarders"] if f["kind"] == "police_mqtt")
    return data["broker"]["url"], police["broker"]["url"]


@contextlib.asynccontextmanager
async def running_block(gateway: GatewayProcess, shops: list[str]) -> AsyncIterator[Block]:
    """A panel for every shop and the police platform, connected, until the block ends."""
    block_url, police_url = broker_urls(gateway)
    panels = {s: ShopPanel(BrokerConfig(url=block_url), s) for s in shops}
    police = PolicePlatform(BrokerConfig(url=police_url), client_id="bench-police")
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
        tasks.append(tg.create_task(police.run(), name="police"))
        try:
            async with asyncio.timeout(WAIT_S):
                await police.ready.wait()
                for panel in panels.values():
                    await panel.ready.wait()
            yield Block(panels, police, {})
        finally:
            for task in tasks:
                task.cancel()


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """``values`` set in this process's environment (so in the children it starts) for a while."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def p99(values: list[float]) -> float | None:
    """The 99th percentile, or None for no values."""
    return percentile(values, 99) if values else None
