"""Journal.give_up: a delivery the receiver refused for good leaves the outbox, with its reason."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.journal_reader import JournalReader
from tests.clients import wait_until
from tests.unit.test_journal import event, open_journal, run_journal


def test_given_up_delivery_leaves_the_outbox_with_its_reason(tmp_path: Path) -> None:
    """The refused event is no longer pending, records why; the next one still waits for its ACK."""
    journal = open_journal(tmp_path / "j.db")

    async def body() -> None:
        await journal.append(event())
        await journal.append(event())
        await wait_until(lambda: journal.stats.appended == 2, 10, "both events committed")
        commits = journal.stats.commits
        journal.give_up("police", 1, "HTTP 422: unknown shop")
        await wait_until(lambda: journal.stats.commits > commits, 10, "the give-up committed")

    asyncio.run(run_journal(journal, body))
    reader = JournalReader(tmp_path / "j.db")
    assert [r.seq for r in reader.pending("police", after=0, limit=10)] == [2]
    assert reader.given_up_counts() == {"police": 1}
    assert reader.pending_counts() == {"police": 1}
    reader.close()
    rows = (
        sqlite3.connect(tmp_path / "j.db")
        .execute(
            "SELECT seq, acked_at IS NOT NULL, attempts, last_error FROM deliveries ORDER BY seq"
        )
        .fetchall()
    )
    assert rows == [(1, 1, 1, "given up: HTTP 422: unknown shop"), (2, 0, 0, None)]
