"""The gateway's voice on the block's broker: neighbour alerts and its own status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import aiomqtt

from gateway.errors import DriverUnavailable
from gateway.mqtt import BrokerConfig, client_for, first_leaf, publish
from gateway.status import StatusSnapshot, keep_status, offline_will
from rules.neighbour_alert import NeighbourAlert

logger = logging.getLogger(__name__)

TOPIC_ROOT = "lianfang/v1"
MAX_PENDING_ALERTS = 10_000


def notify_topic(shop_id: str) -> str:
    """Where a shop's devices listen for neighbour alerts."""
    return f"{TOPIC_ROOT}/shop/{shop_id}/notify"


def gateway_status_topic(gateway_id: str) -> str:
    """The gateway's retained status on the block's broker."""
    return f"{TOPIC_ROOT}/gateway/{gateway_id}/status"


class BlockPublisher:
    """Publishes neighbour alerts (QoS 1) and the gateway's retained status on the block broker.

    Alerts are queued in memory and published as soon as the link allows; an
    alert the link could not carry before it expired is dropped and counted.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        gateway_id: str,
        status: StatusSnapshot,
        status_interval_s: float,
    ) -> None:
        """Publish on ``broker`` as ``gateway_id``."""
        self._broker = broker
        self._gateway_id = gateway_id
        self._status = status
        self._status_interval_s = status_interval_s
        self._pending: deque[NeighbourAlert] = deque(maxlen=MAX_PENDING_ALERTS)
        self._wakeup = asyncio.Event()
        self.link_up = asyncio.Event()
        self.notices_sent = 0
        self.alerts_expired = 0

    def submit(self, alert: NeighbourAlert) -> None:
        """Queue ``alert`` for publishing now; never waits."""
        self._pending.append(alert)
        self._wakeup.set()

    async def run(self) -> None:
        """Publish until cancelled; raise when the link is down (alerts stay queued)."""
        topic = gateway_status_topic(self._gateway_id)
        client = client_for(
            self._broker,
            client_id=f"lianfang-{self._gateway_id}-notify",
            persistent=False,
            will=offline_will(topic, self._status),
            max_inflight=1000,
        )
        try:
            async with client, asyncio.TaskGroup() as tg:
                self.link_up.set()
                tg.create_task(
                    keep_status(client, topic, self._status, interval_s=self._status_interval_s),
                    name="block.status",
                )
                tg.create_task(self._publish_alerts(client), name="block.alerts")
        except* (aiomqtt.MqttError, OSError) as group:
            detail = first_leaf(group)
            raise DriverUnavailable(f"block broker {self._broker.url}: {detail}") from None

    async def _publish_alerts(self, client: aiomqtt.Client) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            alert = self._pending[0]
            if time.monotonic() > alert.expires_at_monotonic:
                self.alerts_expired += 1
                logger.warning(
                    "neighbour alert %s expired before the block link returned", alert.alert_id
                )
            else:
                # Every neighbour at once; the alert leaves the queue only when all
                # were acknowledged, so a link loss resends it (alert_id dedups).
                async with asyncio.TaskGroup() as tg:
                    for notice in alert.notices:
                        tg.create_task(
                            publish(client, notify_topic(notice.shop_id), notice.payload),
                            name=f"notify[{notice.shop_id}]",
                        )
                self.notices_sent += len(alert.notices)
            self._pending.popleft()
