"""The journal's database: its tables, the durable connection, and each delivery's drain rank.

Tables: ``events`` (one row per event, ``seq`` is journal order) and
``deliveries`` (one row per event and forwarder; ``acked_at`` is set one row at
a time when that receiver acknowledges that event, never by range; ``priority``
is the rank the outbox drains it by, alarms first). Journals made before
priorities are migrated when opened (decision 42); the ``events(shop_id, seq)``
index, for a shop's rows that must go before its alarm (decision 87), is made
on the first open of a journal without it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from gateway.errors import JournalError
from gateway.events import EVENT_CLASS, Event, EventClass, EventKind

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    shop_id TEXT,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    class TEXT NOT NULL,
    received_at TEXT NOT NULL,
    origin_key TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_class ON events(class, seq);
CREATE INDEX IF NOT EXISTS events_shop ON events(shop_id, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    forwarder TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    acked_at TEXT,
    last_error TEXT,
    priority INTEGER NOT NULL DEFAULT 2,
    PRIMARY KEY (seq, forwarder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_state (
    shop_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    driver TEXT NOT NULL,
    last_seen REAL,
    battery_v REAL,
    fault TEXT,
    PRIMARY KEY (shop_id, device_id)
) WITHOUT ROWID;
"""

# The pending-row index, made by _migrate_priority (older journals lack the column).
PENDING_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_pending_priority ON deliveries(forwarder, priority, seq)"
    " WHERE acked_at IS NULL"
)

# Outbox drain order: a lower rank drains first (decision 42).
PRIORITY_RANK: dict[EventClass, int] = {
    EventClass.ALARM: 0,
    EventClass.TROUBLE: 1,
    EventClass.STATUS: 2,
    EventClass.ROUTINE: 3,
}
RANKS = tuple(sorted(PRIORITY_RANK.values()))
# Kinds that close an earlier event (an alarm's cancel, a fault's restore, a
# shop's answer): never ranked above status, so they never overtake what they close.
FOLLOWER_KINDS = frozenset({EventKind.RESTORE, EventKind.CANCEL, EventKind.RESPONSE})
_FOLLOWER_RANK = PRIORITY_RANK[EventClass.STATUS]
PRIORITIES = frozenset(c.value for c in EventClass)


def delivery_priority(event: Event) -> int:
    """The drain rank of ``event``: the rules' forward priority (``attrs.priority``) or its class.

    An alarm or trouble is never ranked below its class, and a follower kind
    (restore, cancel, response) never above status, so whatever the rules say a
    follower cannot overtake the alarm or trouble it closes (decision 42).
    """
    return _rank(event.kind, event.attrs.get("priority"))


def _rank(kind: EventKind, priority: object) -> int:
    klass = EVENT_CLASS[kind]
    wanted = priority if isinstance(priority, str) and priority in PRIORITIES else klass
    rank = PRIORITY_RANK[EventClass(wanted)]
    if kind in FOLLOWER_KINDS:
        return max(rank, _FOLLOWER_RANK)
    if klass in (EventClass.ALARM, EventClass.TROUBLE):
        return min(rank, PRIORITY_RANK[klass])
    return rank


def _migrate_priority(conn: sqlite3.Connection) -> None:
    """Give a journal made before priorities its ``priority`` column and index, once.

    Pending rows get their event's rank; acknowledged rows keep the default,
    which nothing reads. The old (forwarder, seq) index goes: the new one serves
    every query it served. A journal that an older gateway opened again (the
    old index is back, its rows ranked by default) is ranked again.
    """
    if not _before_priorities(conn):
        conn.executescript(PENDING_INDEX)
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _before_priorities(conn):  # another connection may have just migrated it
            columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
            if "priority" not in columns:
                conn.execute(
                    "ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 2"
                )
            # One statement, row by row inside SQLite: flat memory for a million rows.
            conn.create_function(
                "lianfang_rank", 2, lambda k, p: _rank(EventKind(k), p), deterministic=True
            )
            conn.execute(
                "UPDATE deliveries SET priority = lianfang_rank(e.kind,"
                " json_extract(e.body, '$.attrs.priority')) FROM events e"
                " WHERE e.seq = deliveries.seq AND deliveries.acked_at IS NULL"
            )
            conn.execute("DROP INDEX IF EXISTS deliveries_pending")
        conn.execute(PENDING_INDEX)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _before_priorities(conn: sqlite3.Connection) -> bool:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
    old_index = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='index' AND name='deliveries_pending'"
    ).fetchone()
    return "priority" not in columns or old_index is not None


BUSY_TIMEOUT_MS = 5000
"""How long a connection waits for another's lock."""


class JournalDamagedError(JournalError):
    """The journal file is damaged (SQLite finds it corrupt or not a database)."""


def damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLite finding the file damaged rather than out of reach."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the journal database with the durability settings the gateway relies on."""
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            _migrate_priority(conn)
    except sqlite3.Error as exc:
        if damaged(exc):
            raise JournalDamagedError(f"journal {path} is damaged: {exc}") from exc
        raise JournalError(f"cannot open journal {path}: {exc}") from exc
    except OSError as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from exc
    return conn
