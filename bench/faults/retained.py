"""A retained panic on a shop's event topic, then the gateway restarted 3 times.

A broker replays a retained message at every subscription: before the fix each
restart raised the panic again (3 restarts: 4 panics at the police, 40
notices). ``tests/faults/test_retained.py`` checks the same with a retained
answer too and the ``retained`` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiomqtt

from bench.faults import FaultRow
from bench.faults._gateway import block_with_gateway
from firmware_stubs.police_platform import PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.process import GatewayProcess

FAULT = "a retained panic on a shop's event topic, the gateway restarted 3 times"
ORIGIN = "S00050"
RESTARTS = 3
SETTLE_S = 2.0
"""After each restart, how long a replayed panic would have to reach the police."""


async def publish_retained(url: str, topic: str, body: dict[str, object]) -> None:
    """Publish ``body`` on ``topic`` with the retain flag, as a misconfigured panel would."""
    broker = BrokerConfig(url=url)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="retaining-panel", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.publish(topic, json.dumps(body), qos=1, retain=True)


def run(work: Path) -> FaultRow:
    """Publish the retained panic live, restart the real daemon 3 times, count panics."""
    with block_with_gateway(work) as (block, police, gateway):
        panics, first_s, restart_s = asyncio.run(_scenario(block.url, police.url, gateway))
    return FaultRow(
        FAULT,
        sent=1,
        lost=0 if panics else 1,
        duplicated=max(0, panics - 1),
        p99_during_ms=None,
        p99_after_ms=round(first_s * 1000, 1) if first_s is not None else None,
        recover_s=round(max(restart_s), 2),
        note=f"{panics} panic(s) at the police after {RESTARTS} restarts; "
        f"p99_after is the live panic's latency, recover_s the slowest restart to ready",
    )


async def _scenario(
    block_url: str, police_url: str, gateway: GatewayProcess
) -> tuple[int, float | None, list[float]]:
    arrived = asyncio.Event()
    platform = PolicePlatform(
        BrokerConfig(url=police_url),
        client_id="police-retained",
        on_event=lambda d: arrived.set() if d.body["kind"] == "panic" else None,
    )

    def panics() -> list[float]:
        return [
            d.at
            for d in platform.unique
            if d.body["kind"] == "panic" and d.body["shop_id"] == ORIGIN
        ]

    async with asyncio.TaskGroup() as tg:
        receiving = tg.create_task(platform.run(), name="platform")
        try:
            async with asyncio.timeout(10):
                await platform.ready.wait()
            sent = time.perf_counter()
            # No seq or ts: nothing tells a replay from a new press but the retain flag.
            await publish_retained(
                block_url,
                f"lianfang/v1/shop/{ORIGIN}/event",
                {"device_id": "panel-1", "kind": "panic"},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 10)
            first = panics()
            restarts = []
            for _ in range(RESTARTS):
                await asyncio.to_thread(gateway.stop)
                restarts.append(await asyncio.to_thread(gateway.start))
                await asyncio.sleep(SETTLE_S)  # room for a replay to arrive, were it taken
        finally:
            receiving.cancel()
    return len(panics()), (first[0] - sent) if first else None, restarts
