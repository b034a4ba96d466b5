"""Area alerts: several robbery or panic alarms in one grid cell within a window alert the cell.

The police practice it automates: after two robberies in a day, patrols and
shopkeepers of the whole cell are told. Alarms count once per shop, so one
shopkeeper pressing again does not alert the cell.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

# Alarms kept per cell: plenty for any threshold, bounded under a storm.
MAX_RECENT = 1000


@dataclass(frozen=True, slots=True)
class AreaTrigger:
    """The alarms (event id, shop id) that fired an area alert for ``cell``."""

    cell: str
    alarms: tuple[tuple[str, str], ...]


class AreaWatch:
    """Recent alarms per cell; says when a cell reaches its threshold, once per window."""

    def __init__(self) -> None:
        """Start with no alarms seen."""
        self._recent: dict[str, deque[tuple[datetime, str, str]]] = {}
        self._fired: dict[str, datetime] = {}

    def count(
        self, cell: str, event_id: str, shop_id: str, at: datetime, *, alarms: int, window_s: float
    ) -> AreaTrigger | None:
        """Record an alarm; the trigger if the cell now has ``alarms`` from distinct shops."""
        window = timedelta(seconds=window_s)
        recent = self._recent.setdefault(cell, deque(maxlen=MAX_RECENT))
        recent.append((at, event_id, shop_id))
        while recent and at - recent[0][0] > window:
            recent.popleft()
        fired = self._fired.get(cell)
        if fired is not None and at - fired <= window:
            return None
        first_per_shop: dict[str, str] = {}
        for t, eid, sid in recent:
            # A late alarm (a panel's buffer) arrives after newer ones: count only its window.
            if abs(at - t) <= window:
                first_per_shop.setdefault(sid, eid)
        if len(first_per_shop) < alarms:
            return None
        self._fired[cell] = at
        return AreaTrigger(cell, tuple((eid, sid) for sid, eid in first_per_shop.items()))

    def pending(self, cell: str, at: datetime, window_s: float) -> int:
        """Distinct shops with alarms in ``cell`` within the window before ``at`` (for dry runs)."""
        window = timedelta(seconds=window_s)
        return len({sid for t, _, sid in self._recent.get(cell, ()) if at - t <= window})
