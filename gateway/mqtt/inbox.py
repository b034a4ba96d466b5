"""One subscription of the gateway on a broker: each message to a handler, acknowledged after.

Used for the police platform's commands and the other gateways' notices (the
police broker) and for shops' responses to alerts (the block broker). An inbox
can also publish: the mesh sends notices for other gateways' shops through it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from gateway.errors import DriverUnavailable, PlatformNak
from gateway.mqtt.client import BrokerConfig, first_leaf
from gateway.mqtt.limits import LinkDown
from gateway.mqtt.link import MqttLink
from gateway.mqtt.retained import replayed
from gateway.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

MAX_OUTGOING = 1000

Handle = Callable[[str, bytes, Callable[[], None]], Awaitable[None]]
"""``handle(topic, payload, done)``: ``done()`` acknowledges the message to the broker."""


class Rejected(ValueError):  # noqa: N818 - as drivers' Rejected: a verdict, not our error
    """A message the handler could not use; counted by ``reason`` and dropped."""

    def __init__(self, reason: str, detail: str) -> None:
        """``reason`` is the counter's name, ``detail`` the log line."""
        super().__init__(detail)
        self.reason = reason


class Inbox:
    """A persistent subscription to ``topic`` (QoS 1), and a queue of messages to publish."""

    def __init__(
        self,
        name: str,
        broker: BrokerConfig,
        *,
        client_id: str,
        topic: str | Sequence[str],
        handle: Handle,
        unsubscribe: Sequence[str] = (),
    ) -> None:
        """Subscribe to ``topic`` (one filter or several) on ``broker``; hand each message on.

        ``unsubscribe`` names filters an older version left in the persistent session.
        """
        self.name = name
        self._broker = broker
        self._client_id = client_id
        self.topic = topic
        self._stale = tuple(unsubscribe)
        self._handle = handle
        self._outgoing: deque[tuple[str, bytes]] = deque(maxlen=MAX_OUTGOING)
        self._wakeup = asyncio.Event()
        self._log = RateLimitedLog(logger, interval_s=60)
        self.link_up = asyncio.Event()
        self.rejected: dict[str, int] = {}
        self.sent = 0

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 publish; never waits (the oldest goes if too many are waiting)."""
        self._outgoing.append((topic, payload))
        self._wakeup.set()

    async def run(self) -> None:
        """Receive and publish until cancelled; raise when the link is down."""
        link = MqttLink(
            self._broker,
            client_id=self._client_id,
            persistent=True,
            subscribe=self.topic,
            unsubscribe=self._stale,
            max_unacked=100,
        )
        try:
            async with link, asyncio.TaskGroup() as tg:
                self.link_up.set()
                tg.create_task(link.watch(), name=f"{self.name}.link")
                tg.create_task(self._receive(link), name=f"{self.name}.receive")
                tg.create_task(self._publish(link), name=f"{self.name}.publish")
        except* (LinkDown, PlatformNak, OSError) as group:
            raise DriverUnavailable(
                f"{self.name} on {self._broker.url}: {first_leaf(group)}"
            ) from None
        finally:
            self.link_up.clear()

    async def _receive(self, link: MqttLink) -> None:
        while True:
            message, generation = await link.messages.get()
            link.taken(message)

            done = functools.partial(link.ack, message, generation)
            if replayed(message, self.rejected, self.name):
                done()
                continue
            try:
                await self._handle(message.topic, bytes(message.payload), done)
            except Rejected as exc:
                self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
                self._log.warning(
                    exc.reason, "%s: dropped a message on %s: %s", self.name, message.topic, exc
                )
                done()

    async def _publish(self, link: MqttLink) -> None:
        while True:
            while not self._outgoing:
                self._wakeup.clear()
                await self._wakeup.wait()
            topic, payload = self._outgoing[0]
            try:
                await link.publish(topic, payload)
                self.sent += 1
            except PlatformNak as exc:  # the broker will never take it (ACL): do not retry forever
                self.rejected["refused"] = self.rejected.get("refused", 0) + 1
                self._log.warning("refused", "%s: broker refused %s: %s", self.name, topic, exc)
            if self._outgoing and self._outgoing[0] == (topic, payload):
                self._outgoing.popleft()
