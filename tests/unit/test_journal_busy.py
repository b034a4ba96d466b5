"""Another process holds the journal's write lock past SQLite's busy timeout: the writer waits."""

from __future__ import annotations

import asyncio
import sqlite3

from gateway.events import EventKind
from gateway.journal import Journal
from gateway.journal_schema import BUSY_TIMEOUT_MS
from tests.events import make_event

HELD_S = BUSY_TIMEOUT_MS / 1000 + 1.5


def test_a_lock_held_past_the_busy_timeout_delays_the_write_and_ends_nothing(tmp_path):
    """An installer's sqlite3 shell in a transaction: the panic is journalled once it ends."""
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, route=lambda _e: ["police"], max_size_bytes=10**9)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    async def scenario() -> None:
        durable = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            await journal.append(make_event(EventKind.PANIC, shop="S00011"), on_durable=durable.set)
            await asyncio.sleep(HELD_S)  # the fault itself: the lock stays held this long
            assert not writer.done(), "the journal writer ended while the lock was held"
            assert not durable.is_set()
            locker.execute("ROLLBACK")
            await asyncio.wait_for(durable.wait(), 10)
            writer.cancel()

    asyncio.run(scenario())
    journal.close()
    locker.close()
    [[panics]] = sqlite3.connect(path).execute("SELECT count(*) FROM events WHERE kind='panic'")
    assert panics == 1
