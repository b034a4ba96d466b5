"""The check on open: bounded in time, unless damage found at run time asked for a full one."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from gateway import journal_repair
from gateway.events import EventKind
from gateway.journal import Journal
from gateway.journal_repair import integrity_problem, mark_for_full_check, repair
from tests.clients import wait_until
from tests.events import make_event

PAGE = 4096


def written_journal(path) -> None:
    """A journal of 3,000 events (about 1.5 MB), closed, its WAL checkpointed away."""
    journal = Journal(path, route=lambda _e: ["police"], max_size_bytes=10**9)

    async def fill() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            for _ in range(3000):
                await journal.append(make_event(EventKind.DOOR_OPEN, pad="x" * 400))
            await wait_until(lambda: journal.stats.appended == 3000, 30, "3,000 appended")
            writer.cancel()

    asyncio.run(fill())


def garble_near_the_end(path) -> None:
    data = path.read_bytes()
    at = (len(data) // PAGE - 3) * PAGE
    path.write_bytes(data[:at] + os.urandom(2 * PAGE) + data[at + 2 * PAGE :])


def test_a_check_cut_short_finds_nothing_and_a_marked_journal_is_checked_fully(
    tmp_path, monkeypatch
):
    """With no time at all, damage near the end goes unseen, until a full check is asked for."""
    path = tmp_path / "journal.sqlite3"
    written_journal(path)
    garble_near_the_end(path)
    assert integrity_problem(path, time_limit_s=None) is not None
    monkeypatch.setattr(journal_repair, "QUICK_CHECK_S", 0.0)
    assert integrity_problem(path, time_limit_s=0.0) is None
    assert repair(path, route=lambda _e: ["police"]) is None  # the bounded check ran out

    mark_for_full_check(path)
    damage = repair(path, route=lambda _e: ["police"])
    assert damage is not None
    assert damage.moved_to.exists()
    assert not path.with_name("journal.sqlite3.check-fully").exists()
    with sqlite3.connect(path) as db:
        [(salvaged,)] = db.execute("SELECT COUNT(*) FROM events").fetchall()
    assert 0 < salvaged == damage.salvaged <= 3000  # what the damaged pages held is lost
