"""The paced subscriber against a real broker holding a backlog: memory stays bounded, nothing is lost."""

from __future__ import annotations

import asyncio

import aiomqtt

from gateway.mqtt import BrokerConfig
from gateway.paced_subscriber import PacedSubscriber


def test_a_backlog_arrives_complete_without_more_than_max_unacked_outstanding(block_broker):
    """3,000 queued messages reach a slow consumer in full while at most ~50 are ever unacknowledged."""
    broker = BrokerConfig(url=block_broker.url)

    def subscriber() -> PacedSubscriber:
        return PacedSubscriber(broker, client_id="paced", topic="backlog/#", max_unacked=50)

    async def scenario() -> tuple[int, int, int]:
        first = subscriber()
        async with asyncio.TaskGroup() as tg:
            up = asyncio.Event()
            task = tg.create_task(first.run(on_subscribed=up), name="first")
            await asyncio.wait_for(up.wait(), 5)
            task.cancel()
        async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="producer") as p:
            for i in range(3000):
                await p.publish(f"backlog/{i % 7}", str(i).encode(), qos=1)
        paced = subscriber()
        got: list[int] = []
        peak_unacked = peak_queued = 0
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(paced.run(), name="paced")
            while len(got) < 3000:
                message, generation = await asyncio.wait_for(paced.messages.get(), 10)
                peak_unacked = max(peak_unacked, paced.unacked)
                peak_queued = max(peak_queued, paced.messages.qsize())
                got.append(int(message.payload))
                if len(got) % 10 == 0:
                    await asyncio.sleep(0.001)  # a consumer slower than the broker
                paced.ack(message, generation)
            task.cancel()
        assert sorted(got) == list(range(3000))
        return len(got), peak_unacked, peak_queued

    count, peak_unacked, peak_queued = asyncio.run(scenario())
    assert count == 3000
    assert peak_unacked <= 60, peak_unacked
    assert peak_queued <= 60, peak_queued
