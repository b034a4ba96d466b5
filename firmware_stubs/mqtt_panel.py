"""An MQTT shop alarm panel: sends the shop's events and shows neighbours' alerts.

    python -m firmware_stubs.mqtt_panel --broker mqtt://127.0.0.1:1883 --shop S00011 panic
    python -m firmware_stubs.mqtt_panel --broker mqtt://127.0.0.1:1883 --shop S00012 listen

Without a kind it reads commands from stdin, one per line: an event kind
(``panic``, ``duress``, ``door_open``...) or ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from firmware_stubs.mqtt_client import client_for
from gateway.mqtt.client import BrokerConfig


@dataclass(frozen=True)
class ReceivedNotice:
    """A neighbour alert as the panel received it."""

    shop_id: str
    body: dict[str, Any]
    at: float = field(default_factory=time.perf_counter)


class ShopPanel:
    """One shop's panel on the block broker."""

    def __init__(
        self,
        broker: BrokerConfig,
        shop_id: str,
        *,
        device_id: str = "panel-1",
        on_notice: Callable[[ReceivedNotice], None] | None = None,
    ) -> None:
        """A panel of ``shop_id`` on ``broker``."""
        self.broker = broker
        self.shop_id = shop_id
        self.device_id = device_id
        self.notices: list[ReceivedNotice] = []
        self._on_notice = on_notice
        self._seq = itertools.count(int(time.time()) % 100_000 * 1000)
        self._client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Connect, listen for neighbour alerts until cancelled."""
        self._client = client_for(
            self.broker, client_id=f"panel-{self.shop_id}-{self.device_id}", persistent=False
        )
        async with self._client as client:
            await client.subscribe(f"lianfang/v1/shop/{self.shop_id}/notify", qos=1)
            self.ready.set()
            async for message in client.messages:
                notice = ReceivedNotice(self.shop_id, json.loads(bytes(message.payload)))
                self.notices.append(notice)
                if self._on_notice:
                    self._on_notice(notice)

    async def send(self, kind: str, **extra: Any) -> int:  # noqa: ANN401 - free-form attrs
        """Publish one event of ``kind`` (QoS 1); return its sequence number."""
        if self._client is None:
            raise RuntimeError("the panel is not connected; run() it first")
        seq = next(self._seq)
        body = {
            "device_id": self.device_id,
            "kind": kind,
            "seq": seq,
            "ts": datetime.now(UTC).isoformat(),
            **extra,
        }
        await self._client.publish(
            f"lianfang/v1/shop/{self.shop_id}/event", json.dumps(body), qos=1
        )
        return seq

    async def respond(self, alert_id: str, response: str) -> None:
        """Answer a neighbour alert: ``coming``, ``safe`` or ``cancel`` (QoS 1)."""
        if self._client is None:
            raise RuntimeError("the panel is not connected; run() it first")
        body = {"alert_id": alert_id, "response": response}
        await self._client.publish(
            f"lianfang/v1/shop/{self.shop_id}/response", json.dumps(body), qos=1
        )


async def _main(args: argparse.Namespace) -> None:
    panel = ShopPanel(
        BrokerConfig(url=args.broker),
        args.shop,
        device_id=args.device,
        on_notice=lambda n: print(f"ALERT {json.dumps(n.body)}", flush=True),
    )
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(panel.run(), name="panel")
        await panel.ready.wait()
        if args.kind == "listen":
            return
        if args.kind:
            print(f"sent {args.kind} seq={await panel.send(args.kind)}", flush=True)
        else:
            loop = asyncio.get_running_loop()
            while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
                if line == "quit":
                    break
                print(f"sent {line} seq={await panel.send(line)}", flush=True)
        runner.cancel()


def main() -> None:
    """Command line of the panel stub."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="block broker URL")
    ap.add_argument("--shop", required=True, help="shop id, e.g. S00011")
    ap.add_argument("--device", default="panel-1", help="device id (default panel-1)")
    ap.add_argument("kind", nargs="?", help="event kind to send, or 'listen'")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(ap.parse_args()))


if __name__ == "__main__":
    main()
