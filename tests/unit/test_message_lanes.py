"""The ingest's lanes: alarms overtake routine messages, but never their own shop's cancel."""

from __future__ import annotations

import asyncio

from paho.mqtt.client import MQTTMessage

from gateway.mqtt.lanes import Lane, MessageLanes


def test_an_urgent_message_takes_its_topics_messages_up_to_the_last_bound_one_along() -> None:
    """B's door and cancel go just before B's panic; A's flood and B's later door wait."""
    arrivals = [
        (1, "A", Lane.ROUTINE),
        (2, "B", Lane.ROUTINE),
        (3, "B", Lane.BOUND),  # B's cancel
        (4, "A", Lane.ROUTINE),
        (5, "B", Lane.ROUTINE),  # after the cancel: its place changes no meaning
        (6, "C", Lane.URGENT),  # another shop's alarm: C has nothing waiting
        (7, "B", Lane.URGENT),  # B's panic
        (8, "B", Lane.URGENT),  # and another: nothing bound left to wait for
    ]

    async def scenario() -> list[int]:
        lanes = MessageLanes()
        for mid, shop, lane in arrivals:
            message = MQTTMessage(mid=mid, topic=f"lianfang/v1/shop/{shop}/event".encode())
            lanes.put_nowait((message, 0), lane)
        return [(await lanes.get())[0].mid for _ in arrivals]

    assert asyncio.run(scenario()) == [6, 2, 3, 7, 8, 1, 4, 5]
