"""Wired devices on one line-protocol bus: panic buttons and keypads.

Each device sends one frame at a time and repeats it with backoff until the
gateway acknowledges it (stop-and-wait), sends a heartbeat with its battery
voltage every ``--heartbeat-s``, and numbers its frames 0-255, wrapping.

Commands (stdin or the control socket), ``ADDR`` defaulting to the first device:

    press [ADDR] [ZONE]     panic (zone 1 by default)
    keys [ADDR] KEYS        type keys on a keypad, e.g. ``keys 5 9#``
    tamper [ADDR]           open the case;  ``restore [ADDR]`` close it
    hb [ADDR]               send a heartbeat now
    battery [ADDR] VOLTS    set the battery voltage heartbeats report
    heartbeats off|on       stop or resume every device's heartbeats
    power off|on            cut or restore power (nothing is sent; seq restarts at 0)
    drop-acks SECONDS       ignore the gateway's ACKs for a while
    noise [BYTES]           put random garbage on the line
    quit

Each frame sent prints ``SENT addr seq TYPE``; each ACK taken prints ``ACKED addr seq``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

from firmware_stubs.wire import Wire, add_wire_arguments, commands
from protocols.line_frames import LineFrame, LineReader

KEY_GAP_S = 0.15
FIRST_RETRY_S = 0.3
MAX_RETRY_S = 3.0


@dataclass
class LineDevice:
    """One device on the bus, stop-and-wait."""

    addr: int
    battery_v: float = 3.02
    seq: int = field(default_factory=lambda: random.randrange(256))
    queue: asyncio.Queue[tuple[str, str | None]] = field(default_factory=asyncio.Queue)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_seq: int | None = None


class LineBus:
    """The devices and their shared wire."""

    def __init__(
        self, wire: Wire, addresses: list[int], *, heartbeat_s: float, seq: int | None = None
    ) -> None:
        """Devices at ``addresses`` on ``wire``, numbering from ``seq`` (random if None)."""
        self.wire = wire
        self.devices = {a: LineDevice(a) for a in addresses}
        for dev in self.devices.values():
            dev.seq = dev.seq if seq is None else seq
        self.heartbeat_s = heartbeat_s
        self.heartbeats = heartbeat_s > 0
        self.powered = asyncio.Event()
        self.powered.set()
        self.ignore_acks_until = 0.0

    def device(self, addr: str | None) -> LineDevice:
        """The device at ``addr``, or the first one."""
        return self.devices[int(addr)] if addr else next(iter(self.devices.values()))

    async def run(self, control: str | None) -> None:
        """Serve the bus until ``quit`` or end of input."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._read_acks(), name="acks")]
            for dev in self.devices.values():
                tasks.append(tg.create_task(self._send_loop(dev), name=f"send[{dev.addr}]"))
                tasks.append(tg.create_task(self._heartbeat(dev), name=f"hb[{dev.addr}]"))
            async for line in commands(control):
                if line == "quit":
                    break
                try:
                    self.command(line.split())
                except (ValueError, KeyError, IndexError) as exc:
                    print(f"ERROR {line!r}: {exc}", flush=True)
            for task in tasks:
                task.cancel()

    def command(self, words: list[str]) -> None:
        """Carry out one command."""
        verb, args = words[0], words[1:]
        if verb == "press":
            self.device(args[0] if args else None).queue.put_nowait(
                ("PANIC", args[1] if len(args) > 1 else "1")
            )
        elif verb == "keys":
            dev = self.device(args[0] if len(args) > 1 else None)
            for key in args[-1]:
                dev.queue.put_nowait(("KEY", key))
        elif verb in ("tamper", "restore", "hb"):
            dev = self.device(args[0] if args else None)
            dev.queue.put_nowait(
                ("HB", f"{dev.battery_v:.2f}") if verb == "hb" else (verb.upper(), None)
            )
        elif verb == "battery":
            self.device(args[0] if len(args) > 1 else None).battery_v = float(args[-1])
        elif verb == "heartbeats":
            self.heartbeats = args[0] == "on"
        elif verb == "power":
            self._power(on=args[0] == "on")
        elif verb == "drop-acks":
            self.ignore_acks_until = time.monotonic() + float(args[0])
        elif verb == "noise":
            self.wire.write(random.randbytes(int(args[0]) if args else 64))
        else:
            raise ValueError(f"unknown command {verb!r}")

    def _power(self, *, on: bool) -> None:
        if on:
            self.powered.set()
            for dev in self.devices.values():  # a boot heartbeat, as real devices send
                dev.queue.put_nowait(("HB", f"{dev.battery_v:.2f}"))
            return
        self.powered.clear()
        for dev in self.devices.values():
            dev.seq = 0
            while not dev.queue.empty():
                dev.queue.get_nowait()

    async def _send_loop(self, dev: LineDevice) -> None:
        while True:
            kind, data = await dev.queue.get()
            await self.powered.wait()
            frame = LineFrame(dev.addr, dev.seq, kind, data)
            dev.seq = (dev.seq + 1) % 256
            dev.acked.clear()
            dev.waiting_seq = frame.seq
            delay = FIRST_RETRY_S
            while self.powered.is_set():
                self.wire.write(frame.encode())
                print(f"SENT {frame.addr} {frame.seq} {frame.type}", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dev.acked.wait(), delay)
                    break
                delay = min(MAX_RETRY_S, delay * 2)
            dev.waiting_seq = None
            if kind == "KEY":
                await asyncio.sleep(KEY_GAP_S)

    async def _heartbeat(self, dev: LineDevice) -> None:
        if self.heartbeat_s <= 0:
            return
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.heartbeats and self.powered.is_set():
                dev.queue.put_nowait(("HB", f"{dev.battery_v:.2f}"))

    async def _read_acks(self) -> None:
        reader = LineReader()
        while data := await self.wire.reader.read(512):
            for frame in reader.feed(data):
                dev = self.devices.get(frame.addr)
                if frame.type != "ACK" or dev is None or dev.waiting_seq != frame.seq:
                    continue
                if time.monotonic() < self.ignore_acks_until or not self.powered.is_set():
                    continue
                print(f"ACKED {frame.addr} {frame.seq}", flush=True)
                dev.acked.set()


def main(default_kind: str = "device") -> None:
    """Command line of a line-protocol bus stub (``panic_button`` and ``keypad`` call this)."""
    ap = argparse.ArgumentParser(
        description=f"A wired {default_kind} bus (line protocol).\n\n{__doc__}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_wire_arguments(ap, baudrate=9600)
    ap.add_argument(
        "--address", type=int, action="append", required=True, help="device address (repeatable)"
    )
    ap.add_argument("--heartbeat-s", type=float, default=30, help="heartbeat period; 0 for none")
    ap.add_argument("--seq", type=int, choices=range(256), metavar="0-255", help="first seq number")
    args = ap.parse_args()

    async def serve() -> None:
        wire = await Wire.open(None if args.pty else args.port, args.baudrate)
        bus = LineBus(wire, args.address, heartbeat_s=args.heartbeat_s, seq=args.seq)
        await bus.run(args.control)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
