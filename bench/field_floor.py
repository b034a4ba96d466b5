"""The floors for ``bench.field``: the least a program must do for the same job.

    python -m bench.field_floor line --port /dev/pts/N --block mqtt://... --neighbours map.json
    python -m bench.field_floor modbus --host 127.0.0.1:5020 --units 1-16 --period 0.2

``line``: read line-protocol frames from a pty (the same parser), ACK each at
once, and publish each PANIC verbatim to the 10 neighbours' notify topics (paho,
QoS 1, TCP_NODELAY) — no journal, no rules. ``modbus``: poll the units one
after another at the period with pymodbus and print ``EDGE unit input value t``
(``t`` is ``time.perf_counter()``, the system-wide monotonic clock) for every
change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
import serial
from paho.mqtt.enums import CallbackAPIVersion

from bench.relay import host_port
from drivers.modbus import modbus_client, parse_units
from protocols.line_frames import LineReader


def line_floor(port: str, block: str, table: dict[str, Any]) -> None:
    """Relay panics from the pty to the neighbours' notify topics until killed."""
    origin: dict[str, str] = table["origin"]
    neighbours: dict[str, list[str]] = table["neighbours"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="floor-line", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.socket().setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    client.connect(*host_port(block))
    client.loop_start()
    wire = serial.serial_for_url(port, baudrate=9600, timeout=None)
    reader = LineReader()
    print("READY", flush=True)
    while True:
        data = wire.read(max(1, wire.in_waiting))
        for frame in reader.feed(data):
            wire.write(frame.ack().encode())
            if frame.type != "PANIC":
                continue
            # As small as a notice can be: who, and which press.
            body = json.dumps({"from_shop_id": origin[str(frame.addr)], "seq": frame.seq})
            for shop in neighbours.get(str(frame.addr), []):
                client.publish(f"lianfang/v1/shop/{shop}/notify", body, qos=1)


async def modbus_floor(host: str, units: list[int], period: float) -> None:
    """Poll ``units`` at ``period`` and print each input change, until cancelled."""
    client = modbus_client(port=None, host=host, baudrate=9600, timeout_s=0.5)
    await client.connect()
    last: dict[int, list[bool]] = {}
    print("READY", flush=True)
    due = time.monotonic()
    while True:
        for unit in units:
            reply = await client.read_discrete_inputs(0, count=8, device_id=unit)
            now = time.perf_counter()
            bits = [bool(b) for b in reply.bits[:8]]
            before = last.get(unit)
            if before is not None:
                for n, (was, is_) in enumerate(zip(before, bits, strict=True)):
                    if was != is_:
                        print(f"EDGE {unit} {n} {int(is_)} {now}", flush=True)
            last[unit] = bits
        due += period
        await asyncio.sleep(max(0.0, due - time.monotonic()))


def main() -> None:
    """Command line of the floors."""
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    line = sub.add_parser("line")
    line.add_argument("--port", required=True)
    line.add_argument("--block", required=True)
    line.add_argument("--neighbours", required=True, help="JSON file: address -> shop ids")
    modbus = sub.add_parser("modbus")
    modbus.add_argument("--host", required=True)
    modbus.add_argument("--units", default="1-16")
    modbus.add_argument("--period", type=float, default=0.2)
    args = ap.parse_args()
    if args.what == "line":
        with open(args.neighbours) as f:  # noqa: PTH123 - one small file
            line_floor(args.port, args.block, json.load(f))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(modbus_floor(args.host, parse_units(args.units), args.period))


if __name__ == "__main__":
    main()
