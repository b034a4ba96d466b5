"""Forward events to an alarm receiving centre over SIA DC-09 (TCP or UDP), one ACK per event.

One message is in flight at a time, as the standard's communicators do: the
next event goes only after the centre acknowledged the last, which keeps order
per account. Each event's sequence number comes from its journal position, so
a message sent again after a lost ACK or a restart carries the same number and
the centre can drop the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator

from gateway.errors import PlatformUnreachable
from gateway.events import EventKind, utc_now
from gateway.forwarders.base import ForwarderConfig, ForwarderContext
from gateway.forwarders.dc09_codes import CodeEntry, CodeTable, shop_account
from gateway.journal_reader import OutboxRow
from gateway.outbox import OutboxCursor
from protocols.dc09 import (
    FrameError,
    Message,
    Token,
    contact_id,
    decode,
    encode,
    key_bytes,
    sia_dcs,
    split_frame,
)

logger = logging.getLogger(__name__)

KIND = "dc09"
_warned_unmapped: set[str] = set()


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "udp"):
        raise ValueError("expected tcp://HOST:PORT or udp://HOST:PORT")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the port must be a number from 1 to 65535") from exc
    if not port:
        raise ValueError("give the receiver's port: tcp://HOST:PORT")
    return url


ReceiverUrl = Annotated[str, AfterValidator(_check_url)]
# Upper case: replies echo it so, and we match them against what we sent.
Account = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{3,16}$"), AfterValidator(str.upper)]


class Dc09Config(ForwarderConfig):
    """An alarm receiving centre that speaks SIA DC-09."""

    kind: Literal["dc09"] = Field(description="Forwarder type.")
    url: ReceiverUrl = Field(description="Primary receiver: tcp://HOST:PORT or udp://HOST:PORT.")
    backup_url: ReceiverUrl | None = Field(
        default=None, description="Secondary receiver, used when the primary stops acknowledging."
    )
    account: Account = Field(
        description="The gateway's own account: its NULL supervision and its own troubles."
    )
    format: Literal["ADM-CID", "SIA-DCS"] = Field(
        default="ADM-CID", description="Contact ID (ADM-CID) or SIA DC-03 (SIA-DCS) data."
    )
    receiver: str | None = Field(
        default=None,
        pattern=r"^[0-9A-F]{1,6}$",
        description="Receiver number sent as Rxxxx; left out when not set.",
    )
    line: str | None = Field(
        default="0",
        pattern=r"^[0-9A-F]{1,6}$",
        description="Line prefix sent as Lxxxx (some receivers require it); null leaves it out.",
    )
    partition: int = Field(default=1, ge=0, le=99, description="Partition (area) reported.")
    key_format: Literal["hex", "ascii"] = Field(
        default="hex",
        description="'hex': the key is hex digits to decode; 'ascii': its characters are the "
        "key bytes (as pysiaalarm and some panels take it).",
    )
    key: SecretStr | None = Field(
        default=None,
        description="AES key (16, 24 or 32 bytes): messages are encrypted when set. "
        "Keep the config file unreadable by others.",
    )
    ack_timeout_s: float = Field(
        default=5, gt=0, le=120, description="Wait this long for ACK before sending again."
    )
    attempts: int = Field(
        default=3, ge=1, le=20, description="Sends of one message to one receiver before failover."
    )
    null_interval_s: float = Field(
        default=60,
        ge=0,
        le=86_400,
        description="Send a NULL supervision message after this long without traffic; 0: never.",
    )
    primary_retry_s: float = Field(
        default=300,
        ge=1,
        le=86_400,
        description="While on the backup receiver, try the primary again after this long.",
    )
    codes: dict[str, CodeEntry | None] = Field(
        default_factory=dict,
        description="Event kind → code, overriding the built-in table; null stops a kind.",
    )

    @field_validator("key")
    @classmethod
    def _key_fits(cls, key: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if key is not None:
            key_bytes(key.get_secret_value(), info.data.get("key_format", "hex"))
        return key

    @field_validator("codes")
    @classmethod
    def _known_kinds(cls, codes: dict[str, CodeEntry | None]) -> dict[str, CodeEntry | None]:
        unknown = sorted(set(codes) - {k.value for k in EventKind})
        if unknown:
            raise ValueError(f"unknown event kinds {', '.join(unknown)}")
        return codes

    def accepts_kind(self, kind: EventKind) -> bool:
        """Only kinds that have a code go to the centre."""
        return CodeTable.with_overrides(self.codes).sends(kind.value)


class _Link:
    """One connection (TCP) or socket (UDP) to a receiver; yields whole frames."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host, self.port = parts.hostname or "", parts.port or 0
        self.udp = parts.scheme == "udp"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._datagrams: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self._udp: asyncio.DatagramTransport | None = None
        self._buffer = bytearray()

    async def open(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            if self.udp:
                loop = asyncio.get_running_loop()
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self._datagrams), remote_addr=(self.host, self.port)
                )
            else:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self._buffer.clear()

    @property
    def hung_up(self) -> bool:
        """The receiver closed our idle TCP connection (some close idle ones)."""
        return self._reader is not None and self._reader.at_eof()

    async def send(self, frame: bytes) -> None:
        # One message per write: some receivers read one message per segment.
        if self._udp is not None:
            self._udp.sendto(frame)
            return
        assert self._writer is not None
        self._writer.write(frame)
        await self._writer.drain()

    async def receive(self) -> bytes:
        if self._udp is not None:
            item = await self._datagrams.get()
            if isinstance(item, Exception):
                raise item
            return item
        assert self._reader is not None
        while (frame := split_frame(self._buffer)) is None:
            chunk = await self._reader.read(1024)
            if not chunk:
                raise ConnectionResetError("the receiver closed the connection")
            self._buffer += chunk
        return frame

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes | Exception]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:  # noqa: ARG002
        self._queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self._queue.put_nowait(exc)


class Dc09Forwarder:
    """Sends each outbox row as one DC-09 message; acknowledges it on the centre's ACK."""

    kind: ClassVar[str] = KIND

    def __init__(
        self, config: Dc09Config, *, context: ForwarderContext, cursor: OutboxCursor
    ) -> None:
        """Forward rows from ``cursor`` as ``config`` says."""
        self.config = config
        self._context = context
        self._cursor = cursor
        self._table = CodeTable.with_overrides(config.codes)
        self._key = (
            key_bytes(config.key.get_secret_value(), config.key_format) if config.key else None
        )
        self._clock_offset = timedelta()
        self.on_centre_time: Callable[[datetime], None] | None = None
        """Told the centre's time from each NAK that carries one (the gateway judges its clock)."""
        self._last_sequence = 0
        self.link_up = asyncio.Event()
        self.naks = 0
        self.refused = 0
        unmapped = self._table.unmapped()
        if unmapped and config.name not in _warned_unmapped:
            _warned_unmapped.add(config.name)
            logger.warning(
                "%s: event kinds without a DC-09 code are not sent: %s",
                config.name,
                ", ".join(unmapped),
            )

    @property
    def clock_offset_s(self) -> float:
        """How far the centre's clock is ahead of ours, learnt from its NAKs."""
        return self._clock_offset.total_seconds()

    async def run(self) -> None:
        """Forward to the primary receiver, else the backup; raise when neither acknowledges.

        On the backup, the primary is tried again every ``primary_retry_s``.
        """
        urls = [self.config.url] + ([self.config.backup_url] if self.config.backup_url else [])
        while True:
            problems = []
            for i, url in enumerate(urls):
                until = None if i == 0 else time.monotonic() + self.config.primary_retry_s
                link = _Link(url)
                try:
                    await link.open(self.config.ack_timeout_s)
                    await self._forward(link, until=until)
                except (PlatformUnreachable, OSError, TimeoutError) as exc:
                    problems.append(f"{url}: {exc or type(exc).__name__}")
                    logger.warning("%s: %s", self.config.name, problems[-1])
                    continue
                finally:
                    link.close()
                logger.info("%s: trying the primary receiver again", self.config.name)
                break
            else:
                raise PlatformUnreachable("; ".join(problems))

    async def _forward(self, link: _Link, *, until: float | None = None) -> None:
        """Send NULL, then events as they come; return (between messages) once ``until`` passed."""
        # A NULL first: the link counts as up only once the centre has answered.
        await self._exchange(link, self._null_message())
        self.link_up.set()
        idle = self.config.null_interval_s or None
        while until is None or (left := until - time.monotonic()) > 0:
            wait = idle if until is None else min(idle or left, left)
            try:
                async with asyncio.timeout(wait):
                    rows = await self._cursor.next_batch()
            except TimeoutError:
                if until is None or time.monotonic() < until:
                    await self._exchange(link, self._null_message())
                continue
            await self._cursor.send_each(rows, functools.partial(self._deliver, link))

    async def _deliver(self, link: _Link, row: OutboxRow) -> None:
        event = row.event
        data = self._table.event_data(event, partition=self.config.partition)
        if data is None:  # routed before a config change unmapped its kind
            self._cursor.give_up(row, f"kind {event.kind} has no DC-09 code")
            return
        card = self._context.shops.get(event.shop_id) if event.shop_id else None
        account = shop_account(card.id, card.account) if card is not None else self.config.account
        if self.config.format == "ADM-CID":
            token, text = Token.ADM_CID, contact_id(account, data)
        else:
            token, text = Token.SIA_DCS, sia_dcs(account, data)
        self._last_sequence = (row.seq - 1) % 9999 + 1
        message = Message(
            token,
            self._last_sequence,
            account,
            data=text,
            receiver=self.config.receiver,
            line=self.config.line,
        )
        reply = await self._exchange(link, message)
        if reply.token is Token.ACK:
            self._cursor.ack(row)
        else:
            # DUH: the centre cannot use this message; sending it again would not help.
            self.refused += 1
            logger.error("%s: centre refused event %s (DUH)", self.config.name, event.id)
            self._cursor.give_up(row, f"{link.url} answered DUH")

    def _null_message(self) -> Message:
        # The NULL repeats the last event's number rather than counting on its
        # own: a late copy of its ACK then never matches the next event's
        # number (a NULL and the gateway's own events share the account), and
        # a centre that drops repeated numbers drops only the NULL. Before any
        # event, 9999: the first event collides only if its journal position is
        # a multiple of 9999.
        return Message(
            Token.NULL,
            self._last_sequence or 9999,
            self.config.account,
            receiver=self.config.receiver,
            line=self.config.line,
        )

    async def _exchange(self, link: _Link, message: Message) -> Message:
        """Send until ACK or DUH; a NAK resets the clock offset from its timestamp."""
        if link.hung_up:
            # Closed while idle, not while answering us: connect again quietly
            # rather than report the centre down.
            logger.info(
                "%s: %s closed the idle connection; reconnecting", self.config.name, link.url
            )
            link.close()
            await link.open(self.config.ack_timeout_s)
        for _ in range(self.config.attempts):
            stamped = replace(message, timestamp=utc_now() + self._clock_offset)
            await link.send(encode(stamped, self._key))
            with contextlib.suppress(TimeoutError):
                reply = await self._reply_to(link, message)
                if reply.token is not Token.NAK:
                    return reply
                self.naks += 1
                if reply.timestamp is not None:
                    self._clock_offset = reply.timestamp - utc_now()
                    if self.on_centre_time is not None:
                        self.on_centre_time(reply.timestamp)
                    logger.warning(
                        "%s: NAK; centre clock is %+.0f s from ours, sending again",
                        self.config.name,
                        self.clock_offset_s,
                    )
        raise PlatformUnreachable(
            f"no ACK for {message.token} {message.sequence:04d} after {self.config.attempts} sends"
        )

    async def _reply_to(self, link: _Link, message: Message) -> Message:
        """The centre's NAK, or its ACK or DUH echoing this message's sequence and account."""
        keys = {"": self._key} if self._key else None
        async with asyncio.timeout(self.config.ack_timeout_s):
            while True:
                try:
                    frame = await link.receive()
                    reply = decode(frame, keys)
                except FrameError as exc:
                    logger.warning("%s: unusable reply (%s)", self.config.name, exc)
                    continue
                if reply.token is Token.NAK:
                    return reply
                if reply.token is Token.ACK and self._key and not reply.encrypted:
                    # An encrypted message is acknowledged encrypted; a clear ACK
                    # could come from anyone on the path and must not drop an alarm.
                    logger.warning(
                        "%s: clear ACK to an encrypted message ignored", self.config.name
                    )
                    continue
                if (
                    reply.token in (Token.ACK, Token.DUH)
                    and reply.account == message.account
                    and reply.sequence == message.sequence
                ):
                    return reply
                # Anything else is a late reply to an earlier send, or not ours:
                # an ACK that does not echo our account never marks an alarm delivered.
