"""The journal on a real SQLite file: group commit, per-event acks, repeats, the size cap."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from gateway.events import Event, EventKind
from gateway.journal import Journal
from gateway.journal_reader import JournalReader
from gateway.outbox import OutboxCursor
from tests.clients import wait_until
from tests.events import make_event


def event(kind: EventKind = EventKind.PANIC, shop: str = "S00001") -> Event:
    return make_event(kind, shop=shop, pad="x" * 400)


def open_journal(path: Path, **kw: object) -> Journal:
    return Journal(
        path,
        route=lambda e: [] if e.kind is EventKind.HEARTBEAT else ["police"],
        max_size_bytes=kw.pop("max_size_bytes", 10**9),
    )  # type: ignore[arg-type]


async def run_journal(journal: Journal, body) -> None:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(journal.run(), name="journal")
        await asyncio.sleep(0)  # the writer is running, as in a gateway
        try:
            await body()
        finally:
            task.cancel()


def test_appends_that_arrive_together_share_a_commit(tmp_path):
    """1,000 events queued at once are durable in far fewer than 1,000 transactions."""
    journal = open_journal(tmp_path / "j.db")
    durable: list[int] = []

    async def body() -> None:
        for i in range(1000):
            await journal.append(event(), on_durable=lambda i=i: durable.append(i))
        while len(durable) < 1000:
            await asyncio.sleep(0.01)

    asyncio.run(run_journal(journal, body))
    assert durable == list(range(1000))
    assert journal.stats.commits < 100
    count = sqlite3.connect(tmp_path / "j.db").execute("SELECT COUNT(*) FROM events").fetchone()
    assert count == (1000,)


def test_queued_events_are_flushed_when_the_writer_is_cancelled(tmp_path):
    """Cancelling the writer (SIGTERM) commits what was still queued."""
    journal = open_journal(tmp_path / "j.db")

    async def body() -> None:
        for _ in range(50):
            await journal.append(event())

    asyncio.run(run_journal(journal, body))
    count = sqlite3.connect(tmp_path / "j.db").execute("SELECT COUNT(*) FROM events").fetchone()
    assert count == (50,)


def test_a_repeated_origin_key_is_stored_once_and_acknowledged_after_the_first(tmp_path):
    """A broker redelivery is not journalled again; its ack waits for the first copy, even after restart."""
    acks: list[str] = []
    journal = open_journal(tmp_path / "j.db")

    async def body() -> None:
        assert journal.claim("k1", lambda: acks.append("first"))
        assert not journal.claim("k1", lambda: acks.append("repeat"))
        assert acks == []  # the first copy is not durable yet
        await journal.append(event(), origin_key="k1", on_durable=lambda: acks.append("first"))
        while len(acks) < 2:
            await asyncio.sleep(0.01)

    asyncio.run(run_journal(journal, body))
    assert sorted(acks) == ["first", "repeat"]
    reopened = open_journal(tmp_path / "j.db")
    assert not reopened.claim("k1", lambda: acks.append("after-restart"))
    assert acks[-1] == "after-restart"


def test_acks_are_per_event_and_unacked_events_are_sent_again_after_restart(tmp_path):
    """Acking events 1 and 3 of 4 leaves exactly 2 and 4 pending for the next run, in order."""
    path = tmp_path / "j.db"
    journal = open_journal(path)
    cursor = OutboxCursor(journal, "police")
    sent: list[int] = []

    async def body() -> None:
        for _ in range(4):
            await journal.append(event())
        rows = await cursor.next_batch()
        sent.extend(r.seq for r in rows)
        cursor.ack(rows[0])
        cursor.ack(rows[2])

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert sent == [1, 2, 3, 4]
    reader = JournalReader(path)
    assert [r.seq for r in reader.pending("police", after=0, limit=10)] == [2, 4]


def test_heartbeats_are_journalled_but_not_routed_to_forwarders(tmp_path):
    """A heartbeat feeds supervision; it is never queued for the police."""
    journal = open_journal(tmp_path / "j.db")

    async def body() -> None:
        await journal.append(event(EventKind.HEARTBEAT))
        await journal.append(event(EventKind.PANIC))

    asyncio.run(run_journal(journal, body))
    reader = JournalReader(tmp_path / "j.db")
    assert [r.event.kind for r in reader.pending("police", after=0, limit=10)] == [EventKind.PANIC]


def test_cursor_falls_back_to_the_journal_when_far_behind(tmp_path):
    """A cursor that misses more live rows than it buffers still yields every row, in order, once."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police", batch=300)
    seen: list[int] = []

    async def body() -> None:
        for _ in range(5000):
            await journal.append(event(EventKind.TEST))
        while len(seen) < 5000:
            rows = await asyncio.wait_for(cursor.next_batch(), 5)
            seen.extend(r.seq for r in rows)

    asyncio.run(run_journal(journal, body))
    assert seen == list(range(1, 5001))


# The journal the cap tests start from: (name, kind, delivered?) in journal order.
# Heartbeats are never routed, so nothing waits for them.
CAP_RECORDS = [
    *[(f"H{n}", EventKind.HEARTBEAT, False) for n in range(1, 201)],
    ("T1", EventKind.TEST, True),
    ("T2", EventKind.TEST, False),
    ("D1", EventKind.DOOR_OPEN, True),
    ("D2", EventKind.DOOR_OPEN, True),
    ("D3", EventKind.DOOR_OPEN, False),
    ("B1", EventKind.LOW_BATTERY, True),
    ("B2", EventKind.LOW_BATTERY, False),
    ("P1", EventKind.PANIC, True),
    ("P2", EventKind.PANIC, False),
]


def fill_then_cap(path: Path, max_size_bytes: int) -> Journal:
    """Journal ``CAP_RECORDS`` uncapped, reopen under ``max_size_bytes``, append one heartbeat.

    Everything goes through a running journal: appends, acknowledgements, and the
    eviction the last commit sets off. Event ids are the records' names.
    """

    def journal_of(cap: int) -> Journal:
        return open_journal(path, max_size_bytes=cap)

    async def fill(journal: Journal) -> None:
        for name, kind, _ in CAP_RECORDS:
            await journal.append(make_event(kind, event_id=name, pad="x" * 400))
        await wait_until(lambda: journal.stats.appended == len(CAP_RECORDS), 10, "appended")
        delivered = [seq for seq, (_, _, done) in enumerate(CAP_RECORDS, 1) if done]
        for seq in delivered:
            journal.ack("police", seq)
        await wait_until(lambda: journal.stats.acked == len(delivered), 10, "acked")

    uncapped = journal_of(10**9)
    asyncio.run(run_journal(uncapped, lambda: fill(uncapped)))
    capped = journal_of(max_size_bytes)

    async def one_more() -> None:
        await capped.append(make_event(EventKind.HEARTBEAT, event_id="H201", pad="x" * 400))
        await wait_until(lambda: capped.stats.appended == 1, 10, "the last heartbeat")

    asyncio.run(run_journal(capped, one_more))
    return capped


def survivors(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT id FROM events ORDER BY seq")]


def on_disk(path: Path) -> int:
    """The journal's bytes on disk: the database (pages in use) and its WAL."""
    with sqlite3.connect(path) as db:
        pages, free, size = (
            db.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
    wal = path.with_name(path.name + "-wal")
    return (pages - free) * size + (wal.stat().st_size if wal.exists() else 0)


def test_past_the_cap_heartbeats_and_delivered_tests_go_first(tmp_path):
    """A cap the non-routine records fit under: only delivered routine records are evicted."""
    path = tmp_path / "j.db"
    journal = fill_then_cap(path, max_size_bytes=100_000)
    kept = survivors(path)
    # Delivered routine records in journal order (H201 came last, after the reopening).
    routine = [f"H{n}" for n in range(1, 201)] + ["T1", "H201"]
    kept_routine = [name for name in kept if name in routine]
    assert kept_routine == routine[len(routine) - len(kept_routine) :]  # the oldest went
    assert len(kept_routine) < len(routine) / 2
    assert [name for name in kept if name not in routine] == [
        "T2",
        "D1",
        "D2",
        "D3",
        "B1",
        "B2",
        "P1",
        "P2",
    ]
    assert journal.stats.evicted == len(routine) - len(kept_routine)
    assert not journal.stats.over_cap
    assert on_disk(path) <= 100_000


def test_past_the_cap_delivered_status_and_troubles_go_next_alarms_and_undelivered_never(
    tmp_path,
):
    """A cap nothing fits under: every tier is evicted in turn; alarms and undelivered stay."""
    path = tmp_path / "j.db"
    journal = fill_then_cap(path, max_size_bytes=1)
    assert survivors(path) == ["T2", "D3", "B2", "P1", "P2"]
    assert journal.stats.evicted == 205  # H1-H201, T1, D1, D2, B1
    assert journal.stats.over_cap  # what the status warning says


def test_appends_wait_when_the_writer_is_backed_up_but_acks_never_do(tmp_path):
    """With a queue of 10, the 11th append waits for a commit; acks are queued at once meanwhile."""
    journal = Journal(
        tmp_path / "j.db", route=lambda _e: ["police"], max_size_bytes=10**9, queue_size=10
    )

    async def fill() -> None:
        for _ in range(11):
            await journal.append(event())

    async def scenario() -> None:
        filling = asyncio.ensure_future(fill())
        await wait_until(lambda: journal.queued == 10, 5, "ten appends queued")
        assert not filling.done()  # the 11th append waits: no writer is running yet
        for seq in range(1, 101):
            journal.ack("police", seq)  # never raises, never waits
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            await asyncio.wait_for(filling, 5)
            writer.cancel()

    asyncio.run(scenario())
    count = sqlite3.connect(tmp_path / "j.db").execute("SELECT COUNT(*) FROM events").fetchone()
    assert count == (11,)


def test_a_pending_read_never_sees_a_restore_without_the_alarm_committed_before_it(tmp_path):
    """A commit that lands between the rank queries of one read is seen whole or not at all.

    Otherwise the read hands out a restore (status rank) and not the panic (alarm
    rank) committed before it, and the DC-09 centre gets the restore first: the
    flake of test_dc09_pysiaalarm (the restore sent before the panic).
    """
    journal = open_journal(tmp_path / "j.db")
    reader = JournalReader(journal.path)
    alarms_read = threading.Event()
    committed = threading.Event()
    statements = 0

    def between_ranks(_sql: str) -> None:
        nonlocal statements
        statements += 1
        if statements == 2:  # the alarm rank is read; the next ranks are not yet
            alarms_read.set()
            committed.wait(10)

    reader._conn.set_trace_callback(between_ranks)

    async def body() -> None:
        read = asyncio.create_task(asyncio.to_thread(reader.pending, "police", after=0, limit=10))
        await asyncio.to_thread(alarms_read.wait, 10)
        durable = asyncio.Event()
        await journal.append(event(EventKind.PANIC))
        await journal.append(event(EventKind.RESTORE), on_durable=durable.set)
        await durable.wait()
        committed.set()
        rows = await read
        assert [r.seq for r in rows] in ([], [1, 2])

    try:
        asyncio.run(run_journal(journal, body))
    finally:
        reader.close()


RACE_CLOSE = """
import sqlite3, sys, threading
from pathlib import Path
from gateway.journal_reader import JournalReader

for _ in range(200):
    reader = JournalReader(Path(sys.argv[1]))
    started = threading.Event()

    def read() -> None:
        started.set()
        try:
            while True:
                reader.pending("police", after=0, limit=3000)
        except sqlite3.ProgrammingError:
            pass  # closed between two reads: what a closed reader should say

    thread = threading.Thread(target=read)
    thread.start()
    started.wait()
    reader.close()
    thread.join()
"""


def test_closing_a_reader_while_a_worker_thread_reads_is_safe(tmp_path):
    """A cursor closed at shutdown while its read still runs in a worker thread waits for it (was a segfault)."""
    journal = open_journal(tmp_path / "j.db")

    async def fill() -> None:
        await asyncio.gather(*(journal.append(event()) for _ in range(3000)))

    asyncio.run(run_journal(journal, fill))
    journal.close()
    # In a child process: without the lock SQLite crashes the whole interpreter.
    done = subprocess.run(
        [sys.executable, "-c", RACE_CLOSE, str(tmp_path / "j.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


def test_an_ack_shares_the_next_events_commit(tmp_path):
    """One event at a time, each acked before the next comes: one commit per event, not two."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police")

    async def body() -> None:
        for _ in range(20):
            durable = asyncio.Event()
            await journal.append(event(), on_durable=durable.set)
            await durable.wait()
            [row] = await cursor.next_batch()
            cursor.ack(row)
            await asyncio.sleep(0.01)  # the next event comes later, as at 100 events/s
        await wait_until(lambda: journal.stats.acked == 20, 10, "the last ack committed")

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert journal.stats.commits == 21  # 19 acks rode with the next event, the last alone
    reader = JournalReader(tmp_path / "j.db")
    assert reader.pending("police", after=0, limit=100) == []


def test_an_ack_with_no_event_after_it_is_committed_on_its_own_soon(tmp_path):
    """Traffic stops after an ack: it reaches the disk within the linger, not at shutdown."""
    path = tmp_path / "j.db"
    journal = open_journal(path)

    def acked_on_disk() -> int:
        with sqlite3.connect(path) as db:
            return db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE acked_at IS NOT NULL"
            ).fetchone()[0]

    async def body() -> None:
        await journal.append(event())
        await wait_until(lambda: journal.stats.appended == 1, 10, "the event committed")
        journal.ack("police", 1)
        await wait_until(lambda: acked_on_disk() == 1, 10, "the ack on disk")

    asyncio.run(run_journal(journal, body))


def test_a_failed_delivery_commits_the_acks_held_before_it_at_once(tmp_path):
    """A link lost: the cursor reads the journal next, and finds the rows acked before closed."""
    path = tmp_path / "j.db"
    journal = open_journal(path)
    cursor = OutboxCursor(journal, "police")
    pending: list[list[int]] = []

    async def body() -> None:
        for _ in range(3):
            await journal.append(event())
        rows = await cursor.next_batch()
        cursor.ack(rows[0])
        commits = journal.stats.commits
        cursor.rewind(rows[1:], "link lost")
        await wait_until(lambda: journal.stats.commits > commits, 10, "the failure committed")
        pending.append([r.seq for r in await cursor.next_batch()])

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert pending == [[2, 3]]
