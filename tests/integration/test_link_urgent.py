"""An alarm published while routine messages wait for the broker's window goes before them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.link import MqttLink
from lab.broker import Mosquitto

ROUTINE = 20


def test_an_urgent_publish_overtakes_routine_ones_waiting_for_the_window(tmp_path: Path) -> None:
    """With a Receive Maximum of 1, the alarm is second on the wire, not last."""
    with Mosquitto(workdir=tmp_path / "broker", settings=("max_inflight_messages 1",)) as broker:

        async def scenario() -> list[bytes]:
            received: list[bytes] = []
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="platform") as sub:
                await sub.subscribe("out/#", qos=1)
                link = MqttLink(BrokerConfig(url=broker.url), client_id="fwd", persistent=False)
                async with link, asyncio.TaskGroup() as tg:
                    watch = tg.create_task(link.watch(), name="watch")
                    assert link.limits.receive_maximum == 1
                    sent = [link.publish("out/e", f"routine-{i}".encode()) for i in range(ROUTINE)]
                    assert link.waiting == ROUTINE - 1
                    sent.append(link.publish("out/e", b"alarm", urgent=True))
                    await asyncio.wait_for(asyncio.gather(*sent), 10)
                    async with asyncio.timeout(10):
                        async for message in sub.messages:
                            received.append(bytes(message.payload))
                            if len(received) == ROUTINE + 1:
                                break
                    watch.cancel()
            return received

        received = asyncio.run(scenario())
    assert received[:2] == [b"routine-0", b"alarm"]
    assert received[2:] == [f"routine-{i}".encode() for i in range(1, ROUTINE)]
