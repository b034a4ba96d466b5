"""Modbus IO modules (a pymodbus server): 8 discrete inputs with door contacts, 8 coils each.

    python -m firmware_stubs.modbus_io --tcp 127.0.0.1:5020 --units 1-16
    python -m firmware_stubs.modbus_io --pty --units 1-4       # RTU; prints PTY /dev/pts/N

Doors are NC contacts: an input reads 1 while its door is shut. Commands (stdin
or ``--control HOST:PORT``):

    open UNIT INPUT       open a door (the input reads 0)
    close UNIT INPUT      shut it (the input reads 1)
    power off|on          stop answering / answer again
    quit

Each coil change prints ``COIL unit coil on|off``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tty
from collections.abc import Callable

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import parse_units
from firmware_stubs.wire import commands

INPUTS = 8
COILS = 8
WATCH_S = 0.02


def _device(unit: int) -> SimDevice:
    def bits(*, value: bool) -> list[SimData]:
        return [SimData(0, values=[value] * 8, datatype=DataType.BITS)]

    def registers() -> list[SimData]:
        return [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)]

    # coils off, inputs 1 (every door shut), registers 0
    return SimDevice(unit, simdata=(bits(value=False), bits(value=True), registers(), registers()))


class ModbusIO:
    """Several IO modules behind one TCP endpoint or one RTU port."""

    def __init__(
        self, units: list[int], *, tcp: str | None = None, port: str | None = None
    ) -> None:
        """Modules ``units``, served on ``tcp`` (HOST:PORT) or the serial ``port``."""
        self.units = units
        self.tcp = tcp
        self.port = port
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._inputs = {u: [True] * INPUTS for u in units}
        self.coils = {u: [False] * COILS for u in units}

    async def start(self) -> None:
        """Start answering (again), with the doors and coils as they were."""
        devices = [_device(u) for u in self.units]
        if self.tcp is not None:
            host, _, port = self.tcp.rpartition(":")
            self._server = ModbusTcpServer(devices, address=(host, int(port)))
        else:
            self._server = ModbusSerialServer(devices, port=self.port or "", baudrate=9600)
        await self._server.serve_forever(background=True)
        for unit in self.units:
            await self._server.async_setValues(unit, 2, 0, list(self._inputs[unit]))
            await self._server.async_setValues(unit, 5, 0, list(self.coils[unit]))

    async def stop(self) -> None:
        """Stop answering (a power cut)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def set_door(self, unit: int, number: int, *, is_open: bool) -> None:
        """Open or shut the door on input ``number`` of ``unit``."""
        self._inputs[unit][number] = not is_open
        if self._server is not None:
            await self._server.async_setValues(unit, 2, number, [not is_open])

    async def watch_coils(self, on_change: Callable[[int, int, bool], None]) -> None:
        """Call ``on_change(unit, coil, on)`` for every coil change, until cancelled."""
        while True:
            await asyncio.sleep(WATCH_S)
            if self._server is None:
                continue
            for unit in self.units:
                now = [bool(b) for b in await self._server.async_getValues(unit, 1, 0, COILS)]
                for coil, (was, is_on) in enumerate(zip(self.coils[unit], now, strict=True)):
                    if was != is_on:
                        on_change(unit, coil, is_on)
                self.coils[unit] = now


def _pty_bridge() -> tuple[str, str]:
    """Two pty pairs joined like a null-modem cable: (server end, gateway end)."""
    ends = []
    masters = []
    for _ in range(2):
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        masters.append(master)
        ends.append(os.ttyname(slave))
    loop = asyncio.get_running_loop()

    def relay(src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, os.read(src, 4096))

    loop.add_reader(masters[0], relay, masters[0], masters[1])
    loop.add_reader(masters[1], relay, masters[1], masters[0])
    return ends[0], ends[1]


async def _serve(args: argparse.Namespace) -> None:
    port = args.port
    if args.pty:
        port, gateway_end = _pty_bridge()
        print(f"PTY {gateway_end}", flush=True)
    io = ModbusIO(parse_units(args.units), tcp=args.tcp, port=port)
    await io.start()
    print("READY", flush=True)
    async with asyncio.TaskGroup() as tg:
        watcher = tg.create_task(
            io.watch_coils(
                lambda u, c, on: print(f"COIL {u} {c} {'on' if on else 'off'}", flush=True)
            ),
            name="coils",
        )
        async for line in commands(args.control):
            words = line.split()
            if words[0] == "quit":
                break
            if words[0] in ("open", "close"):
                await io.set_door(int(words[1]), int(words[2]), is_open=words[0] == "open")
            elif words == ["power", "off"]:
                await io.stop()
            elif words == ["power", "on"]:
                await io.start()
            else:
                print(f"ERROR unknown command {line!r}", flush=True)
        watcher.cancel()
    await io.stop()


def main() -> None:
    """Command line of the IO module stub."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP here")
    where.add_argument("--port", help="serve Modbus RTU on this serial device")
    where.add_argument(
        "--pty", action="store_true", help="serve RTU on a new pty; print its gateway end"
    )
    ap.add_argument("--units", default="1", help="unit ids, e.g. 1-16 or 1,3 (default 1)")
    ap.add_argument("--control", metavar="HOST:PORT", help="also take commands on this TCP port")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(ap.parse_args()))


if __name__ == "__main__":
    main()
