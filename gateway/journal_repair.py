"""A damaged journal (a power cut on a cheap SD card): checked on open, moved aside, salvaged.

On open, ``PRAGMA quick_check`` runs for ``QUICK_CHECK_S`` at most (on a large
file on a slow card it would take minutes: past the bound the journal is taken
as sound, and any damage left shows later as a failed write). A damaged journal
is renamed with a UTC timestamp (its WAL with it, so that the salvage reads the
last commits too), a fresh journal is made in its place, and what can still be
read is copied into it:

- SQLite can read its tables: rows are read in ``seq`` order, and an unreadable
  stretch is stepped over (probes further and further ahead, bounded); each
  event keeps its deliveries as they were, so an undelivered event stays
  undelivered and a delivered one is not sent again. An event whose delivery
  rows are lost gets them again as undelivered: a duplicate the receiver drops
  by id is better than a lost alarm.
- SQLite cannot read even the schema (a garbage header): the file and its WAL
  are scanned for the events' JSON bodies, which carry everything an event is;
  each comes back undelivered.

``lost`` counts the sequence numbers stepped over in unreadable stretches and
after the last readable row: an upper bound, since eviction leaves gaps too.
With a garbage header it is unknown (``None``). Decision 59.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.events import EVENT_CLASS, Event
from gateway.journal_schema import connect, damaged, delivery_priority

logger = logging.getLogger(__name__)

QUICK_CHECK_S = 5.0
"""Longest the integrity check may run on open."""
MAX_PROBES = 48
"""Probes ahead past one unreadable stretch (steps double: 2**48 rows is more than any journal)."""
_CHUNK = 1000
_EVENT_START = re.compile(rb'\{"id":"[0-9A-HJKMNP-TV-Z]{26}"')

Route = Callable[[Event], Iterable[str]]
_EVENT_COLUMNS = "seq, id, shop_id, device_id, kind, class, received_at, origin_key, body"
_DELIVERY_COLUMNS = "forwarder, seq, attempts, acked_at, last_error, priority"


@dataclass(frozen=True)
class Damage:
    """What was found wrong with the journal on open, and what came of it."""

    problem: str
    """SQLite's words for the damage."""
    moved_to: Path
    """Where the damaged file now lies."""
    salvaged: int
    """Events copied into the fresh journal."""
    lost: int | None
    """Events that could not be read, at most; None when unknown."""


def integrity_problem(
    path: Path, *, time_limit_s: float | None = QUICK_CHECK_S, readonly: bool = False
) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong with the journal at ``path``; None if sound.

    A check cut short by ``time_limit_s`` (None: no limit) found nothing so far: None. ``readonly``
    (for another user than the gateway's) creates no file, and takes a journal it
    cannot open at all for sound: reading it is another check's business.
    """
    if not path.exists():
        return None
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return None if readonly else str(exc)
    deadline = time.monotonic() + (math.inf if time_limit_s is None else time_limit_s)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = conn.execute("PRAGMA quick_check(10)").fetchall()
    except sqlite3.DatabaseError as exc:
        if time.monotonic() > deadline:
            logger.warning("journal %s: integrity check stopped after %.0f s", path, time_limit_s)
            return None
        if readonly and not damaged(exc):
            return None
        return str(exc)
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found)[:500]


def mark_for_full_check(path: Path) -> None:
    """Have the next open check the whole journal at ``path``, however long it takes.

    For damage found at run time, past what the bounded check on open read.
    """
    with contextlib.suppress(OSError):
        _full_check_mark(path).touch()


def _full_check_mark(path: Path) -> Path:
    return path.with_name(f"{path.name}.check-fully")


def repair(path: Path, *, route: Route) -> Damage | None:
    """Check the journal at ``path``; if damaged, move it aside and salvage it into a fresh one.

    The check is bounded in time unless ``mark_for_full_check`` asked for a full one.
    """
    mark = _full_check_mark(path)
    problem = integrity_problem(path, time_limit_s=None if mark.exists() else QUICK_CHECK_S)
    mark.unlink(missing_ok=True)
    if problem is None:
        return None
    moved = _move_aside(path)
    logger.error(
        "journal %s is damaged (%s): moved to %s; salvaging what can be read", path, problem, moved
    )
    fresh = connect(path)
    try:
        salvaged, lost = _salvage(moved, fresh, route)
    finally:
        fresh.close()
    logger.warning(
        "journal salvaged into a fresh %s: %d events kept, %s lost",
        path,
        salvaged,
        "an unknown number" if lost is None else f"at most {lost}",
    )
    return Damage(problem, moved, salvaged, lost)


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    # The WAL and its index go along under the new name, where SQLite looks for them.
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").rename(f"{moved}{suffix}")
    path.rename(moved)
    return moved


def _salvage(damaged: Path, fresh: sqlite3.Connection, route: Route) -> tuple[int, int | None]:
    """Copy what ``damaged`` still holds into ``fresh``: (events salvaged, events lost)."""
    old = _readable_schema(damaged)
    if old is None:
        return _salvage_bodies(damaged, fresh, route), None
    try:
        lost = _copy_rows(
            old, fresh, "events", _EVENT_COLUMNS, _max_seq(old, "events"), count_gaps=True
        )
        _copy_rows(old, fresh, "deliveries", _DELIVERY_COLUMNS, None, count_gaps=False)
        for table in ("meta", "device_state"):
            with contextlib.suppress(sqlite3.DatabaseError):
                rows = old.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
                _insert(fresh, table, rows)
    finally:
        old.close()
    fresh.execute("DELETE FROM deliveries WHERE seq NOT IN (SELECT seq FROM events)")
    _restore_missing_deliveries(fresh, route)
    salvaged = fresh.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return int(salvaged), lost


def _readable_schema(damaged: Path) -> sqlite3.Connection | None:
    """A connection that can read the damaged file's schema, or None.

    A file cut short (its header counts more pages than it holds) is padded
    with zero pages to its counted size: SQLite refuses a schema whose tables
    start past the end of the file, and reads every other page once they exist.
    """
    for attempt in range(2):
        conn = sqlite3.connect(damaged, isolation_level=None)
        try:
            conn.execute("SELECT name FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError:
            conn.close()
            if attempt or not _pad_to_counted_size(damaged):
                return None
        else:
            return conn
    return None


def _pad_to_counted_size(path: Path) -> bool:
    """Pad a file cut short to the page count in its header; False if it is not cut short."""
    with path.open("r+b") as file:
        header = file.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return False
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        counted = int.from_bytes(header[28:32], "big") * page_size
        size = file.seek(0, 2)
        if size >= counted:
            return False
        file.truncate(counted)
    return True


def _max_seq(conn: sqlite3.Connection, table: str) -> int | None:
    try:
        row = conn.execute(f"SELECT MAX(seq) FROM {table}").fetchone()  # noqa: S608 - fixed names
    except sqlite3.DatabaseError:
        return None
    return None if row[0] is None else int(row[0])


def _copy_rows(
    old: sqlite3.Connection,
    fresh: sqlite3.Connection,
    table: str,
    columns: str,
    max_seq: int | None,
    *,
    count_gaps: bool,
) -> int | None:
    """Copy ``table``'s readable rows; the sequence numbers stepped over (if ``count_gaps``).

    None when the end of the table is unreadable and its last number unknown.
    """
    select = f"SELECT {columns} FROM {table} WHERE seq > ? ORDER BY seq"  # noqa: S608 - fixed names
    seq_at = columns.split(", ").index("seq")
    chunk: list[tuple[Any, ...]] = []
    skipped = 0
    last = 0
    for row, gap in _readable(old, select, seq_at, max_seq):
        skipped += gap
        last = int(row[seq_at])
        chunk.append(row)
        if len(chunk) >= _CHUNK:
            _insert(fresh, table, chunk, columns)
            chunk = []
    _insert(fresh, table, chunk, columns)
    if max_seq is not None and last < max_seq:
        skipped += max_seq - last
    elif max_seq is None and not _ends_after(old, select, last):
        return None
    return skipped if count_gaps else 0


def _readable(
    conn: sqlite3.Connection, select: str, seq_at: int, max_seq: int | None
) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Rows in ``seq`` order, each with the sequence numbers stepped over just before it."""
    last = 0
    while True:
        try:
            for row in conn.execute(select, (last,)):
                yield row, 0
                last = int(row[seq_at])
        except sqlite3.DatabaseError:
            found = _first_readable_after(conn, select, seq_at, last, max_seq)
            if found is None:
                return
            yield found, int(found[seq_at]) - last - 1
            last = int(found[seq_at])
        else:
            return


def _ends_after(conn: sqlite3.Connection, select: str, last: int) -> bool:
    """Whether SQLite can tell that no row follows ``last``."""
    try:
        return conn.execute(f"{select} LIMIT 1", (last,)).fetchone() is None
    except sqlite3.DatabaseError:
        return False


def _first_readable_after(
    conn: sqlite3.Connection, select: str, seq_at: int, last: int, max_seq: int | None
) -> tuple[Any, ...] | None:
    """The first row SQLite can read past an unreadable stretch after ``last``; None if none."""
    step = 1
    for _ in range(MAX_PROBES):
        probe = last + step
        if max_seq is not None and probe >= max_seq:
            probe = max_seq - 1
        with contextlib.suppress(sqlite3.DatabaseError):
            row: tuple[Any, ...] | None = conn.execute(f"{select} LIMIT 1", (probe,)).fetchone()
            if row is None or int(row[seq_at]) > last:
                return row
        if max_seq is not None and probe >= max_seq - 1:
            return None
        step *= 2
    return None


def _insert(
    conn: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]], columns: str = ""
) -> None:
    if not rows:
        return
    marks = ",".join("?" * len(rows[0]))
    names = f"({columns})" if columns else ""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT OR IGNORE INTO {table} {names} VALUES ({marks})", rows)  # noqa: S608 - fixed names
    conn.execute("COMMIT")


def _restore_missing_deliveries(conn: sqlite3.Connection, route: Route) -> None:
    """Give each salvaged event the deliveries it lost, as undelivered (receivers drop repeats)."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, _CHUNK)
        ).fetchall()
        if not rows:
            return
        wanted: list[tuple[str, int, int]] = []
        for seq, body in rows:
            last = seq
            try:
                event = Event.model_validate_json(body)
            except ValidationError:
                continue
            wanted.extend((name, seq, delivery_priority(event)) for name in route(event))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO deliveries (forwarder, seq, priority) VALUES (?, ?, ?)", wanted
        )
        conn.execute("COMMIT")


def _salvage_bodies(damaged: Path, fresh: sqlite3.Connection, route: Route) -> int:
    """Find the events' JSON in the raw bytes of ``damaged`` and its WAL; the events kept."""
    found: dict[str, Event] = {}
    for part in (damaged, Path(f"{damaged}-wal")):
        with contextlib.suppress(FileNotFoundError):
            found.update((e.id, e) for e in _bodies_in(part.read_bytes()))
    rows = [
        (seq, e.id, e.shop_id, e.device_id, e.kind.value, EVENT_CLASS[e.kind].value,
         e.received_at.isoformat(), None, e.model_dump_json())
        for seq, e in enumerate(sorted(found.values(), key=lambda e: e.id), 1)
    ]  # fmt: skip
    for start in range(0, len(rows), _CHUNK):
        _insert(fresh, "events", rows[start : start + _CHUNK], _EVENT_COLUMNS)
    _restore_missing_deliveries(fresh, route)
    return len(rows)


def _bodies_in(data: bytes) -> Iterator[Event]:
    decoder = json.JSONDecoder()
    for match in _EVENT_START.finditer(data):
        # A body is short; its end lies within a few kilobytes of its start.
        text = data[match.start() : match.start() + 16_384].decode("utf-8", errors="replace")
        try:
            value, _ = decoder.raw_decode(text)
            yield Event.model_validate(value)
        except (ValueError, ValidationError):
            continue
