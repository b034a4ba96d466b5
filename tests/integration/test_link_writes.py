"""How the link writes its socket: at once, and still whole when the kernel takes less.

- A publish's bytes leave before ``publish`` returns, not at the loop's next
  turn (decision 995): the broker has it while the loop is still busy.
- Publishes the kernel cannot take (a peer that stopped reading) wait for the
  socket to be writable and then go, all of them, in order, over TCP and TLS.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.mqtt.client import BrokerConfig, TlsConfig
from gateway.mqtt.link import MqttLink
from lab.broker import Mosquitto
from tests.certs import make_pki
from tests.clients import wait_until
from tests.relay import HoldingRelay


def test_a_routine_publish_reaches_the_broker_before_the_loop_turns(
    block_broker: Mosquitto,
) -> None:
    """A watcher on its own thread receives the publish while the loop is blocked."""
    received = threading.Event()
    subscribed = threading.Event()
    watcher = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="watcher",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    watcher.on_subscribe = lambda *_: subscribed.set()
    watcher.on_message = lambda *_: received.set()
    watcher.connect("127.0.0.1", block_broker.port)
    watcher.subscribe("out/#", qos=1)
    watcher.loop_start()

    async def scenario() -> None:
        link = MqttLink(
            BrokerConfig(url=f"mqtt://127.0.0.1:{block_broker.port}"),
            client_id="fwd",
            persistent=False,
        )
        async with link, asyncio.TaskGroup() as tg:
            watch = tg.create_task(link.watch(), name="watch")
            await asyncio.sleep(0)
            sent = link.publish("out/e", b"routine")
            # The loop does not turn while this blocks: only bytes written already can arrive.
            arrived = received.wait(10)
            await sent
            watch.cancel()
        assert arrived, "the publish waited for the loop's next turn"

    try:
        assert subscribed.wait(10)
        asyncio.run(scenario())
    finally:
        watcher.loop_stop()
        watcher.disconnect()


PAYLOAD = 1024 * 1024
COUNT = 16  # 16 MiB: more than the loopback's kernel buffers hold on both sides


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_publishes_the_kernel_cannot_take_go_once_the_peer_reads_again(
    tmp_path: Path, block_broker: Mosquitto, *, tls: bool
) -> None:
    """With the relay not reading, the publishes wait for writability; then all arrive in order."""
    server: ssl.SSLContext | None = None
    tls_config: TlsConfig | None = None
    if tls:
        pki = make_pki(tmp_path / "pki")
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(pki.server_cert, pki.server_key)
        tls_config = TlsConfig(ca_file=pki.ca)

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
                BrokerConfig(url=relay.url, tls=tls_config), client_id="fwd", persistent=False
            )
            async with link:
                watch = tg.create_task(link.watch(), name="watch")
                relay.stalled = True
                sent = [
                    link.publish("out/e", f"{i:08d}".encode() + bytes(PAYLOAD))
                    for i in range(COUNT)
                ]
                await asyncio.sleep(0.2)  # the link's writes meet a full buffer meanwhile
                assert not any(f.done() for f in sent)
                relay.stalled = False
                await asyncio.wait_for(asyncio.gather(*sent), 30)
                await wait_until(lambda: len(received) == COUNT, 30, "every publish delivered")
                watch.cancel()
            listening.cancel()
        return received

    assert asyncio.run(scenario()) == [f"{i:08d}".encode() for i in range(COUNT)]
