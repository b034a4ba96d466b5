"""Where the notices of neighbour alerts go, under one cap on notices a second.

Own shops are told through the block broker (and by SMS where configured),
other gateways' shops through the mesh on the police broker. The cap counts
every notice of the gateway, its own and those it relays: what it allows goes
at once, the rest as it gives room, until the alert expires (never dropped
before).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Protocol

from gateway.mqtt.notify import BlockPublisher
from gateway.ratelimit import RateLimitedLog
from rules.neighbour_alert import NeighbourAlert, Notice

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[None, None, None], str], object]
"""``spawn(work, name)``: run ``work`` as a named task of the rule actions."""


class MeshOut(Protocol):
    """Carries notices for shops of other gateways through the police broker."""

    def submit(self, gateway_id: str, large_grid: str, message: bytes) -> None:
        """Queue ``message`` for ``gateway_id``; never waits."""
        ...


class SmsOut(Protocol):
    """Texts alerted shops' phones (``gateway/sms``)."""

    def submit(self, alert: NeighbourAlert) -> None:
        """Queue one SMS per notice of ``alert`` (this gateway's shops only); never waits."""
        ...


class TokenBucket:
    """A rate cap: ``rate`` tokens a second, at most ``burst`` (default ``rate``) saved up."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: float | None = None,
    ) -> None:
        """Start full."""
        self.rate = rate
        self._burst = rate if burst is None else burst
        self._tokens = self._burst
        self._clock = clock
        self._last = clock()

    def take(self, wanted: int) -> int:
        """Take up to ``wanted`` tokens; how many were given."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        given = min(wanted, int(self._tokens))
        self._tokens -= given
        return given


class NoticeSender:
    """Sends the notices of one gateway's neighbour alerts; never waits."""

    def __init__(
        self,
        gateway_id: str,
        publisher: BlockPublisher,
        *,
        rate: float,
        by_mqtt: bool,
        spawn: Spawn,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Send as ``gateway_id``, at most ``rate`` notices a second.

        Own shops are told by MQTT if ``by_mqtt``; the rest of a capped alert
        waits in a task made by ``spawn``.
        """
        self._gid = gateway_id
        self._publisher = publisher
        self._bucket = TokenBucket(rate, clock)
        self._spawn = spawn
        self._clock = clock
        self.by_mqtt = by_mqtt
        self.mesh: MeshOut | None = None
        self.sms: SmsOut | None = None
        self._gateway_of: dict[str, str] = {}
        self._large_of: dict[str, str] = {}
        self._log = RateLimitedLog(logger, interval_s=10)
        self.capped = 0
        self.cap_expired = 0

    def reach(self, gateway_of: dict[str, str], large_of: dict[str, str]) -> None:
        """Take each shop's gateway and large grid cell (at start and on reload)."""
        self._gateway_of = gateway_of
        self._large_of = large_of

    def send(self, alert: NeighbourAlert) -> None:
        """Own shops through the block broker; other gateways' shops through the mesh."""
        own: list[Notice] = []
        away: dict[str, list[Notice]] = defaultdict(list)
        for notice in alert.notices:
            gateway = self._gateway_of.get(notice.shop_id)
            if gateway is None:
                continue  # a reload removed the shop while its notice waited for the cap
            (own if gateway == self._gid else away[gateway]).append(notice)
        if own:
            own_alert = replace(alert, notices=tuple(own))
            if self.by_mqtt:
                self._publisher.submit(own_alert)
            if self.sms is not None:  # after the MQTT notices: SMS never delays them
                self.sms.submit(own_alert)
        if self.mesh is None:
            return
        for gateway, notices in away.items():
            body = ",".join(
                f'{{"shop_id":{json.dumps(n.shop_id)},"notice":{n.payload.decode()}}}'
                for n in notices
            )
            message = (
                f'{{"alert_id":{json.dumps(alert.alert_id)},"from_gateway":'
                f'{json.dumps(self._gid)},"notices":[{body}]}}'
            )
            self.mesh.submit(gateway, self._large_of[notices[0].shop_id], message.encode())

    def send_capped(self, alert: NeighbourAlert) -> None:
        """Send what the global cap allows now; the rest as it gives room (never dropped)."""
        given = self._bucket.take(len(alert.notices))
        self.send(replace(alert, notices=alert.notices[:given]))
        if given < len(alert.notices):
            # Delayed, not dropped: the origin's cool-down is spent, its alert will not come again.
            self.capped += len(alert.notices) - given
            self._log.warning(
                "cap",
                "notice rate cap: alert %s reaches %d of %d shops now, the rest as the cap allows",
                alert.alert_id,
                given,
                len(alert.notices),
            )
            rest = replace(alert, notices=alert.notices[given:])
            self._spawn(self._send_when_allowed(rest), f"capped[{alert.alert_id}]")

    async def _send_when_allowed(self, alert: NeighbourAlert) -> None:
        """Send ``alert``'s notices as the global cap gives room, until the alert expires."""
        waiting = alert.notices
        while waiting:
            await asyncio.sleep(len(waiting) / self._bucket.rate)
            if self._clock() >= alert.expires_at_monotonic:
                self.cap_expired += len(waiting)
                self._log.warning(
                    "cap-expired",
                    "notice rate cap: alert %s expired with %d shops not told",
                    alert.alert_id,
                    len(waiting),
                )
                return
            given = self._bucket.take(len(waiting))
            self.send(replace(alert, notices=waiting[:given]))
            waiting = waiting[given:]
