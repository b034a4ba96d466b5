"""OutboxCursor.next_batch(take=...): rows committed while the forwarder waits go to it at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.events import EventKind
from gateway.journal_reader import OutboxRow
from gateway.outbox import OutboxCursor
from tests.clients import wait_until
from tests.unit.test_journal import event, open_journal, run_journal


def test_rows_committed_while_waiting_are_taken_in_journal_order_and_never_returned(
    tmp_path: Path,
) -> None:
    """One commit's rows reach ``take`` in seq order, in the commit's callback; none come back."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police")
    taken: list[list[int]] = []

    def take(rows: list[OutboxRow]) -> bool:
        taken.append([row.seq for row in rows])
        return True

    async def body() -> None:
        waiting = asyncio.create_task(cursor.next_batch(take=take))
        await asyncio.sleep(0.2)  # caught up on the (empty) journal, now waiting
        for kind in (EventKind.DOOR_OPEN, EventKind.PANIC, EventKind.DOOR_CLOSE):
            await journal.append(event(kind))  # one loop turn: one commit
        await wait_until(lambda: journal.stats.appended == 3, 10, "three events committed")
        assert not waiting.done()
        waiting.cancel()
        # Taken means handed out: the next batch does not return them again.
        await journal.append(event(EventKind.DOOR_OPEN))
        assert [row.seq for row in await asyncio.wait_for(cursor.next_batch(), 10)] == [4]

    asyncio.run(run_journal(journal, body))
    assert taken == [[1, 2, 3]]
    cursor.close()


def test_rows_take_refuses_are_returned_by_next_batch(tmp_path: Path) -> None:
    """A forwarder without room for them takes none: ``next_batch`` returns them, in order."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police")
    offered: list[list[int]] = []
    returned: list[int] = []

    def no_room(rows: list[OutboxRow]) -> bool:
        offered.append([row.seq for row in rows])
        return False

    async def body() -> None:
        waiting = asyncio.create_task(cursor.next_batch(take=no_room))
        await asyncio.sleep(0.2)
        await journal.append(event(EventKind.DOOR_OPEN))
        await journal.append(event(EventKind.DOOR_CLOSE))
        returned.extend(row.seq for row in await asyncio.wait_for(waiting, 10))

    asyncio.run(run_journal(journal, body))
    assert offered == [[1, 2]]
    assert returned == [1, 2]
    cursor.close()


def test_what_take_raises_is_raised_by_next_batch(tmp_path: Path) -> None:
    """A failure in the commit's callback ends the forwarder's wait, not the journal's callbacks."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police")
    durable: list[int] = []

    def broken(rows: list[OutboxRow]) -> bool:
        raise RuntimeError(f"cannot send {len(rows)} rows")

    async def body() -> None:
        waiting = asyncio.create_task(cursor.next_batch(take=broken))
        await asyncio.sleep(0.2)
        await journal.append(event(EventKind.DOOR_OPEN), on_durable=lambda: durable.append(1))
        with pytest.raises(RuntimeError, match="cannot send 1 rows"):
            await asyncio.wait_for(waiting, 10)

    asyncio.run(run_journal(journal, body))
    assert durable == [1]
    cursor.close()
