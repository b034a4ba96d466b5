"""Alarms first: the journal ranks each delivery, the outbox cursor drains by rank, then by seq."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.events import Event, EventClass, EventKind
from gateway.journal import Journal
from gateway.journal_reader import JournalReader, OutboxRow
from gateway.journal_schema import delivery_priority
from gateway.outbox import LIVE_BUFFER, OutboxCursor
from tests.clients import wait_until
from tests.unit.test_journal import event, open_journal, run_journal

# The journal schema as main made it before priorities (a file from the field).
OLD_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, shop_id TEXT, device_id TEXT NOT NULL,
    kind TEXT NOT NULL, class TEXT NOT NULL, received_at TEXT NOT NULL, origin_key TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_class ON events(class, seq);
CREATE TABLE deliveries (
    forwarder TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    acked_at TEXT, last_error TEXT, PRIMARY KEY (seq, forwarder)
) WITHOUT ROWID;
CREATE INDEX deliveries_pending ON deliveries(forwarder, seq) WHERE acked_at IS NULL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The README's rule, written out by hand rather than read from the code: a
# backlog drains alarms, then troubles, then status, then routine.
ALARM, TROUBLE, STATUS, ROUTINE = "alarm", "trouble", "status", "routine"
DRAIN_ORDER = (ALARM, TROUBLE, STATUS, ROUTINE)
CLASS_OF_KIND = {
    "panic": ALARM,
    "duress": ALARM,
    "silent_panic": ALARM,
    "intrusion": ALARM,
    "fire": ALARM,
    "area_alert": ALARM,
    "escalation": ALARM,
    "tamper": TROUBLE,
    "supervision_lost": TROUBLE,
    "device_fault": TROUBLE,
    "low_battery": TROUBLE,
    "ac_loss": TROUBLE,
    "action_failed": TROUBLE,
    "command_refused": TROUBLE,
    "clock_suspect": TROUBLE,
    "water_leak": TROUBLE,
    "storage_full": TROUBLE,
    "journal_damaged": TROUBLE,
    "walk_test_started": TROUBLE,
    "walk_test_ended": TROUBLE,
    "door_open": STATUS,
    "door_close": STATUS,
    "arm": STATUS,
    "disarm": STATUS,
    "restore": STATUS,
    "cancel": STATUS,
    "response": STATUS,
    "command_ack": STATUS,
    "sms": STATUS,
    "test": ROUTINE,
    "heartbeat": ROUTINE,
}
# Kinds that close an earlier event: never above status, whatever a rule asks.
FOLLOWERS = {"cancel", "restore", "response"}


def hand_rank(kind: EventKind, priority: str | None = None) -> int:
    """The drain position the README promises for ``kind`` forwarded at ``priority``."""
    own = DRAIN_ORDER.index(CLASS_OF_KIND[kind.value])
    wanted = own if priority is None else DRAIN_ORDER.index(priority)
    if kind.value in FOLLOWERS:
        return max(wanted, DRAIN_ORDER.index(STATUS))
    if CLASS_OF_KIND[kind.value] in (ALARM, TROUBLE):
        return min(wanted, own)  # an alarm never below alarm, a trouble never below trouble
    return wanted


def forwarded(kind: EventKind, priority: EventClass | None = None, shop: str = "S00001"):
    """An event as the rules hand it to the journal, with ``attrs.priority`` if a rule set one."""
    ev = event(kind, shop)
    if priority is None:
        return ev
    return ev.model_copy(update={"attrs": {**ev.attrs, "priority": priority.value}})


def append_all(journal: Journal, events: list) -> None:
    async def body() -> None:
        for ev in events:
            await journal.append(ev)
        await wait_until(lambda: journal.stats.appended == len(events), 10, "all committed")

    asyncio.run(run_journal(journal, body))


def mixed_backlog() -> list:
    """300 status and routine events of several shops, a trouble, a panic and its cancel."""
    evs = [
        forwarded(
            [EventKind.DOOR_OPEN, EventKind.DOOR_CLOSE, EventKind.TEST][i % 3], shop=f"S{i % 7}"
        )
        for i in range(300)
    ]
    evs.insert(120, forwarded(EventKind.LOW_BATTERY, shop="S3"))
    evs.insert(250, forwarded(EventKind.PANIC, shop="S5"))
    evs.insert(251, forwarded(EventKind.CANCEL, shop="S5"))
    return evs


def expected_order(evs: list) -> list[int]:
    """Seqs (1-based journal order) sorted by rank, then seq: what the cursor must hand out."""
    ranked = [(hand_rank(ev.kind), seq) for seq, ev in enumerate(evs, start=1)]
    return [seq for _, seq in sorted(ranked)]


def drain(cursor: OutboxCursor, count: int, ack: bool = True) -> list[OutboxRow]:
    async def body() -> list[OutboxRow]:
        got: list[OutboxRow] = []
        while len(got) < count:
            rows = await asyncio.wait_for(cursor.next_batch(), 5)
            got.extend(rows)
            if ack:
                for row in rows:
                    cursor.ack(row)
        return got

    return asyncio.run(body())


def test_a_backlog_on_disk_drains_alarms_first_and_by_seq_within_a_priority(tmp_path: Path):
    """After a restart the panic leads, then the trouble, then status and routine in seq order."""
    path = tmp_path / "j.db"
    evs = mixed_backlog()
    append_all(open_journal(path), evs)
    cursor = OutboxCursor(open_journal(path), "police", batch=64)
    got = drain(cursor, len(evs), ack=False)
    cursor.close()
    assert [r.seq for r in got] == expected_order(evs)
    assert [r.event.kind for r in got[:2]] == [EventKind.PANIC, EventKind.LOW_BATTERY]
    kinds = [r.event.kind for r in got]
    assert kinds.index(EventKind.CANCEL) > kinds.index(EventKind.PANIC)


def test_an_alarm_committed_mid_drain_goes_in_the_next_batch_and_nothing_repeats(tmp_path):
    """A panic journalled while the cursor is half-way through a status backlog jumps the rest."""
    path = tmp_path / "j.db"
    journal = open_journal(path)
    cursor = OutboxCursor(journal, "police", batch=100)
    got: list[OutboxRow] = []

    async def body() -> None:
        for i in range(2500):  # past the live buffer: the cursor reads the journal
            await journal.append(forwarded(EventKind.DOOR_OPEN, shop=f"S{i % 9}"))
        await wait_until(lambda: journal.stats.appended == 2500, 10, "backlog committed")
        got.extend(await cursor.next_batch())
        await journal.append(forwarded(EventKind.PANIC))
        await wait_until(lambda: journal.stats.appended == 2501, 10, "panic committed")
        while len(got) < 2501:
            rows = await asyncio.wait_for(cursor.next_batch(), 5)
            got.extend(rows)
            for row in rows:
                cursor.ack(row)

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert got[100].event.kind is EventKind.PANIC
    seqs = [r.seq for r in got]
    assert sorted(seqs) == list(range(1, 2502))
    status = [s for s in seqs if s != 2501]
    assert status == sorted(status)


def test_the_live_buffer_hands_out_an_alarm_ahead_of_buffered_status_rows(tmp_path):
    """300 status rows in memory (six batches): a later panic leads; caught up, journal order."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police", batch=50)
    got: list[OutboxRow] = []

    async def body() -> None:
        await journal.append(forwarded(EventKind.DOOR_OPEN))
        got.extend(await asyncio.wait_for(cursor.next_batch(), 5))
        waiting = asyncio.create_task(cursor.next_batch(), name="next")
        # Caught up: the cursor found nothing more on disk and waits for live rows.
        await wait_until(lambda: not cursor._from_disk, 10, "the cursor on its live path")
        evs = [forwarded(EventKind.DOOR_CLOSE) for _ in range(300)]
        for ev in [*evs, forwarded(EventKind.PANIC)]:
            await journal.append(ev)  # never suspends: one group commit, one live hand-over
        got.extend(await asyncio.wait_for(waiting, 5))
        while len(got) < 302:
            got.extend(await asyncio.wait_for(cursor.next_batch(), 5))
        # Caught up again: a door and a panic in one commit go in journal order.
        waiting = asyncio.create_task(cursor.next_batch(), name="next")
        await journal.append(forwarded(EventKind.DOOR_OPEN))
        await journal.append(forwarded(EventKind.PANIC))
        got.extend(await asyncio.wait_for(waiting, 5))

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert got[1].event.kind is EventKind.PANIC
    assert [r.seq for r in got] == [1, 302, *range(2, 302), 303, 304]


def test_a_failed_send_rewinds_each_priority_to_its_first_unsent_row(tmp_path):
    """Panic acked (ack not on disk yet), trouble fails: the next batch is the trouble and the rest."""
    path = tmp_path / "j.db"
    evs = [forwarded(EventKind.DOOR_OPEN), forwarded(EventKind.TAMPER), forwarded(EventKind.PANIC)]
    append_all(open_journal(path), evs)
    cursor = OutboxCursor(open_journal(path), "police")

    async def body() -> tuple[list[int], list[int]]:
        # The journal writer is not running: the panic's ack stays queued.
        rows = await cursor.next_batch()

        async def send(row: OutboxRow) -> None:
            if row.event.kind is EventKind.TAMPER:
                raise ConnectionResetError("cut")
            cursor.ack(row)

        with pytest.raises(ConnectionResetError):
            await cursor.send_each(rows, send)
        return [r.seq for r in rows], [r.seq for r in await cursor.next_batch()]

    first, again = asyncio.run(body())
    cursor.close()
    assert first == [3, 2, 1]
    assert again == [2, 1]


def test_a_journal_from_before_priorities_is_migrated_and_keeps_working(tmp_path):
    """Old schema file: pending rows get their rank, the index serves the query, appends work."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    evs = mixed_backlog()
    for seq, ev in enumerate(evs, start=1):
        old.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
            (
                seq,
                ev.id,
                ev.shop_id,
                ev.device_id,
                ev.kind.value,
                CLASS_OF_KIND[ev.kind.value],
                ev.received_at.isoformat(),
                None,
                ev.model_dump_json(),
            ),
        )
        acked = "2026-01-01T00:00:00+00:00" if seq % 10 == 0 and ev.kind is EventKind.TEST else None
        old.execute(
            "INSERT INTO deliveries (forwarder, seq, acked_at) VALUES ('police', ?, ?)",
            (seq, acked),
        )
    old.commit()
    old.close()

    journal = open_journal(path)
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "deliveries_pending_priority" in indexes
    assert "deliveries_pending" not in indexes
    plan = " ".join(
        str(r[3])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT d.seq, e.shop_id, e.body FROM deliveries d JOIN events e"
            " ON e.seq = d.seq WHERE d.forwarder='police' AND d.priority=2"
            " AND d.acked_at IS NULL AND d.seq>0 ORDER BY d.seq LIMIT 10"
        )
    )
    assert "deliveries_pending_priority" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    shop_plan = " ".join(
        str(r[3])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT e.seq FROM events e JOIN deliveries d ON d.seq = e.seq"
            " AND d.forwarder='police' WHERE e.shop_id='S5' AND e.seq<250 ORDER BY e.seq"
        )
    )
    assert "events_shop" in shop_plan, shop_plan

    pending_before = [
        seq
        for seq in expected_order(evs)
        if not (seq % 10 == 0 and evs[seq - 1].kind is EventKind.TEST)
    ]
    cursor = OutboxCursor(journal, "police", batch=64)
    fresh = forwarded(EventKind.PANIC, shop="S6")
    got: list[OutboxRow] = []

    async def body() -> None:
        await journal.append(fresh)
        await wait_until(lambda: journal.stats.appended == 1, 10, "the new panic committed")
        while len(got) < len(pending_before) + 1:
            rows = await asyncio.wait_for(cursor.next_batch(), 5)
            got.extend(rows)
            for row in rows:
                cursor.ack(row)
        await wait_until(lambda: journal.stats.acked == len(got), 10, "acks committed")

    asyncio.run(run_journal(journal, body))
    cursor.close()
    new_seq = len(evs) + 1
    # The two panics (old and new) lead, in seq order; then the old rows by rank.
    assert [r.seq for r in got] == [pending_before[0], new_seq, *pending_before[1:]]
    assert JournalReader(path).pending_counts() == {}


def test_every_event_kind_has_a_drain_rank_written_in_this_test():
    """A kind added to the code must be given its place in the README's drain order here."""
    assert set(CLASS_OF_KIND) == {kind.value for kind in EventKind}


@pytest.mark.parametrize("priority", [None, *DRAIN_ORDER])
def test_the_journal_ranks_every_kind_as_the_readme_orders_them(priority: str | None):
    """For each forward priority, the journal's ranks sort every kind as the hand table does."""
    kinds = list(EventKind)
    wanted = None if priority is None else EventClass(priority)
    code = {kind: delivery_priority(forwarded(kind, wanted)) for kind in kinds}
    hand = {kind: hand_rank(kind, priority) for kind in kinds}
    # The same order, not the same numbers: every pair leads, ties or trails as by hand.
    wrong = [
        (a.value, b.value)
        for a in kinds
        for b in kinds
        if (code[a] < code[b]) != (hand[a] < hand[b])
    ]
    assert wrong == []


def test_rows_an_older_gateway_wrote_after_the_migration_are_ranked_again(tmp_path):
    """A downgrade writes deliveries without a rank and brings back the old index: reopened, ranked."""
    path = tmp_path / "j.db"
    append_all(open_journal(path), [forwarded(EventKind.DOOR_OPEN)])
    older = sqlite3.connect(path)  # what the old code does on open and on append
    older.executescript(
        OLD_SCHEMA.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS").replace(
            "CREATE INDEX", "CREATE INDEX IF NOT EXISTS"
        )
    )
    panic = forwarded(EventKind.PANIC)
    older.execute(
        "INSERT INTO events (seq, id, device_id, kind, class, received_at, body)"
        " VALUES (2, ?, 'd', 'panic', 'alarm', 't', ?)",
        (panic.id, panic.model_dump_json()),
    )
    older.execute("INSERT INTO deliveries (forwarder, seq) VALUES ('police', 2)")
    older.commit()
    older.close()
    reader = JournalReader(path)
    assert [r.seq for r in reader.pending("police", after=0, limit=10)] == [2, 1]
    indexes = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "deliveries_pending" not in indexes


def test_an_alarm_never_overtakes_its_own_shops_earlier_cancel(tmp_path):
    """From memory: S2's rows up to its cancel go just before S2's panic; S1's flood waits.

    S2's door event after the cancel changes no meaning and keeps its place.
    """
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police", batch=50)
    got: list[OutboxRow] = []

    def flood() -> list[Event]:
        return [forwarded(EventKind.DOOR_CLOSE, shop="S1") for _ in range(100)]

    evs = [
        *flood(),
        forwarded(EventKind.DOOR_OPEN, shop="S2"),  # 101
        forwarded(EventKind.CANCEL, shop="S2"),  # 102
        *flood(),  # 103-202
        forwarded(EventKind.DOOR_CLOSE, shop="S2"),  # 203
        forwarded(EventKind.PANIC, shop="S2"),  # 204
    ]

    async def body() -> None:
        waiting = asyncio.create_task(cursor.next_batch(), name="next")
        await wait_until(lambda: not cursor._from_disk, 10, "the cursor on its live path")
        for ev in evs:
            await journal.append(ev)  # never suspends: one group commit, one live hand-over
        got.extend(await asyncio.wait_for(waiting, 5))
        while len(got) < len(evs):
            got.extend(await asyncio.wait_for(cursor.next_batch(), 5))

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert [r.seq for r in got] == [101, 102, 204, *range(1, 101), *range(103, 204)]


def test_a_backlog_on_disk_keeps_a_shops_cancel_before_its_panic(tmp_path):
    """After a restart the panic still leads, but only behind its own shop's earlier cancel."""
    path = tmp_path / "j.db"
    evs = [
        forwarded(EventKind.DOOR_OPEN, shop="S1"),
        forwarded(EventKind.RESTORE, shop="S2"),
        forwarded(EventKind.DOOR_OPEN, shop="S1"),
        forwarded(EventKind.INTRUSION, shop="S2"),
    ]
    append_all(open_journal(path), evs)
    cursor = OutboxCursor(open_journal(path), "police")
    got = drain(cursor, len(evs), ack=False)
    cursor.close()
    assert [r.seq for r in got] == [2, 4, 1, 3]


async def doors_then_a_cancel_and_a_panic(
    journal: Journal, cursor: OutboxCursor
) -> list[OutboxRow]:
    """On the cursor's live path: 100 doors of S1, then S2's cancel and panic; the first batch.

    The batch holds the cancel, the panic (carried ahead with it) and 30 doors.
    """
    waiting = asyncio.create_task(cursor.next_batch(), name="next")
    await wait_until(lambda: not cursor._from_disk, 10, "the cursor on its live path")
    doors = [forwarded(EventKind.DOOR_OPEN, shop="S1") for _ in range(100)]
    for ev in [
        *doors,
        forwarded(EventKind.CANCEL, shop="S2"),
        forwarded(EventKind.PANIC, shop="S2"),
    ]:
        await journal.append(ev)
    return await asyncio.wait_for(waiting, 5)


def test_a_row_sent_ahead_with_its_shops_alarm_is_not_sent_again_from_disk(tmp_path):
    """A cancel carried ahead of its rank, then an overflow sends the cursor to disk: no repeats."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police", batch=500)
    got: list[OutboxRow] = []

    async def body() -> None:
        got.extend(await doors_then_a_cancel_and_a_panic(journal, cursor))
        overflow = [forwarded(EventKind.DOOR_CLOSE, shop="S1") for _ in range(LIVE_BUFFER + 1)]
        for ev in overflow:
            await journal.append(ev)
        await wait_until(lambda: cursor._from_disk, 10, "the cursor sent to disk")
        while len(got) < 102 + len(overflow):
            got.extend(await asyncio.wait_for(cursor.next_batch(), 5))

    asyncio.run(run_journal(journal, body))
    cursor.close()
    seqs = [r.seq for r in got]
    assert seqs[:2] == [101, 102]
    assert sorted(seqs) == list(range(1, 103 + LIVE_BUFFER + 1))


def test_a_row_sent_ahead_with_its_shops_alarm_comes_again_after_a_rewind(tmp_path):
    """The link goes before the batch with a carried cancel was sent: the cancel is read again."""
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police")
    got: list[OutboxRow] = []

    async def body() -> None:
        first = await doors_then_a_cancel_and_a_panic(journal, cursor)
        assert [r.seq for r in first[:2]] == [101, 102]
        cursor.rewind([], "link lost before the batch went out")
        while len(got) < 102:
            got.extend(await asyncio.wait_for(cursor.next_batch(), 5))

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert [r.seq for r in got] == [101, 102, *range(1, 101)]


def test_a_disk_backlog_larger_than_one_read_keeps_a_shops_cancel_before_its_panic(tmp_path):
    """S2's cancel and its earlier door row lie beyond the first read: they still lead its panic."""
    path = tmp_path / "j.db"
    evs = [forwarded(EventKind.DOOR_OPEN, shop="S1") for _ in range(600)]
    evs[549] = forwarded(EventKind.DOOR_OPEN, shop="S2")  # seq 550
    evs += [forwarded(EventKind.CANCEL, shop="S2"), forwarded(EventKind.PANIC, shop="S2")]
    append_all(open_journal(path), evs)
    cursor = OutboxCursor(open_journal(path), "police", batch=500)
    got = drain(cursor, len(evs))
    cursor.close()
    assert [r.seq for r in got] == [550, 601, 602, *range(1, 550), *range(551, 601)]


def test_an_alarm_committed_while_the_cursor_reads_the_journal_is_taken_at_once(tmp_path):
    """From disk mid-backlog: the panic and its shop's cancel are taken ahead of the unread rows.

    Nothing repeats afterwards, from disk or from the buffer, though the cancel
    was taken ahead of its rank and acknowledged before the disk read reached it.
    """
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police", batch=500)
    got: list[OutboxRow] = []

    def hand_on(rows: list[OutboxRow]) -> None:
        got.extend(rows)
        for row in rows:
            cursor.ack(row)

    async def body() -> None:
        for _ in range(600):
            await journal.append(forwarded(EventKind.DOOR_OPEN, shop="S1"))
        await wait_until(lambda: journal.stats.appended == 600, 10, "the backlog committed")
        hand_on(await asyncio.wait_for(cursor.next_batch(), 5))
        assert cursor._from_disk
        await journal.append(forwarded(EventKind.CANCEL, shop="S2"))
        await journal.append(forwarded(EventKind.PANIC, shop="S2"))
        await wait_until(cursor.alarm_ready.is_set, 10, "the panic committed")
        taken = await cursor.take_alarms()
        assert [r.seq for r in taken] == [601, 602]
        hand_on(taken)
        await wait_until(lambda: journal.stats.acked == len(got), 10, "acks committed")
        while len(got) < 602:
            hand_on(await asyncio.wait_for(cursor.next_batch(), 5))
        await journal.append(forwarded(EventKind.DOOR_CLOSE, shop="S1"))
        hand_on(await asyncio.wait_for(cursor.next_batch(), 5))

    asyncio.run(run_journal(journal, body))
    cursor.close()
    assert [r.seq for r in got] == [*range(1, 501), 601, 602, *range(501, 601), 603]


def test_a_shops_lower_ranked_row_before_its_cancel_in_the_read_comes_from_disk_first(tmp_path):
    """S2's cancel is in the read, its earlier test row (routine) not yet: both lead its panic."""
    path = tmp_path / "j.db"
    evs = [
        forwarded(EventKind.DOOR_OPEN, shop="S1"),
        forwarded(EventKind.TEST, shop="S2"),
        forwarded(EventKind.DOOR_OPEN, shop="S1"),
        forwarded(EventKind.CANCEL, shop="S2"),
        forwarded(EventKind.PANIC, shop="S2"),
    ]
    append_all(open_journal(path), evs)
    cursor = OutboxCursor(open_journal(path), "police", batch=4)
    got = drain(cursor, len(evs), ack=False)
    cursor.close()
    assert [r.seq for r in got] == [2, 4, 5, 1, 3]


def test_more_alarms_than_one_read_committed_mid_backlog_are_all_taken_at_once(tmp_path):
    """From disk mid-backlog, a storm of more alarms than one read: every one is taken ahead of the routine rows.

    The first take read one batch and cleared ``alarm_ready``; the rest waited
    for the routine backlog's PUBACKs before this (a delay, not a loss).
    """
    journal = open_journal(tmp_path / "j.db")
    cursor = OutboxCursor(journal, "police", batch=10)

    async def body() -> None:
        for _ in range(30):
            await journal.append(forwarded(EventKind.DOOR_OPEN, shop="S1"))
        await wait_until(lambda: journal.stats.appended == 30, 10, "the backlog committed")
        await asyncio.wait_for(cursor.next_batch(), 5)
        assert cursor._from_disk
        for n in range(25):
            await journal.append(forwarded(EventKind.PANIC, shop=f"S{n + 2}"))
        await wait_until(lambda: journal.stats.appended == 55, 10, "the alarms committed")
        taken: list[OutboxRow] = []
        while cursor.alarm_ready.is_set():
            taken += await cursor.take_alarms()
        assert [r.seq for r in taken] == list(range(31, 56))

    asyncio.run(run_journal(journal, body))
    cursor.close()
