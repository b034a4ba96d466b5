"""Each forwarder's cursor over the journal: what to send next, alarms first.

Fresh events come straight from the journal writer after commit (no disk read
on the hot path). After a restart, a reconnect or when the receiver falls far
behind, the cursor reads the journal instead until it has caught up. A
backlog, on disk or in memory, drains highest priority first and in journal
order within a priority (decision 42); a caught-up cursor keeps journal order.
An alarm overtakes other shops' rows only: its own shop's earlier rows go out
before it, in their order (decision 87).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.events import ORDER_BOUND_KINDS, EventClass
from gateway.journal import Journal
from gateway.journal_reader import JournalReader, OutboxRow
from gateway.journal_schema import PRIORITY_RANK, RANKS

logger = logging.getLogger(__name__)

LIVE_BUFFER = 2000
# Rows handed out at once from memory: a forwarder works through a batch in order,
# so a fresh alarm waits for at most this many routine rows handed out before it.
LIVE_BATCH = 32
ALARM_RANK = PRIORITY_RANK[EventClass.ALARM]
ORDER_BOUND_VALUES = frozenset(kind.value for kind in ORDER_BOUND_KINDS)
KIND_FIELD = '"kind":"'


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
        # Rows handed out ahead of their rank's watermark (with their shop's alarm):
        # seq -> rank, until the watermark passes them.
        self._carried: dict[int, int] = {}
        self._wakeup = asyncio.Event()
        self.alarm_ready = asyncio.Event()
        """Set when an alarm is committed; ``take_alarms`` clears it."""
        journal.on_commit(self._committed)

    def _committed(self, rows: list[OutboxRow], forwarder: str) -> None:
        if forwarder != self.name:
            return
        for row in rows:
            self._live[row.priority].append(row)
            if row.priority == ALARM_RANK:
                self.alarm_ready.set()
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
        """Wait for and return the next events to send: highest priority first, then oldest.

        A shop's rows older than its alarm come before that alarm, in journal order.
        """
        while True:
            if self._from_disk:
                if rows := await self._read_disk():
                    return await self._in_shop_order(rows)
                continue
            # Caught up (everything buffered fits one batch): journal order, as
            # committed. A backlog in memory: highest priority first.
            caught_up = self._live_count <= LIVE_BATCH
            rows = []
            for rank in RANKS:
                queue = self._live[rank]
                while queue and len(rows) < LIVE_BATCH:
                    row = queue.popleft()
                    self._live_count -= 1
                    # Rows the disk read already handed out come again here: skip them.
                    if self._waiting(row):
                        rows.append(row)
            if caught_up:
                rows.sort(key=lambda r: r.seq)
            if rows:
                self._handed_out(rows)
                return rows if caught_up else await self._in_shop_order(rows)
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _read_disk(self) -> list[OutboxRow]:
        """The next batch from disk; none when caught up (or all handed out already)."""
        overflows = self._overflows
        read = await asyncio.to_thread(
            self._reader.pending, self.name, after=dict(self._sent_upto), limit=self._batch
        )
        if not read and overflows == self._overflows:
            self._from_disk = False
        rows = [row for row in read if row.seq not in self._carried]
        self._handed_out(read)
        return rows

    async def take_alarms(self) -> list[OutboxRow]:
        """Alarms committed since the last batch, each after its shop's earlier rows.

        For a forwarder still working through a batch: these go ahead of its
        rest. Read from the buffer while caught up on the journal, else from the
        journal (only when ``alarm_ready`` says an alarm came).
        """
        alarm_came = self.alarm_ready.is_set()
        self.alarm_ready.clear()
        if self._from_disk:
            if not alarm_came:
                return []
            rows = await asyncio.to_thread(
                self._reader.pending,
                self.name,
                after=dict(self._sent_upto),
                limit=self._batch,
                ranks=(ALARM_RANK,),
            )
            if len(rows) == self._batch:
                self.alarm_ready.set()  # more alarms on disk than one read: ask again
        else:
            queue = self._live[ALARM_RANK]
            rows = [row for row in queue if self._waiting(row)]
            self._live_count -= len(queue)
            queue.clear()
        if not rows:
            return []
        self._handed_out(rows)
        return await self._in_shop_order(rows)

    def _waiting(self, row: OutboxRow) -> bool:
        """Whether ``row`` is still to be handed out."""
        return row.seq > self._sent_upto[row.priority] and row.seq not in self._carried

    async def _in_shop_order(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """``rows`` (alarms first) with no alarm ahead of its shop's earlier order-bound rows.

        A shop's rows up to its last order-bound one (cancel, restore, disarm...)
        before its alarm go first, taken from ``rows`` and from the rows still
        waiting: in the buffer while caught up, else in the journal (decision 87).
        """
        latest_alarm: dict[str, int] = {}
        for row in rows:
            if row.priority == ALARM_RANK and row.shop_id is not None:
                latest_alarm[row.shop_id] = row.seq
        if not latest_alarm:
            return rows
        bound_upto = _last_bound_before(latest_alarm, rows)
        if self._from_disk:
            waiting = await asyncio.to_thread(self._waiting_on_disk, latest_alarm, bound_upto)
        else:
            waiting = [row for rank in RANKS[1:] for row in self._live[rank] if self._waiting(row)]
        bound_upto.update(
            (shop, max(seq, bound_upto.get(shop, 0)))
            for shop, seq in _last_bound_before(latest_alarm, waiting).items()
        )
        if not bound_upto:
            return rows

        def earlier(row: OutboxRow) -> bool:
            return row.priority != ALARM_RANK and row.seq <= bound_upto.get(row.shop_id or "", 0)

        carried = [row for row in waiting if earlier(row)]
        for row in carried:
            self._carried[row.seq] = row.priority
        if not self._from_disk:
            self._drop_buffered(earlier)
        return _each_alarm_after(rows, [row for row in rows if earlier(row)] + carried)

    def _waiting_on_disk(
        self, latest_alarm: dict[str, int], bound_upto: dict[str, int]
    ) -> list[OutboxRow]:
        """Per shop with an alarm: its waiting rows on disk up to its last order-bound one.

        That is the last one before its alarm, on disk or in ``bound_upto`` (the
        batch's). Runs in a worker thread while the forwarder awaits it: the
        cursor's state holds still meanwhile.
        """
        # Every rank has handed out every row up to here: no need to read them.
        after = min(self._sent_upto[rank] for rank in RANKS[1:])
        waiting: list[OutboxRow] = []
        for shop, alarm in latest_alarm.items():
            bound = self._reader.shop_pending(
                self.name, shop, after=after, before=alarm, kinds=ORDER_BOUND_VALUES
            )
            upto = max([bound_upto.get(shop, 0), *(r.seq for r in bound if self._waiting(r))])
            if upto:
                shop_rows = self._reader.shop_pending(self.name, shop, after=after, before=upto + 1)
                waiting += (r for r in shop_rows if r.priority != ALARM_RANK and self._waiting(r))
        return waiting

    def _drop_buffered(self, earlier: Callable[[OutboxRow], bool]) -> None:
        """Take the ``earlier`` rows, carried with their shop's alarm, out of the buffer."""
        for rank in RANKS[1:]:
            queue = self._live[rank]
            if any(earlier(row) for row in queue):
                kept = deque(row for row in queue if not earlier(row))
                self._live_count -= len(queue) - len(kept)
                self._live[rank] = kept

    def _handed_out(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            self._sent_upto[row.priority] = row.seq
        if self._carried:
            self._carried = {
                seq: rank for seq, rank in self._carried.items() if seq > self._sent_upto[rank]
            }

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
                for unsent in rows[i:]:
                    rank = unsent.priority
                    sent_upto[rank] = min(sent_upto[rank], unsent.seq - 1)
                unsent_seqs = {unsent.seq for unsent in rows[i:]}
                carried = {s: r for s, r in self._carried.items() if s not in unsent_seqs}
                self.rewind(rows[i:], repr(exc))
                # Every row handed out before this one is closed, though its ack
                # may still be on its way to disk: read each rank again from its
                # first unsent row, and skip the closed rows sent ahead of their
                # rank, or those would be read as pending and sent twice.
                self._sent_upto = sent_upto
                self._carried = carried
                raise

    def give_up(self, row: OutboxRow, error: str) -> None:
        """The receiver refused ``row`` for good: record why and move past it."""
        self._journal.give_up(self.name, row.seq, error)

    def rewind(self, unacked: list[OutboxRow], error: str) -> None:
        """Sent rows were not acknowledged (link lost): send them again, from the journal."""
        if unacked:
            self._journal.failed(self.name, (r.seq for r in unacked), error)
        # Rows sent ahead of their rank may be unsent still: read them all again.
        self._carried = {}
        self._sent_upto = dict.fromkeys(RANKS, 0)
        self._from_disk = True
        self._clear_live()

    def close(self) -> None:
        """Release the reading connection."""
        self._reader.close()


def _each_alarm_after(rows: list[OutboxRow], earlier: list[OutboxRow]) -> list[OutboxRow]:
    """``rows`` with the ``earlier`` rows, in journal order, each just ahead of the next alarm."""
    before = sorted(earlier, key=lambda r: r.seq)
    ordered: list[OutboxRow] = []
    for alarm in (row for row in rows if row.priority == ALARM_RANK):
        while before and before[0].seq < alarm.seq:
            ordered.append(before.pop(0))
        ordered.append(alarm)
    taken = {row.seq for row in ordered}
    ordered.extend(row for row in rows if row.seq not in taken)
    return ordered


def _last_bound_before(latest_alarm: dict[str, int], rows: list[OutboxRow]) -> dict[str, int]:
    """Per shop in ``latest_alarm``: its last order-bound row's seq in ``rows`` before its alarm."""
    bound_upto: dict[str, int] = {}
    for row in rows:
        shop = row.shop_id
        if shop is None or row.priority == ALARM_RANK or row.seq >= latest_alarm.get(shop, 0):
            continue
        if order_bound(row):
            bound_upto[shop] = max(row.seq, bound_upto.get(shop, 0))
    return bound_upto


def order_bound(row: OutboxRow) -> bool:
    """Whether ``row``'s kind is one a later alarm of its shop must not overtake.

    Read off the journalled JSON without parsing it: ``kind`` comes before
    ``attrs`` (the only free-form object) and a JSON string cannot hold ``"``
    unescaped, so the first ``"kind":"`` is the event's own.
    """
    start = row.body.index(KIND_FIELD) + len(KIND_FIELD)
    return row.body[start : row.body.index('"', start)] in ORDER_BOUND_VALUES
