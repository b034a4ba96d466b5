"""Which of a link's publishes may go to the broker now: its in-flight window.

At most ``size`` publishes await their PUBACK at once (the broker's Receive
Maximum or ours, the smaller); the rest wait here. Urgent publishes (alarms)
go ahead of every routine one waiting, and routine ones may fill the window
only up to ``size - reserve``: the last ``reserve`` slots are kept for alarms,
so an alarm never waits for the PUBACKs of routine messages (decision 88).
An urgent publish never overtakes a waiting ``bound`` one with the same
``key`` (one shop's cancel, restore or disarm): it takes its key's routine
publishes up to the last bound one along, ahead of it (decision 87).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass

# One slot in this many is kept for urgent publishes (at least one, if the window has two).
RESERVE_SHARE = 8


@dataclass(slots=True)
class Waiting:
    """A publish waiting for a slot in the window."""

    topic: str
    payload: bytes
    retain: bool
    future: asyncio.Future[None]
    urgent: bool
    key: str | None
    bound: bool


class PublishWindow:
    """Publishes in flight and waiting: urgent ones first, with slots of their own."""

    def __init__(self, size: int) -> None:
        """A window of ``size`` publishes in flight."""
        self.resize(size)
        self._urgent: deque[Waiting] = deque()
        self._routine: deque[Waiting] = deque()
        # Bound publishes waiting, per key: only then does an urgent one scan the lane.
        self._bound: Counter[str] = Counter()

    def resize(self, size: int) -> None:
        """A new connection: ``size`` slots, none in flight."""
        self.size = size
        self.in_flight = 0
        self.routine_in_flight = 0
        # Slots routine publishes may take; the rest are kept for urgent ones.
        self.routine_share = size - (max(1, size // RESERVE_SHARE) if size > 1 else 0)

    def queue(self, waiting: Waiting) -> None:
        """Queue ``waiting`` behind the others of its lane (urgent: behind what it carries)."""
        if waiting.urgent:
            if waiting.key is not None and self._bound[waiting.key]:
                self._carry(waiting.key)
            self._urgent.append(waiting)
            return
        self._routine.append(waiting)
        self._count_bound(waiting, 1)

    def _carry(self, key: str) -> None:
        """Move ``key``'s routine publishes up to its last bound one to the urgent lane."""
        last = max(i for i, w in enumerate(self._routine) if w.bound and w.key == key)
        others: deque[Waiting] = deque()
        for i, routine in enumerate(self._routine):
            if i <= last and routine.key == key:
                routine.urgent = True  # it travels with the alarm now, slots and all
                self._urgent.append(routine)
            else:
                others.append(routine)
        self._routine = others
        del self._bound[key]

    def _count_bound(self, waiting: Waiting, change: int) -> None:
        if waiting.bound and waiting.key is not None:
            self._bound[waiting.key] += change
            if not self._bound[waiting.key]:
                del self._bound[waiting.key]

    def requeue(self, waiting: Waiting) -> None:
        """Undo ``next``: ``waiting`` could not be sent, and waits again at its lane's head."""
        self.settled(urgent=waiting.urgent)
        if waiting.urgent:
            self._urgent.appendleft(waiting)
            return
        self._routine.appendleft(waiting)
        self._count_bound(waiting, 1)

    def next(self) -> Waiting | None:
        """The next publish the window lets go now (counted in flight), or None."""
        while self.in_flight < self.size:
            if self._urgent:
                waiting = self._urgent.popleft()
            elif self._routine and self.routine_in_flight < self.routine_share:
                waiting = self._routine.popleft()
                self._count_bound(waiting, -1)
            else:
                return None
            if waiting.future.done():  # its owner gave up on it (cancelled)
                continue
            self.in_flight += 1
            if not waiting.urgent:
                self.routine_in_flight += 1
            return waiting
        return None

    def settled(self, *, urgent: bool) -> None:
        """A publish in flight got its PUBACK."""
        self.in_flight -= 1
        if not urgent:
            self.routine_in_flight -= 1

    def drop_all(self) -> list[asyncio.Future[None]]:
        """Forget every waiting publish (the link is gone); their futures."""
        futures = [w.future for w in (*self._urgent, *self._routine)]
        self._urgent.clear()
        self._routine.clear()
        self._bound.clear()
        return futures

    @property
    def waiting(self) -> int:
        """Publishes waiting for a slot."""
        return len(self._urgent) + len(self._routine)
