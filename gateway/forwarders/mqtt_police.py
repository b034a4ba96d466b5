"""Forward events to the police platform's MQTT v5 broker, QoS 1, acknowledged per event."""

from __future__ import annotations

import asyncio
import functools
import logging
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
from gateway.journal_schema import RANKS
from gateway.mqtt.client import BrokerConfig, first_leaf
from gateway.mqtt.limits import LinkDown, PacketTooLarge
from gateway.mqtt.link import MqttLink
from gateway.mqtt.status import keep_status, offline_will
from gateway.outbox import OutboxCursor

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
        self._cursor = cursor
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
        """Keep up to ``window`` events in flight; acknowledge each on its own PUBACK."""
        window = asyncio.Semaphore(self.config.window)
        in_flight: dict[int, OutboxRow] = {}

        def settled(row: OutboxRow, outcome: asyncio.Future[None]) -> None:
            window.release()
            error = outcome.exception()
            if error is None:
                del in_flight[row.seq]
                self._cursor.ack(row)
            elif isinstance(error, PacketTooLarge):
                # Even trimmed it cannot go there, now or later: give it up, visibly.
                del in_flight[row.seq]
                logger.error("%s: event %s given up: %s", self.config.name, row.event.id, error)
                self._cursor.give_up(row, str(error))
            elif isinstance(error, PlatformNak):
                # Never mark a refused alarm delivered: drop the link, retry later.
                link.fail(f"refused event {row.seq}: {error}")

        try:
            while True:
                for row in await self._cursor.next_batch():
                    await window.acquire()
                    in_flight[row.seq] = row
                    payload = upstream_payload(row, self._context.shops)
                    if not link.fits(self.events_topic, payload):
                        # Over the broker's size limit: the event without its free-form
                        # attrs rather than no event (in its place, so order holds).
                        payload = trimmed_payload(row, self._context.shops)
                        logger.warning(
                            "%s: event %s sent without its attrs: %d bytes is over the "
                            "broker's maximum packet size",
                            self.config.name,
                            row.event.id,
                            len(row.body),
                        )
                    # The link sends in call order (alarms ahead of rows waiting for the
                    # broker's window): rows go on the wire in the cursor's order.
                    urgent = row.priority == RANKS[0]
                    outcome = link.publish(self.events_topic, payload, urgent=urgent)
                    outcome.add_done_callback(functools.partial(settled, row))
        except BaseException as exc:
            self._cursor.rewind(sorted(in_flight.values(), key=lambda r: r.seq), repr(exc))
            raise
