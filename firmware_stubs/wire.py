"""What the serial firmware stubs share: their end of the wire, and their commands.

A stub either opens a serial port (a device path or pyserial URL, as a real
device on a real bus would be), or makes a pty pair itself and prints the
gateway's end as ``PTY /dev/pts/N`` on its first line of output, as socat
does. Commands come one per line on stdin and, with ``--control HOST:PORT``,
on a small TCP control socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import tty
from collections.abc import AsyncIterator, Callable

import serial_asyncio_fast


class Wire:
    """The device's end of a serial line."""

    def __init__(self, reader: asyncio.StreamReader, write: Callable[[bytes], None]) -> None:
        """Read from ``reader``; send with ``write``."""
        self.reader = reader
        self.write = write

    @classmethod
    async def open(cls, port: str | None, baudrate: int) -> Wire:
        """Open ``port``, or with None a new pty pair whose other end is printed for the gateway."""
        if port is not None:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=port, baudrate=baudrate
            )
            return cls(reader, writer.write)
        master, slave = os.openpty()
        # Raw from the start: no echo, no line editing, before the gateway opens its end.
        tty.setraw(slave)
        os.set_blocking(master, False)
        reader = asyncio.StreamReader()

        def readable() -> None:
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                return
            except OSError:  # the other end is gone for good
                data = b""
            if data:
                reader.feed_data(data)

        asyncio.get_running_loop().add_reader(master, readable)
        print(f"PTY {os.ttyname(slave)}", flush=True)  # the slave stays open: no hang-up

        def write(data: bytes) -> None:
            with contextlib.suppress(BlockingIOError):
                os.write(master, data)

        return cls(reader, write)


def add_wire_arguments(ap: argparse.ArgumentParser, *, baudrate: int) -> None:
    """The options every serial stub takes."""
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device or pyserial URL (socket://host:port)")
    where.add_argument("--pty", action="store_true", help="make a pty pair; print its gateway end")
    ap.add_argument(
        "--baudrate", type=int, default=baudrate, help=f"line speed (default {baudrate})"
    )
    ap.add_argument("--control", metavar="HOST:PORT", help="also take commands on this TCP port")


async def commands(control: str | None) -> AsyncIterator[str]:
    """Command lines from stdin and the control socket, if any; ends at EOF on stdin without one."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    loop = asyncio.get_running_loop()

    def from_stdin() -> None:
        # A daemon thread: a blocked readline must not keep the stub alive after 'quit'.
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        if control is None:  # with a control socket, the stub lives on without stdin
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            await queue.put(line.decode(errors="replace").strip())
            writer.write(b"ok\n")
        writer.close()

    threading.Thread(target=from_stdin, name="stdin", daemon=True).start()
    server = None
    if control:
        host, _, port = control.rpartition(":")
        server = await asyncio.start_server(client, host or "127.0.0.1", int(port))
    try:
        while (line := await queue.get()) is not None:
            if line:
                yield line
    finally:
        if server is not None:
            server.close()
