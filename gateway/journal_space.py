"""The journal's room: its size cap, measured on every commit, and the disk filling.

Past ``max_size_bytes`` (the used pages and the WAL), low-value records are
evicted, oldest first and in tiers, down to a low-water mark; alarms and
anything a receiver still waits for never are (decision 71). A commit that
fails because the disk is full is told apart from other I/O errors here; the
journal then releases the storage reserve (``gateway/storage.py``, decision 69).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.events import EventClass
from gateway.journal_schema import BUSY_TIMEOUT_MS
from gateway.ratelimit import RateLimitedLog

EVICT_RETRY_S = 10.0
EVICT_TO = 0.9
"""Eviction goes on down to this fraction of the cap."""
EVICT_ROUND_MIN = 50
EVICT_ROUND_MAX = 5000
# The WAL is kept to an eighth of the size cap, within these bounds.
WAL_LIMIT_MIN = 16 * 1024
WAL_LIMIT_MAX = 64 * 1024 * 1024
# An I/O error with less room than this on the disk is the disk being full.
FULL_DISK_BYTES = 1 << 16

# Eviction order past the size cap. Alarms, and anything a receiver still
# waits for, are never evicted.
EVICTION_TIERS: tuple[tuple[EventClass, bool], ...] = (
    (EventClass.ROUTINE, True),  # heartbeats (never forwarded) and tests already delivered
    (EventClass.STATUS, True),  # door and arm changes already delivered
    (EventClass.TROUBLE, True),  # troubles already delivered
)


@dataclass
class SpaceStats:
    """The journal's size, for the status page."""

    evicted: int = 0
    size_bytes: int = 0
    """The database's used pages and its WAL."""
    over_cap: bool = False


class JournalSpace:
    """Keeps the journal under its size cap, on the writer's connection (writer thread only)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        max_size_bytes: int,
        stats: SpaceStats,
        log: RateLimitedLog,
    ) -> None:
        """Measure ``path`` through ``conn`` against ``max_size_bytes``; report into ``stats``."""
        self._conn = conn
        self._wal = path.with_name(path.name + "-wal")
        self._max_size_bytes = max_size_bytes
        self._stats = stats
        self._log = log
        self._pages_bytes = 0
        self._page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        self._last_evict = 0.0
        # A small cap gets a small WAL: checkpoints come sooner and truncate it to the limit.
        self._wal_limit = min(WAL_LIMIT_MAX, max(WAL_LIMIT_MIN, max_size_bytes // 8))
        conn.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
        autocheckpoint = max(4, min(1000, self._wal_limit // 4096))
        conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")

    def after_commit(self, *, evictable: bool) -> None:
        """Measure after a commit; over the cap, evict (``evictable``: it added such records)."""
        self._measure()  # three header reads and a stat: cheap enough for every commit
        # When nothing evictable was left, search again only once this commit added
        # something evictable, or now and then.
        retry_due = time.monotonic() - self._last_evict > EVICT_RETRY_S
        if self._stats.over_cap and (evictable or retry_due):
            try:
                self.refresh()
                if self._stats.over_cap:
                    self._evict()
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                self._log.warning("evict-failed", "journal eviction failed: %s", exc)
            if self._stats.over_cap:
                self._last_evict = time.monotonic()

    def refresh(self) -> None:
        """Measure the used pages and the WAL; over the cap, checkpoint and measure again."""
        self._measure()
        if self._stats.over_cap:
            self._checkpoint()
            self._measure()

    def _checkpoint(self) -> None:
        """Move the WAL into the database and truncate it, unless a reader is in the way.

        Never waits for readers (a forwarder's read would hold the writer up to
        the busy timeout); journal_size_limit keeps the WAL small after the
        automatic checkpoints too.
        """
        self._conn.execute("PRAGMA busy_timeout=0")
        try:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _measure(self) -> None:
        # One statement, not one per figure: each lets go of the GIL and takes it again.
        pages, free = self._conn.execute(
            "SELECT * FROM pragma_page_count(), pragma_freelist_count()"
        ).fetchone()
        size = self._page_size
        try:
            wal = self._wal.stat().st_size
        except FileNotFoundError:
            wal = 0
        self._pages_bytes = (pages - free) * size
        self._stats.size_bytes = self._pages_bytes + wal
        self._stats.over_cap = self._stats.size_bytes > self._max_size_bytes

    def _evict(self) -> None:
        """Delete low-value records, oldest first, until under the low-water mark; never alarms.

        Evicting to a little under the cap leaves room for the next commits, so
        that eviction runs now and then rather than on every commit. The pages in
        use are judged against the cap less the WAL's limit: deleting writes to
        the WAL, which the checkpoint at the end moves out.
        """
        low_water = self._max_size_bytes * EVICT_TO - self._wal_limit
        for klass, only_acked in EVICTION_TIERS:
            while self._pages_bytes > low_water:
                condition = (
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = events.seq"
                    " AND d.acked_at IS NULL)"
                    if only_acked
                    else ""
                )
                seqs = [
                    r[0]
                    for r in self._conn.execute(
                        f"SELECT seq FROM events WHERE class=?{condition} ORDER BY seq LIMIT ?",  # noqa: S608 - fixed fragments
                        (klass.value, self._eviction_round(low_water)),
                    )
                ]
                if not seqs:
                    break
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("DELETE FROM deliveries WHERE seq=?", [(s,) for s in seqs])
                self._conn.executemany("DELETE FROM events WHERE seq=?", [(s,) for s in seqs])
                self._conn.execute("COMMIT")
                self._stats.evicted += len(seqs)
                self._measure()
                self._log.warning(
                    "evicted",
                    "journal over its %.1f MB cap: evicted %d %s records (alarms are kept)",
                    self._max_size_bytes / 1e6,
                    len(seqs),
                    klass.value,
                )
        self.refresh()
        if self._stats.over_cap:
            self._log.warning(
                "full",
                "journal still over its cap at %.1f MB with only alarms and undelivered records;"
                " nothing more will be evicted",
                self._stats.size_bytes / 1e6,
            )

    def _eviction_round(self, low_water: float) -> int:
        """How many records one round deletes: the excess over ``low_water`` in average records."""
        rows = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        per_row = self._pages_bytes / max(rows, 1)
        wanted = (self._pages_bytes - low_water) / max(per_row, 1.0)
        return int(min(EVICT_ROUND_MAX, max(EVICT_ROUND_MIN, wanted * 1.1)))


def disk_full(exc: sqlite3.Error, state_dir: Path) -> bool:
    """Whether ``exc`` from a write means the disk under ``state_dir`` is full."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return True
    # A failed write or shared-memory growth on a full disk reports an I/O error.
    return code == sqlite3.SQLITE_IOERR and shutil.disk_usage(state_dir).free < FULL_DISK_BYTES
