"""The gateway's voice on the block's broker: neighbour alerts and its own status."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from pathlib import Path

from gateway.errors import DriverUnavailable, PlatformNak
from gateway.mqtt.client import BrokerConfig, first_leaf
from gateway.mqtt.limits import LinkDown
from gateway.mqtt.link import MqttLink
from gateway.mqtt.status import StatusSnapshot, keep_status, offline_will
from gateway.ratelimit import RateLimitedLog
from gateway.state_file import StateFile
from rules.neighbour_alert import NeighbourAlert

logger = logging.getLogger(__name__)

TOPIC_ROOT = "lianfang/v1"
MAX_PENDING_ALERTS = 10_000
# Alerts published and awaiting their PUBACKs at most (a 20-nearest rule makes 2,000 notices
# in flight), so that a broker that stops answering holds a bounded number in the link.
MAX_ALERTS_UNCONFIRMED = 100
CONFIRMED_SAVE_INTERVAL_S = 0.5
"""Confirmations are written at most this often: a flood of alerts makes a write or two a
second, and a restart repeats only notices confirmed in the last moments (alert ids dedup)."""


def notify_topic(shop_id: str) -> str:
    """Where a shop's devices listen for neighbour alerts."""
    return f"{TOPIC_ROOT}/shop/{shop_id}/notify"


def gateway_status_topic(gateway_id: str) -> str:
    """The gateway's retained status on the block's broker."""
    return f"{TOPIC_ROOT}/gateway/{gateway_id}/status"


class BlockPublisher:
    """Publishes neighbour alerts (QoS 1) and the gateway's retained status on the block broker.

    Alerts are queued in memory and published as soon as the link allows; an
    alert the link could not carry before it expired is dropped and counted, and
    so is the oldest alert if ``MAX_PENDING_ALERTS`` are ever waiting.

    An alert is published without waiting for the PUBACKs of the one before it
    (a broker's delayed PUBACKs held a second panic's notices for 30-50 ms,
    decision 81); it is confirmed once the broker has answered for all its
    notices, and a link lost before that publishes it again (``alert_id``
    dedups), in submission order.

    With a ``confirmed_file``, the shops each unexpired alert was confirmed for
    are kept there, so that a restart sends an alert again only to the shops the
    broker never answered for (``confirmed``).
    """

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        gateway_id: str,
        status: StatusSnapshot,
        status_interval_s: float,
        confirmed_file: Path | None = None,
    ) -> None:
        """Publish on ``broker`` as ``gateway_id``; keep confirmations in ``confirmed_file``."""
        self._broker = broker
        self._gateway_id = gateway_id
        self._status = status
        self._status_interval_s = status_interval_s
        self._pending: deque[NeighbourAlert] = deque()
        # Published on the current link, awaiting their PUBACKs; in submission order.
        # By submission, not alert id: the notice cap sends one alert in several parts.
        self._unconfirmed: dict[int, NeighbourAlert] = {}
        self._submissions = itertools.count()
        self._wakeup = asyncio.Event()
        self._confirmed_file = None if confirmed_file is None else StateFile(confirmed_file)
        # Alert id -> the wall time it expires and the shops the broker answered for.
        self._confirmed: dict[str, tuple[float, set[str]]] = self._load_confirmed()
        self._confirmed_saved = self._confirmed_text()  # what the file holds, as far as we know
        self._confirmed_changed = asyncio.Event()
        self._log = RateLimitedLog(logger, interval_s=60)
        self.link_up = asyncio.Event()
        self.notices_sent = 0
        self.notices_refused = 0
        self.alerts_expired = 0
        self.alerts_dropped = 0

    def submit(self, alert: NeighbourAlert) -> None:
        """Queue ``alert`` for publishing now; never waits."""
        if len(self._pending) >= MAX_PENDING_ALERTS:
            self._pending.popleft()
            self.alerts_dropped += 1
            logger.error("neighbour alert queue full: dropped the oldest alert")
        self._pending.append(alert)
        self._wakeup.set()

    def confirmed(self, alert_id: str) -> frozenset[str]:
        """The shops the broker confirmed ``alert_id``'s notices for, here or before a restart."""
        confirmed = self._confirmed.get(alert_id)
        return frozenset(confirmed[1]) if confirmed else frozenset()

    @property
    def alerts_unconfirmed(self) -> int:
        """Alerts published on the link and still awaiting a PUBACK for some notice."""
        return len(self._unconfirmed)

    async def run(self) -> None:
        """Publish until cancelled; raise when the link is down (alerts stay queued)."""
        topic = gateway_status_topic(self._gateway_id)
        link = MqttLink(
            self._broker,
            client_id=f"lianfang-{self._gateway_id}-notify",
            persistent=False,
            max_inflight=1000,
            will=offline_will(topic, self._status),
        )
        try:
            try:
                async with link, asyncio.TaskGroup() as tg:
                    self.link_up.set()
                    tg.create_task(link.watch(), name="block.link")
                    tg.create_task(
                        keep_status(link, topic, self._status, interval_s=self._status_interval_s),
                        name="block.status",
                    )
                    tg.create_task(self._publish_alerts(link), name="block.alerts")
                    tg.create_task(self._keep_confirmed(), name="block.confirmed")
            except* (LinkDown, PlatformNak, OSError) as group:
                detail = first_leaf(group)
                # Written now, off the loop: a stop during the supervisor's pause that
                # follows would run nothing here, and a restart would tell them again.
                if (text := self._unsaved_text()) is not None:
                    await self._write_confirmed(text)
                raise DriverUnavailable(f"block broker {self._broker.url}: {detail}") from None
        except asyncio.CancelledError:
            # Stopping (a restart): what was confirmed since the last finished write is
            # written now, on the loop (its last work), or the restart would tell those
            # shops again.
            if (text := self._unsaved_text()) is not None and self._confirmed_file is not None:
                with contextlib.suppress(OSError):
                    self._confirmed_file.save(text)
                    self._confirmed_saved = text
            raise

    async def _publish_alerts(self, link: MqttLink) -> None:
        # Alerts a lost link never confirmed go first, as they were submitted.
        self._pending.extendleft(reversed(self._unconfirmed.values()))
        self._unconfirmed.clear()
        async with asyncio.TaskGroup() as tg:
            while True:
                while not self._pending or len(self._unconfirmed) >= MAX_ALERTS_UNCONFIRMED:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                alert = self._pending.popleft()
                if time.monotonic() > alert.expires_at_monotonic:
                    self.alerts_expired += 1
                    logger.warning(
                        "neighbour alert %s expired before the block link returned", alert.alert_id
                    )
                    continue
                # Every neighbour at once, each publish resolving on its own PUBACK.
                outcomes = [
                    link.publish(notify_topic(n.shop_id), n.payload, urgent=True)
                    for n in alert.notices
                ]
                key = next(self._submissions)
                self._unconfirmed[key] = alert
                tg.create_task(
                    self._confirm(key, alert, outcomes), name=f"block.alert[{alert.alert_id}]"
                )

    async def _confirm(
        self, key: int, alert: NeighbourAlert, published: list[asyncio.Future[None]]
    ) -> None:
        """Count ``alert``'s notices once the broker answered for all; raise if the link went."""
        outcomes = await asyncio.gather(*published, return_exceptions=True)
        lost = [o for o in outcomes if isinstance(o, LinkDown)]
        if lost:
            raise lost[0]  # the alert stays unconfirmed: the next link publishes it again
        del self._unconfirmed[key]
        self._wakeup.set()
        self._note_confirmed(alert)
        refused = sum(isinstance(o, PlatformNak) for o in outcomes)
        if refused:
            self.notices_refused += refused
            logger.error(
                "block broker refused %d notices of alert %s (check its ACL)",
                refused,
                alert.alert_id,
            )
        self.notices_sent += len(outcomes) - refused

    def _note_confirmed(self, alert: NeighbourAlert) -> None:
        """Remember the shops ``alert`` reached (a refused notice too: again would not help)."""
        if self._confirmed_file is None:
            return
        expires = time.time() + alert.expires_at_monotonic - time.monotonic()
        _, shops = self._confirmed.setdefault(alert.alert_id, (expires, set()))
        shops.update(n.shop_id for n in alert.notices)
        self._confirmed_changed.set()

    async def _keep_confirmed(self) -> None:
        """Write the confirmations after changes, off the hot path and at a bounded rate."""
        if self._confirmed_file is None:
            return
        while True:
            await self._confirmed_changed.wait()
            self._confirmed_changed.clear()
            await self._write_confirmed(self._confirmed_text())
            await asyncio.sleep(CONFIRMED_SAVE_INTERVAL_S)

    async def _write_confirmed(self, text: str) -> None:
        """Write ``text`` to the confirmations file in a worker thread."""
        assert self._confirmed_file is not None
        try:
            await self._confirmed_file.save_in_thread(text)
            self._confirmed_saved = text
        except OSError as exc:  # notices still go out; a restart may repeat some
            self._log.warning("confirmed", "cannot write %s: %s", self._confirmed_file.path, exc)

    def _unsaved_text(self) -> str | None:
        """The confirmations as the file should hold them, if they changed since the last write."""
        if (
            self._confirmed_file is None
            or (text := self._confirmed_text()) == self._confirmed_saved
        ):
            return None
        return text

    def _confirmed_text(self) -> str:
        """The unexpired confirmations as the file keeps them."""
        now = time.time()
        for alert_id in [a for a, (expires, _) in self._confirmed.items() if expires < now]:
            del self._confirmed[alert_id]
        return json.dumps({a: [e, sorted(s)] for a, (e, s) in self._confirmed.items()})

    def _load_confirmed(self) -> dict[str, tuple[float, set[str]]]:
        if self._confirmed_file is None:
            return {}
        path = self._confirmed_file.path
        try:
            saved = json.loads(path.read_text())
            now = time.time()
            return {a: (float(e), set(s)) for a, (e, s) in saved.items() if float(e) >= now}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("ignoring %s: %s", path, exc)
            return {}
