"""How the link writes its socket when the kernel takes less than everything.

Publishes the kernel cannot take (a peer that stopped reading) wait for the
socket to be writable and then go, all of them, in order, over TCP and TLS:
16 large ones, and thousands of small ones queued behind a full kernel buffer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.link import MqttLink
from lab.broker import Mosquitto
from tests.clients import wait_until
from tests.relay import HoldingRelay, relay_tls

# 16 MiB either way: more than the loopback's kernel buffers hold on both sides.
LARGE = (16, 1024 * 1024)  # (count, payload bytes); 16 fit a stock broker's window
# Thousands in flight: a tuned broker's window (no Receive Maximum to speak of).
SMALL = pytest.param(
    (4096, 4096), marks=pytest.mark.tuned_broker("4,096 publishes in flight"), id="small"
)


@pytest.mark.parametrize("sizes", [pytest.param(LARGE, id="large"), SMALL])
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_publishes_the_kernel_cannot_take_go_once_the_peer_reads_again(
    tmp_path: Path, block_broker: Mosquitto, *, tls: bool, sizes: tuple[int, int]
) -> None:
    """With the relay not reading, the publishes wait for writability; then all arrive in order."""
    count, payload = sizes
    server, tls_config = relay_tls(tmp_path, tls=tls)

    async def platform(received: list[bytes], ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="platform") as sub:
            await sub.subscribe("out/#", qos=1)
            ready.set()
            async for message in sub.messages:
                received.append(bytes(message.payload)[:8])  # noqa: PERF401 - read while it grows

    async def scenario() -> list[bytes]:
        received: list[bytes] = []
        ready = asyncio.Event()
        async with HoldingRelay(block_broker.port, tls=server) as relay, asyncio.TaskGroup() as tg:
            listening = tg.create_task(platform(received, ready), name="platform")
            await asyncio.wait_for(ready.wait(), 10)
            link = MqttLink(
                BrokerConfig(url=relay.url, tls=tls_config),
                client_id="fwd",
                persistent=False,
                max_inflight=count,
            )
            async with link:
                watch = tg.create_task(link.watch(), name="watch")
                relay.stalled = True
                sent = [
                    link.publish("out/e", f"{i:08d}".encode() + bytes(payload))
                    for i in range(count)
                ]
                await asyncio.sleep(0.2)  # the link's writes meet a full buffer meanwhile
                # The relay's read in flight when it stalled may let a few through.
                assert sum(f.done() for f in sent) < count // 10
                relay.stalled = False
                await asyncio.wait_for(asyncio.gather(*sent), 30)
                await wait_until(lambda: len(received) == count, 30, "every publish delivered")
                watch.cancel()
            listening.cancel()
        return received

    assert asyncio.run(scenario()) == [f"{i:08d}".encode() for i in range(count)]
