"""Each forwarder's cursor over the journal: what to send next, alarms first.

Fresh events come straight from the journal writer after commit (no disk read
on the hot path). After a restart, a reconnect or when the receiver falls far
behind, the cursor reads the journal instead until it has caught up. A
backlog, on disk or in memory, drains highest priority first and in journal
order within a priority (decision 42); a caught-up cursor keeps journal order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.events import EventClass
from gateway.journal import Journal
from gateway.journal_reader import JournalReader, OutboxRow
from gateway.journal_schema import PRIORITY_RANK, RANKS

logger = logging.getLogger(__name__)

LIVE_BUFFER = 2000
# Rows handed out at once from memory: a forwarder works through a batch in order,
# so a fresh alarm waits for at most this many routine rows handed out before it.
LIVE_BATCH = 32
ALARM_RANK = PRIORITY_RANK[EventClass.ALARM]


class OutboxCursor:
    """Hands one forwarder its unacknowledged events, alarms first, each until acknowledged."""

    def __init__(self, journal: Journal, name: str, *, batch: int = 500) -> None:
        """Follow ``journal`` on behalf of the forwarder called ``name``."""
        self.name = name
        self._journal = journal
        self._reader = JournalReader(journal.path)
        self._batch = batch
        # One queue per priority rank; within one, journal order.
        self._live: dict[int, deque[OutboxRow]] = {rank: deque() for rank in RANKS}
        self._live_count = 0
        self._overflows = 0
        self._from_disk = True  # first catch up on whatever the journal holds
        # Per rank, the last seq handed out: each rank is read in seq order.
        self._sent_upto: dict[int, int] = dict.fromkeys(RANKS, 0)
        self._wakeup = asyncio.Event()
        journal.on_commit(self._committed)

    def _committed(self, rows: list[OutboxRow], forwarder: str) -> None:
        if forwarder != self.name:
            return
        for row in rows:
            self._live[row.priority].append(row)
        self._live_count += len(rows)
        if self._live_count > LIVE_BUFFER:
            # Too far behind to keep in memory: drop the buffer, read the journal.
            self._clear_live()
            self._overflows += 1
            self._from_disk = True
        self._wakeup.set()

    def _clear_live(self) -> None:
        for queue in self._live.values():
            queue.clear()
        self._live_count = 0

    async def next_batch(self) -> list[OutboxRow]:
        """Wait for and return the next events to send: highest priority first, then oldest."""
        while True:
            if self._from_disk:
                overflows = self._overflows
                rows = await asyncio.to_thread(
                    self._reader.pending,
                    self.name,
                    after=dict(self._sent_upto),
                    limit=self._batch,
                )
                if rows:
                    self._handed_out(rows)
                    return rows
                if overflows == self._overflows:
                    self._from_disk = False
                continue
            # Caught up (everything buffered fits one batch): journal order, as
            # committed. A backlog in memory: highest priority first.
            caught_up = self._live_count <= LIVE_BATCH
            rows = []
            for rank in RANKS:
                queue, upto = self._live[rank], self._sent_upto[rank]
                while queue and len(rows) < LIVE_BATCH:
                    row = queue.popleft()
                    self._live_count -= 1
                    # Rows the disk read already handed out come again here: skip them.
                    if row.seq > upto:
                        rows.append(row)
            if caught_up:
                rows.sort(key=lambda r: r.seq)
            if rows:
                self._handed_out(rows)
                return rows
            self._wakeup.clear()
            await self._wakeup.wait()

    def _handed_out(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            self._sent_upto[row.priority] = row.seq

    def ack(self, row: OutboxRow) -> None:
        """The receiver acknowledged ``row``: record it, one row at a time."""
        self._journal.ack(self.name, row.seq)
        if row.priority == ALARM_RANK:
            event = row.event
            logger.info(
                "alarm %s %s at shop %s delivered by %s",
                event.kind.value,
                event.id,
                row.shop_id,
                self.name,
            )

    async def send_each(
        self, rows: list[OutboxRow], send: Callable[[OutboxRow], Awaitable[None]]
    ) -> None:
        """``send`` the rows one at a time, in order; on a failure rewind the unsent rest.

        ``send`` closes each row (``ack`` or ``give_up``) or raises.
        """
        for i, row in enumerate(rows):
            try:
                await send(row)
            except BaseException as exc:
                sent_upto = dict(self._sent_upto)
                for unsent in reversed(rows[i:]):
                    sent_upto[unsent.priority] = unsent.seq - 1
                self.rewind(rows[i:], repr(exc))
                # Every row handed out before this one is closed, though its ack
                # may still be on its way to disk: read each rank again from its
                # first unsent row, or those would be read as pending and sent twice.
                self._sent_upto = sent_upto
                raise

    def give_up(self, row: OutboxRow, error: str) -> None:
        """The receiver refused ``row`` for good: record why and move past it."""
        self._journal.give_up(self.name, row.seq, error)

    def rewind(self, unacked: list[OutboxRow], error: str) -> None:
        """Sent rows were not acknowledged (link lost): send them again, from the journal."""
        if unacked:
            self._journal.failed(self.name, (r.seq for r in unacked), error)
        self._sent_upto = dict.fromkeys(RANKS, 0)
        self._from_disk = True
        self._clear_live()

    def close(self) -> None:
        """Release the reading connection."""
        self._reader.close()
