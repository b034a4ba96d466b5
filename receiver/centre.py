"""A small alarm receiving centre: DC-09 over TCP or UDP and the police MQTT feed, into SQLite.

``lianfang receiver`` runs it for police test benches and the demo. It answers
as the standard says: ACK once an alarm is stored, NAK (with its own clock) for
a frame it cannot check or a timestamp outside its window, DUH for a message
it reads but cannot use. Copies are dropped: DC-09 by account, sequence and
data within ten minutes, the MQTT feed by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from rich.console import Console
from rich.live import Live
from rich.table import Table

from gateway.errors import PlatformUnreachable
from gateway.events import utc_now
from gateway.supervise import supervise
from gateway.systemd import SystemdNotifier
from protocols.dc09 import FrameError, Message, Token, decode, encode, parse_data, split_frame
from receiver.limits import IDLE_TIMEOUT_S, KEEPALIVE, MAX_CONNECTIONS, MAX_PER_SOURCE
from receiver.refusals import RefusalLog

logger = logging.getLogger(__name__)

DEDUP_WINDOW = timedelta(minutes=10)
"""A copy comes within the gateway's retries (seconds to a few minutes). The
window is short because a sequence number comes back after 9999 messages: a
new alarm with the same account, number and data must not be taken for a copy."""
PEER: ContextVar[str] = ContextVar("dc09_peer", default="unknown")
"""The address whose frame is being answered (each TCP connection is its own task)."""
EARLIEST = timedelta(seconds=40)
LATEST = timedelta(seconds=20)
"""The usual timestamp window: a message may be 40 s old or 20 s ahead."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    via TEXT NOT NULL,
    account TEXT,
    sequence INTEGER,
    token TEXT,
    data TEXT,
    code TEXT,
    qualifier INTEGER,
    zone INTEGER,
    event_id TEXT UNIQUE,
    kind TEXT
);
CREATE INDEX IF NOT EXISTS alarms_dc09 ON alarms(account, sequence, data);
"""


@dataclass(frozen=True)
class Alarm:
    """One stored alarm."""

    received_at: str
    via: str
    account: str | None
    code: str
    zone: int | None
    detail: str


class AlarmStore:
    """The centre's alarms in SQLite; an alarm is durable before it is acknowledged."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the store at ``path``."""
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self.duplicates = 0
        self.listeners: list[Callable[[Alarm], None]] = []

    def add_dc09(self, message: Message, fields: dict[str, str | int], now: datetime) -> bool:
        """Store a DC-09 alarm; False if the same message came within ``DEDUP_WINDOW``."""
        seen = self._conn.execute(
            "SELECT 1 FROM alarms WHERE account=? AND sequence=? AND data=? AND received_at>?",
            (message.account, message.sequence, message.data, (now - DEDUP_WINDOW).isoformat()),
        ).fetchone()
        if seen:
            self.duplicates += 1
            return False
        code = str(fields["code"])
        qualifier = fields.get("qualifier")
        self._conn.execute(
            "INSERT INTO alarms (received_at, via, account, sequence, token, data, code,"
            " qualifier, zone) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                now.isoformat(),
                "dc09",
                message.account,
                message.sequence,
                message.token.value,
                message.data,
                code,
                qualifier,
                fields["zone"],
            ),
        )
        shown = f"{qualifier}{code}" if qualifier is not None else code
        self._tell(Alarm(now.isoformat(), "dc09", message.account, shown, int(fields["zone"]), ""))
        return True

    def add_event(self, body: dict[str, object], now: datetime) -> bool:
        """Store an event from the MQTT feed; False if its id is already stored."""
        try:
            self._conn.execute(
                "INSERT INTO alarms (received_at, via, event_id, kind, data) VALUES (?,?,?,?,?)",
                (now.isoformat(), "mqtt", body["id"], body.get("kind"), json.dumps(body)),
            )
        except sqlite3.IntegrityError:
            self.duplicates += 1
            return False
        shop = body.get("shop")
        detail = str(shop.get("name", "")) if isinstance(shop, dict) else ""
        zone = body.get("zone")
        self._tell(
            Alarm(
                now.isoformat(),
                "mqtt",
                str(body.get("shop_id")),
                str(body.get("kind")),
                int(zone) if isinstance(zone, str) and zone.isdigit() else None,
                detail,
            )
        )
        return True

    def _tell(self, alarm: Alarm) -> None:
        for listener in self.listeners:
            listener(alarm)

    def count(self) -> int:
        """Alarms stored."""
        return int(self._conn.execute("SELECT COUNT(*) FROM alarms").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._conn.close()


class Dc09Centre:
    """Answers DC-09 frames: checks, stores, and says ACK, NAK or DUH."""

    def __init__(
        self,
        store: AlarmStore,
        *,
        key: bytes | None = None,
        clock: Callable[[], datetime] = utc_now,
        max_connections: int = MAX_CONNECTIONS,
        max_per_source: int = MAX_PER_SOURCE,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        """Store into ``store``; decrypt with ``key`` (any account); ``clock`` is the centre's."""
        self.store = store
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.idle_timeout_s = idle_timeout_s
        self.idle_closed = 0
        """TCP connections closed for silence."""
        self.keys = {"": key} if key else None
        self.clock = clock
        self.rejected: Counter[str] = Counter()
        self.supervision: dict[str, datetime] = {}
        """Last NULL message per account: which gateways are alive."""
        self._connections: set[asyncio.StreamWriter] = set()
        self._per_source: Counter[str] = Counter()
        self._refusals = RefusalLog(logger)

    def answer(self, frame: bytes) -> bytes:
        """The reply to one frame (always one: a NAK for what cannot be read)."""
        now = self.clock()
        try:
            message = decode(frame, self.keys)
        except FrameError as exc:
            return self._refuse(exc, now)
        if message.token in (Token.ACK, Token.NAK, Token.DUH):
            return self._refuse(FrameError("a reply sent to the centre", "token"), now)
        if message.timestamp is not None and not (
            now - EARLIEST <= message.timestamp <= now + LATEST
        ):
            self.rejected["timestamp"] += 1
            self._refusals.refused(
                PEER.get(), f"a frame with timestamp {message.timestamp} outside the window (NAK)"
            )
            return encode(message.reply(Token.NAK, now))
        if message.token is Token.NULL:
            self.supervision[message.account or ""] = now
        else:
            try:
                fields = parse_data(message.token, message.data)
            except FrameError as exc:
                return self._refuse(exc, now, message)
            self.store.add_dc09(message, fields, now)
        key = self.keys[""] if self.keys and message.encrypted else None
        return encode(message.reply(Token.ACK, now), key)

    def _refuse(self, exc: FrameError, now: datetime, message: Message | None = None) -> bytes:
        self.rejected[exc.reason] += 1
        self._refusals.refused(PEER.get(), f"a frame: {exc}")
        if message is not None or exc.reason == "token":
            # Read but not usable: DUH (echoing the sequence when we have it).
            duh = message or Message(Token.DUH, 0, None)
            return encode(duh.reply(Token.DUH, None))
        return encode(Message(Token.NAK, 0, None).reply(Token.NAK, now))

    def hang_up(self) -> None:
        """Close every open TCP connection."""
        for writer in list(self._connections):
            writer.close()

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer every frame on one TCP connection until it closes or stays silent too long."""
        source = str(writer.get_extra_info("peername", ("unknown",))[0])
        if len(self._connections) >= self.max_connections:
            self.rejected["connections"] += 1
            self._refusals.refused(source, f"a connection: {self.max_connections} open")
            writer.close()
            return
        if self._per_source[source] >= self.max_per_source:
            self.rejected["per_source"] += 1
            self._refusals.refused(
                source, f"a connection: {self.max_per_source} open from this address"
            )
            writer.close()
            return
        _keep_alive(writer)
        PEER.set(source)
        self._connections.add(writer)
        self._per_source[source] += 1
        try:
            await self._serve_frames(reader, writer)
        except TimeoutError:
            self.idle_closed += 1
            writer.transport.abort()  # what it did not read is not worth waiting for
        except ConnectionError:
            pass
        finally:
            self._connections.discard(writer)
            self._per_source[source] -= 1
            if not self._per_source[source]:
                del self._per_source[source]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer frames until the peer closes.

        ``TimeoutError`` once the peer sends nothing, or reads none of our
        replies, for ``idle_timeout_s``.
        """
        buffer = bytearray()
        oversized = False  # after a line too long, drop bytes up to its CR
        while True:
            async with asyncio.timeout(self.idle_timeout_s):
                chunk = await reader.read(4096)
            if not chunk:
                return
            buffer += chunk
            if oversized:
                end = buffer.find(b"\r")
                del buffer[: end + 1 if end >= 0 else len(buffer)]
                oversized = end < 0
            while not oversized:
                try:
                    frame = split_frame(buffer)
                except FrameError as exc:
                    writer.write(self._refuse(exc, self.clock()))
                    oversized = True
                    break
                if frame is None:
                    break
                writer.write(self.answer(frame))
            async with asyncio.timeout(self.idle_timeout_s):
                await writer.drain()


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    """Turn on TCP keepalive (with ``KEEPALIVE``'s timings where the system has them)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE.items():
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class _UdpCentre(asyncio.DatagramProtocol):
    def __init__(self, centre: Dc09Centre) -> None:
        self.centre = centre
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: 3.11's selector datagram transport is not a
        # DatagramTransport subclass (the bug that silences pysiaalarm's UDP server).
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None:
            PEER.set(str(addr[0]))
            self.transport.sendto(self.centre.answer(data), addr)


@dataclass
class Listener:
    """A listening DC-09 socket: its port, and how to close it."""

    port: int
    close: Callable[[], None]


async def listen(centre: Dc09Centre, host: str, port: int, *, udp: bool = False) -> Listener:
    """Answer DC-09 on ``host:port`` (0: any free port) until closed."""
    if udp:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpCentre(centre), local_addr=(host, port)
        )
        return Listener(transport.get_extra_info("sockname")[1], transport.close)
    server = await asyncio.start_server(centre.serve_tcp, host, port)

    def close() -> None:
        server.close()
        centre.hang_up()

    return Listener(server.sockets[0].getsockname()[1], close)


async def follow_mqtt(store: AlarmStore, url: str, topic: str = "police/v1/+/+/events") -> None:
    """Store every event of the police MQTT feed at ``url`` until cancelled."""
    import aiomqtt  # noqa: PLC0415 - only the MQTT feed needs it

    from gateway.mqtt.client import BrokerConfig  # noqa: PLC0415

    broker = BrokerConfig(url=url)
    try:
        async with aiomqtt.Client(
            broker.host, broker.port, identifier="lianfang-receiver", clean_session=False
        ) as client:
            await client.subscribe(topic, qos=1)
            async for message in client.messages:
                try:
                    body = json.loads(bytes(message.payload))
                    store.add_event(body, utc_now())
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("unusable feed message on %s: %s", message.topic, exc)
    except aiomqtt.MqttError as exc:
        raise PlatformUnreachable(f"MQTT feed {url}: {exc}") from exc


def _table(alarms: list[Alarm], centre: Dc09Centre) -> Table:
    table = Table(
        title=f"lianfang receiver: {centre.store.count()} alarms,"
        f" {centre.store.duplicates} copies dropped,"
        f" {sum(centre.rejected.values())} frames refused,"
        f" {len(centre.supervision)} accounts polling",
    )
    for column in ("received (UTC)", "via", "account", "code", "zone", "detail"):
        table.add_column(column)
    for alarm in alarms[-20:]:
        zone = "" if alarm.zone is None else f"{alarm.zone:03d}"
        table.add_row(
            alarm.received_at[11:19], alarm.via, alarm.account or "", alarm.code, zone, alarm.detail
        )
    return table


async def run_receiver(
    db: Path,
    *,
    host: str,
    port: int,
    udp: bool,
    key: bytes | None,
    mqtt_url: str | None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    max_per_source: int = MAX_PER_SOURCE,
) -> None:
    """``lianfang receiver``: answer DC-09 (and follow the MQTT feed), showing alarms live."""
    store = AlarmStore(db)
    centre = Dc09Centre(
        store, key=key, idle_timeout_s=idle_timeout_s, max_per_source=max_per_source
    )
    shown: list[Alarm] = []
    listener = await listen(centre, host, port, udp=udp)
    console = Console(soft_wrap=True)
    console.print(
        f"DC-09 receiver on {'udp' if udp else 'tcp'}://{host}:{listener.port}"
        f"{' (AES)' if key else ''}; alarms in {db}",
        highlight=False,
    )
    # A live table on a terminal; one line per alarm into a pipe or a log.
    view = Live(_table(shown, centre), console=console, auto_refresh=False)

    def show(alarm: Alarm) -> None:
        shown.append(alarm)
        del shown[:-20]
        if console.is_terminal:
            view.update(_table(shown, centre), refresh=True)
        else:
            console.print(
                f"{alarm.received_at} {alarm.via} account={alarm.account} code={alarm.code}"
                f" zone={alarm.zone} {alarm.detail}",
                highlight=False,
            )

    store.listeners.append(show)
    notifier = SystemdNotifier()
    notifier.notify(f"READY=1\nSTATUS=DC-09 on port {listener.port}")
    notifier.close()
    try:
        with view if console.is_terminal else contextlib.nullcontext():
            async with asyncio.TaskGroup() as tg:
                if mqtt_url:
                    tg.create_task(
                        supervise("mqtt-feed", functools.partial(follow_mqtt, store, mqtt_url)),
                        name="mqtt-feed",
                    )
                await asyncio.Future()
    finally:
        listener.close()
        store.close()
