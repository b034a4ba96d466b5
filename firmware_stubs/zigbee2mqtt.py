"""Zigbee2MQTT as shop devices see it: each device's state, published whole on every change.

    python -m firmware_stubs.zigbee2mqtt --broker mqtt://127.0.0.1:1883

Commands (stdin or ``--control HOST:PORT``), NAME being a device's friendly name:

    sos NAME            an SOS button's press ({"action": "emergency"})
    open NAME           a contact sensor opens ({"contact": false}); close NAME closes it
    leak NAME           a water sensor gets wet ({"water_leak": true}); dry NAME
    smoke NAME          a smoke detector alarms ({"smoke": true}); clear NAME
    battery NAME PCT    the battery level
    tamper NAME         the case is opened ({"tamper": true})
    offline NAME        availability offline (retained, as Zigbee2MQTT does); online NAME
    raw NAME JSON       any payload, as it is
    quit

As Zigbee2MQTT does, every message carries the device's whole cached state
(battery, linkquality, the last contact...) except ``action``, which is sent
once per press. Prints ``SENT <topic> <payload>`` for each message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

import aiomqtt

from firmware_stubs.mqtt_client import client_for, device_stub_arguments
from firmware_stubs.wire import commands
from gateway.mqtt.client import BrokerConfig

STATE_COMMANDS: dict[str, dict[str, Any]] = {
    "open": {"contact": False},
    "close": {"contact": True},
    "leak": {"water_leak": True},
    "dry": {"water_leak": False},
    "smoke": {"smoke": True},
    "clear": {"smoke": False},
    "tamper": {"tamper": True},
}


class Zigbee2Mqtt:
    """The devices of one Zigbee2MQTT instance, publishing under ``base_topic``."""

    def __init__(self, client: aiomqtt.Client, base_topic: str = "zigbee2mqtt") -> None:
        """Publish through ``client`` (connected by the caller)."""
        self._client = client
        self.base_topic = base_topic
        self.states: dict[str, dict[str, Any]] = {}

    async def report(self, name: str, change: dict[str, Any], *, retain: bool = False) -> None:
        """Update device ``name``'s state with ``change`` and publish the whole state.

        ``retain`` as Zigbee2MQTT's per-device ``retain: true`` option does.
        """
        state = self.states.setdefault(name, {"battery": 100, "linkquality": 120})
        state.update({k: v for k, v in change.items() if k != "action"})
        await self._send(f"{self.base_topic}/{name}", {**state, **change}, retain=retain)

    async def press(self, name: str) -> None:
        """One press of an SOS button."""
        await self.report(name, {"action": "emergency"})

    async def availability(self, name: str, *, online: bool) -> None:
        """Zigbee2MQTT's retained availability of device ``name``."""
        body = {"state": "online" if online else "offline"}
        await self._send(f"{self.base_topic}/{name}/availability", body, retain=True)

    async def _send(self, topic: str, body: dict[str, Any], *, retain: bool) -> None:
        payload = json.dumps(body)
        await self._client.publish(topic, payload, qos=1, retain=retain)
        print(f"SENT {topic} {payload}", flush=True)


async def run_command(bridge: Zigbee2Mqtt, words: list[str]) -> bool:
    """Carry out one command line; False if it is not one."""
    match words:
        case ["sos", name]:
            await bridge.press(name)
        case [verb, name] if verb in STATE_COMMANDS:
            await bridge.report(name, STATE_COMMANDS[verb])
        case ["battery", name, level] if level.isdigit():
            await bridge.report(name, {"battery": int(level)})
        case ["offline" | "online" as verb, name]:
            await bridge.availability(name, online=verb == "online")
        case ["raw", name, *body] if body:
            await bridge.report(name, json.loads(" ".join(body)))
        case _:
            return False
    return True


async def _serve(args: argparse.Namespace) -> None:
    client = client_for(BrokerConfig(url=args.broker), client_id=args.client_id, persistent=False)
    async with client:
        bridge = Zigbee2Mqtt(client, args.base_topic)
        print("READY", flush=True)
        async for line in commands(args.control):
            words = line.split()
            if words[:1] == ["quit"]:
                break
            try:
                known = bool(words) and await run_command(bridge, words)
            except ValueError as exc:
                print(f"ERROR {exc}", flush=True)
                continue
            if not known:
                print(f"ERROR unknown command {line!r}", flush=True)


def main() -> None:
    """Command line of the Zigbee2MQTT stub."""
    ap = device_stub_arguments(__doc__, client_id="zigbee2mqtt-stub")
    ap.add_argument("--base-topic", default="zigbee2mqtt", help="base topic (default zigbee2mqtt)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(ap.parse_args()))


if __name__ == "__main__":
    main()
