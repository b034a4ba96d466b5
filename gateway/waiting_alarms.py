"""Whether alarms wait for a forwarder: its supervisor then retries a lost link quickly."""

from __future__ import annotations

import asyncio

from gateway.events import EventClass
from gateway.journal import Journal
from gateway.journal_reader import JournalReader, OutboxRow
from gateway.journal_schema import PRIORITY_RANK

ALARM_RANK = PRIORITY_RANK[EventClass.ALARM]


class WaitingAlarms:
    """The ``Urgency`` of one forwarder's link (see ``gateway.supervise``).

    ``always`` marks a link that carries alarms by its role (the police
    forwarder): it is urgent even when nothing waits, so the next panic never
    finds it in a long backoff. Any other forwarder is urgent while the journal
    holds an undelivered alarm for it.
    """

    def __init__(self, journal: Journal, forwarder: str, *, always: bool) -> None:
        """Watch ``journal`` for alarms committed for ``forwarder``."""
        self._forwarder = forwarder
        self._always = always
        self._reader = None if always else JournalReader(journal.path)
        self._arrived = asyncio.Event()
        journal.on_commit(self._committed)

    def _committed(self, rows: list[OutboxRow], forwarder: str) -> None:
        if forwarder == self._forwarder and any(r.priority == ALARM_RANK for r in rows):
            self._arrived.set()

    def alarms_waiting(self) -> bool:
        """Whether an alarm waits for this forwarder (one indexed row read)."""
        if self._reader is None:
            return True
        first = self._reader.pending(self._forwarder, after=0, limit=1)
        return bool(first) and first[0].priority == ALARM_RANK

    async def alarm_arrived(self) -> None:
        """Return when an alarm is next committed for this forwarder."""
        self._arrived.clear()
        await self._arrived.wait()

    def close(self) -> None:
        """Release the reading connection."""
        if self._reader is not None:
            self._reader.close()
