"""OutboxCursor.send_each: after a failed send, only the rows from the failed one are sent again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.journal_reader import OutboxRow
from gateway.outbox import OutboxCursor
from tests.clients import wait_until
from tests.unit.test_journal import event, open_journal, run_journal


def test_a_failure_resends_from_the_failed_row_not_the_acked_ones(tmp_path: Path) -> None:
    """Row 1 acked (its ack not yet on disk), row 2 fails: the next batch starts at row 2."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police")

    async def append() -> None:
        for _ in range(3):
            await journal.append(event())
        await wait_until(lambda: journal.stats.appended == 3, 10, "three events committed")

    asyncio.run(run_journal(journal, append))

    async def send_two() -> list[int]:
        # The journal writer is not running: the ack of row 1 stays queued.
        rows = await cursor.next_batch()

        async def send(row: OutboxRow) -> None:
            if row.seq == 2:
                raise ConnectionResetError("cut")
            cursor.ack(row)

        with pytest.raises(ConnectionResetError):
            await cursor.send_each(rows, send)
        return [r.seq for r in await cursor.next_batch()]

    assert asyncio.run(send_two()) == [2, 3]
    cursor.close()
