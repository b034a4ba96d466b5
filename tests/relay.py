"""A loopback relay in front of a broker that can hold back what the broker sends.

While ``held``, the broker's bytes to each client (PUBACKs, delivered messages)
collect in the relay; ``release`` writes each connection's whole store in one
write, so many MQTT packets arrive together (in one TLS record when the relay
speaks TLS, as a TLS-terminating proxy in front of a broker does). What the
clients send always goes straight through. With ``drop_subacks`` the broker's
SUBACKs are left out (a broker that never answers a SUBSCRIBE). While
``stalled``, the relay reads nothing from its clients: their kernel buffers
fill and their writes block, as towards a peer that stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from gateway.mqtt.client import TlsConfig
from lab.broker import free_port
from tests.certs import make_pki

SUBACK = 0x90
"""An MQTT SUBACK's first byte."""


@dataclass
class _Connection:
    to_client: asyncio.StreamWriter
    held: bytearray = field(default_factory=bytearray)
    partial: bytearray = field(default_factory=bytearray)


def _whole_packets(buffer: bytearray) -> list[bytes]:
    """Take the complete MQTT packets off the front of ``buffer``."""
    packets = []
    while len(buffer) >= 2:
        length, shift, at = 0, 0, 1
        while at < len(buffer) and buffer[at] & 0x80:
            length |= (buffer[at] & 0x7F) << shift
            shift, at = shift + 7, at + 1
        if at >= len(buffer):
            break
        length |= buffer[at] << shift
        end = at + 1 + length
        if end > len(buffer):
            break
        packets.append(bytes(buffer[:end]))
        del buffer[:end]
    return packets


class HoldingRelay:
    """Relays loopback connections to ``upstream_port``; TLS towards clients with ``tls``."""

    def __init__(self, upstream_port: int, *, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.held = False
        self.drop_subacks = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._upstream_port = upstream_port
        self._tls = tls
        self._connections: list[_Connection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self._tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def held_bytes(self) -> int:
        """Bytes from the broker not yet passed on."""
        return sum(len(c.held) for c in self._connections)

    @property
    def stalled(self) -> bool:
        """Whether the relay has stopped reading what its clients send."""
        return not self._reading.is_set()

    @stalled.setter
    def stalled(self, stalled: bool) -> None:
        if stalled:
            self._reading.clear()
        else:
            self._reading.set()

    def release(self) -> None:
        """Stop holding: pass on each connection's held bytes in one write."""
        self.held = False
        for connection in self._connections:
            if connection.held:
                connection.to_client.write(bytes(connection.held))
                connection.held.clear()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self._tls
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for connection in self._connections:
            connection.to_client.close()

    async def _serve(
        self, from_client: asyncio.StreamReader, to_client: asyncio.StreamWriter
    ) -> None:
        from_broker, to_broker = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        connection = _Connection(to_client)
        self._connections.append(connection)
        up = asyncio.create_task(self._pass_up(from_client, to_broker), name="relay-up")
        self._tasks.add(up)
        try:
            while data := await from_broker.read(65536):
                if self.drop_subacks:
                    connection.partial.extend(data)
                    packets = _whole_packets(connection.partial)
                    data = b"".join(p for p in packets if p[0] != SUBACK)
                if self.held:
                    connection.held.extend(data)
                else:
                    to_client.write(data)
        finally:
            up.cancel()
            to_broker.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                to_client.close()

    async def _pass_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Stalled, nothing is taken here: the stream stops reading at its buffer's
        # limit (128 KiB), and the rest of what the client sends stays in the kernel.
        while await self._reading.wait() and (data := await reader.read(65536)):
            writer.write(data)
            await writer.drain()
        writer.close()


def relay_tls(folder: Path, *, tls: bool) -> tuple[ssl.SSLContext | None, TlsConfig | None]:
    """A relay's server context and a link's TLS settings for a TLS run; both None over TCP."""
    if not tls:
        return None, None
    pki = make_pki(folder / "pki")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    return server, TlsConfig(ca_file=pki.ca)
