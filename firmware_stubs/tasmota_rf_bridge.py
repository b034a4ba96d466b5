"""A Sonoff RF Bridge running Tasmota: each 433 MHz press as a burst of ``RfReceived`` messages.

    python -m firmware_stubs.tasmota_rf_bridge --broker mqtt://127.0.0.1:1883 --topic rfbridge

Commands (stdin or ``--control HOST:PORT``):

    press CODE [REPEATS]    one press of a fixed-code button: REPEATS messages (default 5-10)
    raw JSON                any payload on tele/<topic>/RESULT, as it is
    quit

Each press publishes ``{"RfReceived":{"Sync":..,"Low":..,"High":..,"Data":"CODE","RfKey":"None"}}``
on ``tele/<topic>/RESULT`` a few tens of ms apart, as the bridge relays the
repeated frames of one press; ``tele/<topic>/LWT`` is ``Online`` (retained)
while it runs. Prints ``PRESSED CODE REPEATS`` after each press.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random

import aiomqtt

from firmware_stubs.mqtt_client import client_for, device_stub_arguments
from firmware_stubs.wire import commands
from gateway.mqtt.client import BrokerConfig

FRAME_GAP_S = (0.02, 0.07)


class TasmotaRfBridge:
    """One RF bridge publishing under Tasmota's ``tele/<topic>/``."""

    def __init__(self, client: aiomqtt.Client, topic: str = "rfbridge") -> None:
        """Publish through ``client`` (connected by the caller)."""
        self._client = client
        self.result_topic = f"tele/{topic}/RESULT"

    async def press(self, code: str, repeats: int) -> None:
        """One press: ``repeats`` identical codes a few tens of ms apart."""
        for _ in range(repeats):
            body = {
                "RfReceived": {
                    "Sync": random.randint(11300, 11500),
                    "Low": random.randint(350, 390),
                    "High": random.randint(1050, 1090),
                    "Data": code.upper(),
                    "RfKey": "None",
                }
            }
            await self.raw(json.dumps(body))
            await asyncio.sleep(random.uniform(*FRAME_GAP_S))

    async def raw(self, payload: str) -> None:
        """Publish ``payload`` as it is on the bridge's RESULT topic."""
        await self._client.publish(self.result_topic, payload, qos=1)


async def _serve(args: argparse.Namespace) -> None:
    lwt = f"tele/{args.topic}/LWT"
    client = client_for(
        BrokerConfig(url=args.broker),
        client_id=args.client_id,
        persistent=False,
        will=aiomqtt.Will(lwt, "Offline", qos=1, retain=True),
    )
    async with client:
        await client.publish(lwt, "Online", qos=1, retain=True)
        bridge = TasmotaRfBridge(client, args.topic)
        print("READY", flush=True)
        async for line in commands(args.control):
            words = line.split()
            if words[:1] == ["quit"]:
                break
            if words[:1] == ["press"] and len(words) in (2, 3):
                repeats = int(words[2]) if len(words) == 3 else random.randint(5, 10)
                await bridge.press(words[1], repeats)
                print(f"PRESSED {words[1].upper()} {repeats}", flush=True)
            elif words[:1] == ["raw"] and len(words) > 1:
                await bridge.raw(line.split(" ", 1)[1])
            else:
                print(f"ERROR unknown command {line!r}", flush=True)


def main() -> None:
    """Command line of the RF bridge stub."""
    ap = device_stub_arguments(__doc__, client_id="tasmota-rf-bridge-stub")
    ap.add_argument("--topic", default="rfbridge", help="the bridge's Tasmota Topic")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(ap.parse_args()))


if __name__ == "__main__":
    main()
