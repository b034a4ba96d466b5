"""Arm state by opening hours: a shop is armed while closed, unless armed or disarmed early.

An early arm or disarm (a keypad code, a device, a police command) holds until
the next opening or closing time; from then on the hours rule again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

# An override read from a file that did not keep its start: it held from ever.
_EVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """When a shop is open, local time; ``closes`` before ``opens`` means past midnight."""

    opens: time
    closes: time

    def is_open(self, moment: time) -> bool:
        """Whether the shop is open at local ``moment``."""
        if self.opens <= self.closes:
            return self.opens <= moment < self.closes
        return moment >= self.opens or moment < self.closes

    def next_change(self, at: datetime) -> datetime:
        """The first opening or closing time after local ``at``."""
        candidates = [
            datetime.combine(at.date() + timedelta(days=d), t, at.tzinfo)
            for d in (0, 1)
            for t in (self.opens, self.closes)
        ]
        return min(c for c in candidates if c > at)


@dataclass(frozen=True, slots=True)
class Override:
    """An early arm (True) or disarm (False), valid from ``since`` until ``until``."""

    armed: bool
    until: datetime
    since: datetime = _EVER


class ArmSchedule:
    """Answers "is this shop armed at this moment?" for every shop of the gateway."""

    def __init__(self, hours: dict[str, OpeningHours | None], zone: tzinfo) -> None:
        """Hours per shop (None: no hours surveyed, armed only by code); times in ``zone``."""
        self._hours = hours
        self.zone = zone
        self.overrides: dict[str, Override] = {}

    def knows(self, shop_id: str) -> bool:
        """Whether ``shop_id`` is a shop of this gateway."""
        return shop_id in self._hours

    def armed(self, shop_id: str | None, at: datetime) -> bool:
        """Whether ``shop_id`` is armed at ``at`` (any time zone)."""
        if shop_id is None or shop_id not in self._hours:
            return False
        local = at.astimezone(self.zone)
        override = self.overrides.get(shop_id)
        # Kept past its end: an event stamped inside it may still arrive late (a
        # retransmission) and must be judged by it, not by the opening hours.
        if override is not None and override.since <= local < override.until:
            return override.armed
        hours = self._hours[shop_id]
        return hours is not None and not hours.is_open(local.time())

    def set(self, shop_id: str, *, armed: bool, at: datetime) -> bool:
        """Arm or disarm ``shop_id`` early from ``at``; False if the gateway has no such shop."""
        if shop_id not in self._hours:
            return False
        local = at.astimezone(self.zone)
        hours = self._hours[shop_id]
        until = hours.next_change(local) if hours else datetime.max.replace(tzinfo=self.zone)
        self.overrides[shop_id] = Override(armed, until, since=local)
        return True

    def saved(self) -> dict[str, dict[str, object]]:
        """The early arm/disarm overrides as JSON-ready data, to keep across a restart."""
        return {
            shop: {"armed": o.armed, "until": o.until.isoformat(), "since": o.since.isoformat()}
            for shop, o in self.overrides.items()
        }

    def restore(self, saved: dict[str, dict[str, object]]) -> None:
        """Take back overrides from ``saved()``; shops the gateway no longer has are skipped.

        Raises:
            ValueError: when ``saved`` is not what ``saved()`` makes.
        """
        for shop, o in saved.items():
            if shop in self._hours:
                armed, until = o["armed"], o["until"]
                if not isinstance(armed, bool) or not isinstance(until, str):
                    raise ValueError(f"bad override for {shop}")
                since = o.get("since")  # files written before it was kept have none
                self.overrides[shop] = Override(
                    armed,
                    datetime.fromisoformat(until),
                    since=datetime.fromisoformat(since) if isinstance(since, str) else _EVER,
                )
