"""Forward events to the police platform's MQTT v5 broker, QoS 1, acknowledged per event."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import Field

from gateway.errors import PlatformNak, PlatformUnreachable
from gateway.forwarders.base import (
    ForwarderConfig,
    ForwarderContext,
    trimmed_payload,
    upstream_payload,
)
from gateway.journal_reader import OutboxRow
from gateway.mqtt.client import BrokerConfig, first_leaf
from gateway.mqtt.limits import LinkDown, PacketTooLarge
from gateway.mqtt.link import MqttLink
from gateway.mqtt.status import keep_status, offline_will
from gateway.outbox import ALARM_RANK, OutboxCursor, order_bound

logger = logging.getLogger(__name__)

KIND = "police_mqtt"


class PoliceMqttConfig(ForwarderConfig):
    """The police platform's MQTT broker."""

    kind: Literal["police_mqtt"] = Field(description="Forwarder type.")
    broker: BrokerConfig = Field(description="The police broker; use mqtts:// with client certs.")
    topic_root: str = Field(
        default="police/v1",
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="Topic root; events go to ROOT/{large_grid}/{gateway_id}/events.",
    )
    window: int = Field(
        default=256, ge=1, le=10_000, description="Events in flight awaiting PUBACK at most."
    )

    def resolved(self, base: Path) -> Self:
        """Resolve the broker's file paths (TLS, password file) against ``base``."""
        return self.model_copy(update={"broker": self.broker.resolved(base)})


class PoliceMqttForwarder:
    """Publishes every outbox row to the police broker; acknowledges a row only on its PUBACK."""

    kind: ClassVar[str] = KIND

    def __init__(
        self, config: PoliceMqttConfig, *, context: ForwarderContext, cursor: OutboxCursor
    ) -> None:
        """Forward rows from ``cursor`` as ``config`` says."""
        self.config = config
        self._context = context
        self.cursor = cursor
        base = f"{config.topic_root}/{context.large_grid}/{context.gateway_id}"
        self.events_topic = f"{base}/events"
        self.status_topic = f"{base}/status"
        self.link_up = asyncio.Event()

    async def run(self) -> None:
        """Connect, publish status, and forward until cancelled; raise when the link is down."""
        link = MqttLink(
            self.config.broker,
            client_id=f"lianfang-{self._context.gateway_id}-{self.config.name}",
            persistent=True,
            max_inflight=self.config.window,
            will=offline_will(self.status_topic, self._context.status),
        )
        try:
            async with link, asyncio.TaskGroup() as tg:
                self.link_up.set()
                tg.create_task(link.watch(), name=f"{self.config.name}.link")
                tg.create_task(
                    keep_status(
                        link,
                        self.status_topic,
                        self._context.status,
                        interval_s=self._context.status_interval_s,
                    ),
                    name=f"{self.config.name}.status",
                )
                tg.create_task(self._forward(link), name=f"{self.config.name}.forward")
        except* (LinkDown, PlatformNak, OSError) as group:
            raise PlatformUnreachable(
                f"police broker {self.config.broker.url}: {first_leaf(group)}"
            ) from None

    async def _forward(self, link: MqttLink) -> None:
        """Keep up to ``window`` routine events in flight; acknowledge each on its own PUBACK.

        Alarms take no routine room and never wait for it: one committed while
        a routine row waits for room goes first (decision 88), after its own
        shop's earlier cancel, restore or disarm (decision 87).
        """
        flight = _Flight(self, link)
        try:
            while True:
                batch = deque(await self.cursor.next_batch())
                while batch:
                    if batch[0].priority == ALARM_RANK or flight.room:
                        flight.send(batch.popleft())
                    elif urgent := _alarms_first(await self.cursor.take_alarms(), batch):
                        # No room for routine rows: alarms, in the batch or fresh, go
                        # now, each after its shop's order-bound rows.
                        for row in urgent:
                            flight.send(row, urgent=True)
                    else:
                        await flight.freed_or(self.cursor.alarm_ready)
        except BaseException as exc:
            self.cursor.rewind(sorted(flight.rows.values(), key=lambda r: r.seq), repr(exc))
            raise

    def payload(self, link: MqttLink, row: OutboxRow) -> bytes:
        """``row`` as the police get it: trimmed of its attrs if too big for ``link``."""
        payload = upstream_payload(row, self._context.shops)
        if link.fits(self.events_topic, payload):
            return payload
        # Over the broker's size limit: the event without its free-form attrs
        # rather than no event (in its place, so order holds).
        logger.warning(
            "%s: event %s sent without its attrs: %d bytes is over the broker's maximum "
            "packet size",
            self.config.name,
            row.event.id,
            len(row.body),
        )
        return trimmed_payload(row, self._context.shops)


class _Flight:
    """One link's events awaiting their PUBACK, and the room left for routine ones."""

    def __init__(self, forwarder: PoliceMqttForwarder, link: MqttLink) -> None:
        self._forwarder = forwarder
        self._link = link
        self.rows: dict[int, OutboxRow] = {}
        self.room = forwarder.config.window
        self._freed = asyncio.Event()

    def send(self, row: OutboxRow, *, urgent: bool | None = None) -> None:
        """Publish ``row`` (urgent if an alarm, unless told); routine takes room till its PUBACK."""
        if urgent is None:
            urgent = row.priority == ALARM_RANK
        self.rows[row.seq] = row
        if not urgent:
            self.room -= 1
        # The link sends in call order within a lane, and one shop's rows (its
        # key) in call order whatever their lane: the cursor's order holds.
        outcome = self._link.publish(
            self._forwarder.events_topic,
            self._forwarder.payload(self._link, row),
            urgent=urgent,
            key=row.shop_id,
            bound=order_bound(row),
        )
        outcome.add_done_callback(functools.partial(self._settled, row, urgent=urgent))

    async def freed_or(self, alarm_ready: asyncio.Event) -> None:
        """Wait for room for a routine row, or for ``alarm_ready``; at once if either is there.

        The caller looked at the room before it awaited the journal for alarms
        (``take_alarms``): PUBACKs that came meanwhile freed room and set
        ``_freed``. Clearing it then, with nothing left in flight to set it
        again, left routine rows waiting for good once the alarms stopped
        (a police outage's backlog stalled after the reconnect).
        """
        if self.room > 0 or alarm_ready.is_set():
            return
        self._freed.clear()
        waits = {
            asyncio.ensure_future(self._freed.wait()),
            asyncio.ensure_future(alarm_ready.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _settled(self, row: OutboxRow, outcome: asyncio.Future[None], *, urgent: bool) -> None:
        if not urgent:
            self.room += 1
            self._freed.set()
        name, cursor = self._forwarder.config.name, self._forwarder.cursor
        error = outcome.exception()
        if error is None:
            del self.rows[row.seq]
            cursor.ack(row)
        elif isinstance(error, PacketTooLarge):
            # Even trimmed it cannot go there, now or later: give it up, visibly.
            del self.rows[row.seq]
            logger.error("%s: event %s given up: %s", name, row.event.id, error)
            cursor.give_up(row, str(error))
        elif isinstance(error, PlatformNak):
            # Never mark a refused alarm delivered: drop the link, retry later.
            self._link.fail(f"refused event {row.seq}: {error}")


def _alarms_first(fresh: list[OutboxRow], batch: deque[OutboxRow]) -> list[OutboxRow]:
    """``fresh`` alarms and the batch's own, taken out of it with each shop's rows to go first.

    Those are a shop's rows in the batch up to its last order-bound one before
    its latest alarm; all in journal order.
    """
    alarms = [*(row for row in batch if row.priority == ALARM_RANK), *fresh]
    latest = {row.shop_id: row.seq for row in sorted(alarms, key=lambda r: r.seq)}
    bound_upto: dict[str | None, int] = {}
    for row in batch:
        if row.priority != ALARM_RANK and row.seq < latest.get(row.shop_id, 0) and order_bound(row):
            bound_upto[row.shop_id] = max(row.seq, bound_upto.get(row.shop_id, 0))
    taken = [
        row
        for row in batch
        if row.priority == ALARM_RANK or row.seq <= bound_upto.get(row.shop_id, 0)
    ]
    if not taken and not fresh:
        return []
    seqs = {row.seq for row in taken}
    kept = [row for row in batch if row.seq not in seqs]
    batch.clear()
    batch.extend(kept)
    return sorted([*taken, *fresh], key=lambda r: r.seq)
