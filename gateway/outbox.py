"""Each forwarder's cursor over the journal: what to send next, in journal order.

Fresh events come straight from the journal writer after commit (no disk read
on the hot path). After a restart, a reconnect or when the receiver falls far
behind, the cursor reads the journal instead until it has caught up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.journal import Journal, JournalReader, OutboxRow

LIVE_BUFFER = 2000


class OutboxCursor:
    """Hands one forwarder its unacknowledged events in order, each until acknowledged."""

    def __init__(self, journal: Journal, name: str, *, batch: int = 500) -> None:
        """Follow ``journal`` on behalf of the forwarder called ``name``."""
        self.name = name
        self._journal = journal
        self._reader = JournalReader(journal.path)
        self._batch = batch
        self._live: deque[OutboxRow] = deque()
        self._overflows = 0
        self._from_disk = True  # first catch up on whatever the journal holds
        self._sent_upto = 0
        self._wakeup = asyncio.Event()
        journal.on_commit(self._committed)

    def _committed(self, rows: list[OutboxRow], forwarder: str) -> None:
        if forwarder != self.name:
            return
        self._live.extend(rows)
        if len(self._live) > LIVE_BUFFER:
            # Too far behind to keep in memory: drop the buffer, read the journal.
            self._live.clear()
            self._overflows += 1
            self._from_disk = True
        self._wakeup.set()

    async def next_batch(self) -> list[OutboxRow]:
        """Wait for and return the next events to send, oldest first."""
        while True:
            if self._from_disk:
                overflows = self._overflows
                rows = await asyncio.to_thread(
                    self._reader.pending, self.name, after=self._sent_upto, limit=self._batch
                )
                if rows:
                    self._sent_upto = rows[-1].seq
                    return rows
                if overflows == self._overflows:
                    self._from_disk = False
                continue
            rows = []
            while self._live and len(rows) < self._batch:
                row = self._live.popleft()
                if row.seq > self._sent_upto:
                    rows.append(row)
            if rows:
                self._sent_upto = rows[-1].seq
                return rows
            self._wakeup.clear()
            await self._wakeup.wait()

    def ack(self, row: OutboxRow) -> None:
        """The receiver acknowledged ``row``: record it, one row at a time."""
        self._journal.ack(self.name, row.seq)

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
                self.rewind(rows[i:], repr(exc))
                # Every row before this one is closed, though its ack may still
                # be on its way to disk: read again from this one, or those
                # would be read as pending and sent twice.
                self._sent_upto = row.seq - 1
                raise

    def give_up(self, row: OutboxRow, error: str) -> None:
        """The receiver refused ``row`` for good: record why and move past it."""
        self._journal.give_up(self.name, row.seq, error)

    def rewind(self, unacked: list[OutboxRow], error: str) -> None:
        """Sent rows were not acknowledged (link lost): send them again, from the journal."""
        if unacked:
            self._journal.failed(self.name, (r.seq for r in unacked), error)
        self._sent_upto = 0
        self._from_disk = True
        self._live.clear()

    def close(self) -> None:
        """Release the reading connection."""
        self._reader.close()
