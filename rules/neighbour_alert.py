"""Alert the nearest shops when a shopkeeper presses panic: the scheme's core rule."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.events import Event, new_event_id, utc_now
from rules.geo import Neighbour


@dataclass(frozen=True, slots=True)
class Notice:
    """One neighbour's notification: where to publish and what."""

    shop_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class NeighbourAlert:
    """One alert fanned out to the nearest shops of its origin."""

    alert_id: str
    event_id: str
    notices: tuple[Notice, ...]
    expires_at_monotonic: float


class NeighbourAlerts:
    """Builds an event's alert to the neighbours the rules chose; one per shop per cool-down."""

    def __init__(
        self,
        names: dict[str, str],
        *,
        cooldown_s: float,
        expires_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        """Alert with ``names`` (shop names by id) shown to neighbours.

        ``wall`` dates the notices' expiry: the police's time when the gateway's is off.
        """
        self.names = names
        """Shop names by id (a reload replaces them)."""
        self._cooldown_s = cooldown_s
        self._expires_s = expires_s
        self._clock = clock
        self._wall = wall
        self._last_alert: dict[str, float] = {}
        self.suppressed = 0

    def alert_for(self, event: Event, neighbours: list[Neighbour]) -> NeighbourAlert | None:
        """The alert of ``event`` to ``neighbours``, or None (none, or its shop is in cool-down)."""
        if event.shop_id is None or not neighbours:
            return None
        now = self._clock()
        last = self._last_alert.get(event.shop_id)
        if last is not None and now - last < self._cooldown_s:
            self.suppressed += 1
            return None
        self._last_alert[event.shop_id] = now
        alert_id = new_event_id()
        expires_at = self._wall() + timedelta(seconds=self._expires_s)
        notices = self.notices(event, neighbours, alert_id, expires_at)
        return NeighbourAlert(alert_id, event.id, notices, now + self._expires_s)

    def notices(
        self, event: Event, neighbours: list[Neighbour], alert_id: str, expires_at: datetime
    ) -> tuple[Notice, ...]:
        """``event``'s alert ``alert_id`` as each of ``neighbours`` is told it."""
        common = {
            "alert_id": alert_id,
            "event_id": event.id,
            "from_shop_id": event.shop_id,
            "from_shop_name": self.names.get(event.shop_id or "", event.shop_id),
            "kind": event.kind.value,
            "occurred_at": event.occurred_at.isoformat(),
            "expires_at": expires_at.isoformat(),
        }
        return tuple(
            Notice(
                shop_id=n.shop_id,
                payload=json.dumps(
                    {
                        **common,
                        "distance_m": round(n.distance_m, 1),
                        # The way from the alerted shop to the one in trouble.
                        "bearing_deg": round((n.bearing_deg + 180) % 360, 1),
                        "bearing": _reverse_words(n),
                    },
                    separators=(",", ":"),
                ).encode(),
            )
            for n in neighbours
        )

    def alerted_at(self, shop_id: str, at: float) -> None:
        """Count ``shop_id`` as alerted at ``at``: its cool-down runs from then (a restart)."""
        self._last_alert[shop_id] = max(at, self._last_alert.get(shop_id, at))


def _reverse_words(n: Neighbour) -> str:
    return Neighbour(n.shop_id, n.distance_m, (n.bearing_deg + 180) % 360).words
