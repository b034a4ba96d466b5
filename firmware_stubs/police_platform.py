"""A stand-in police platform: receives forwarded events, drops duplicates by id, prints them.

python -m firmware_stubs.police_platform --broker mqtt://127.0.0.1:1884
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_stubs.mqtt_client import client_for
from gateway.mqtt.client import BrokerConfig


@dataclass(frozen=True)
class Delivery:
    """One event message as the platform received it."""

    topic: str
    body: dict[str, Any]
    at: float = field(default_factory=time.perf_counter)


class PolicePlatform:
    """Subscribes to every gateway's events with a persistent session (QoS 1)."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        topic: str = "police/v1/+/+/events",
        client_id: str = "police-platform",
        on_event: Callable[[Delivery], None] | None = None,
    ) -> None:
        """Receive on ``broker``; ``on_event`` sees each first delivery of an id."""
        self.broker = broker
        self.topic = topic
        self.client_id = client_id
        self.deliveries: list[Delivery] = []
        self.by_id: dict[str, Delivery] = {}
        self.duplicates = 0
        self._on_event = on_event
        self.ready = asyncio.Event()

    @property
    def unique(self) -> list[Delivery]:
        """First deliveries, in arrival order."""
        return list(self.by_id.values())

    async def run(self) -> None:
        """Receive until cancelled."""
        client = client_for(self.broker, client_id=self.client_id, persistent=True)
        async with client:
            await client.subscribe(self.topic, qos=1)
            self.ready.set()
            async for message in client.messages:
                body = json.loads(bytes(message.payload))
                delivery = Delivery(str(message.topic), body)
                self.deliveries.append(delivery)
                if body["id"] in self.by_id:
                    self.duplicates += 1
                    continue
                self.by_id[body["id"]] = delivery
                if self._on_event:
                    self._on_event(delivery)


def main() -> None:
    """Command line of the platform stub."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="police broker URL")
    args = ap.parse_args()
    platform = PolicePlatform(
        BrokerConfig(url=args.broker),
        on_event=lambda d: print(f"{d.topic} {json.dumps(d.body)}", flush=True),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(platform.run())


if __name__ == "__main__":
    main()
