"""The journal: every accepted event, durably, before anything is forwarded.

One SQLite database in WAL mode with ``synchronous=FULL``: an event the gateway
has acknowledged to a device survives a power cut. One writer task owns the
only writing connection; events and forwarder acknowledgements that arrive
together share one transaction (group commit), so durability does not cap
throughput.

The tables, the connection settings and the drain ranks are in
``gateway/journal_schema.py``; reading is ``gateway/journal_reader.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import JournalError
from gateway.events import EVENT_CLASS, Event, EventClass, utc_now
from gateway.journal_reader import OutboxRow
from gateway.journal_repair import Damage, mark_for_full_check, repair
from gateway.journal_schema import BUSY_TIMEOUT_MS, connect, damaged, delivery_priority
from gateway.ratelimit import RateLimitedLog
from gateway.storage import StorageReserve

logger = logging.getLogger(__name__)

MAX_BATCH = 2000
RECENT_ORIGIN_KEYS = 20_000  # far more than a broker may redeliver after a crash
EVICT_RETRY_S = 10.0
EVICT_TO = 0.9
"""Eviction goes on down to this fraction of the cap."""
EVICT_ROUND_MIN = 50
EVICT_ROUND_MAX = 5000
# The WAL is kept to an eighth of the size cap, within these bounds.
WAL_LIMIT_MIN = 16 * 1024
WAL_LIMIT_MAX = 64 * 1024 * 1024
# While the disk is full even after the reserve went, retry the commit this often at most.
FULL_RETRY_MAX_S = 10.0
# Non-alarm events refused per storage shortage at most: each one holds a place in
# its sender's window of unacknowledged messages (a broker's Receive Maximum), and
# a full window would hold the alarms behind it. Past this, the reserve takes them.
MAX_REFUSED_PER_SHORTAGE = 100
# An I/O error with less room than this on the disk is the disk being full.
FULL_DISK_BYTES = 1 << 16

# Eviction order past the size cap. Alarms, and anything a receiver still
# waits for, are never evicted.
EVICTION_TIERS: tuple[tuple[EventClass, bool], ...] = (
    (EventClass.ROUTINE, True),  # heartbeats (never forwarded) and tests already delivered
    (EventClass.STATUS, True),  # door and arm changes already delivered
    (EventClass.TROUBLE, True),  # troubles already delivered
)

OnDurable = Callable[[], None]


def _may_be_evicted(item: _Item) -> bool:
    """Whether ``item`` adds a record that eviction may take: a non-alarm, or a delivery."""
    if isinstance(item, _Append):
        return EVENT_CLASS[item.event.kind] is not EventClass.ALARM
    return isinstance(item, _Ack | _GiveUp)


class StorageFullError(JournalError):
    """The disk is full even after the storage reserve was released."""


class JournalBusyError(JournalError):
    """Another process held the journal's write lock past SQLite's busy timeout."""


Route = Callable[[Event], Iterable[str]]


@dataclass
class _Append:
    event: Event
    origin_key: str | None
    on_durable: list[OnDurable]
    routes: tuple[str, ...]
    seq: int = 0
    body: str = ""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class _Ack:
    forwarder: str
    seq: int


@dataclass(frozen=True, slots=True)
class _Failure:
    forwarder: str
    seqs: tuple[int, ...]
    error: str


@dataclass(frozen=True, slots=True)
class _GiveUp:
    forwarder: str
    seq: int
    error: str


_Item = _Append | _Ack | _Failure | _GiveUp


@dataclass
class JournalStats:
    """Counters for the status page."""

    appended: int = 0
    acked: int = 0
    duplicates: int = 0
    commits: int = 0
    evicted: int = 0
    size_bytes: int = 0
    """The database's used pages and its WAL."""
    over_cap: bool = False
    refused: int = 0
    """Non-alarm events refused while storage was short (their sender keeps them)."""


class Journal:
    """Durable, ordered store of events and of each forwarder's acknowledgements."""

    def __init__(
        self,
        path: Path,
        *,
        route: Route,
        max_size_bytes: int,
        queue_size: int = 10_000,
        reserve_bytes: int = 0,
    ) -> None:
        """Open (or create) the journal at ``path``.

        ``route`` names the forwarders that must deliver an event;
        ``reserve_bytes`` of ballast beside it keep room for alarms on a full disk.
        """
        self.path = path
        self.stats = JournalStats()
        self._pages_bytes = 0
        self._refused_in_shortage = 0
        self.reserve = StorageReserve(path.parent, reserve_bytes)
        self._route = route
        self._max_size_bytes = max_size_bytes
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(path.parent).free < reserve_bytes // 2:
                # Too full even to open the journal safely: start from the reserve.
                self.reserve.release("disk nearly full at start")
        except OSError as exc:
            raise JournalError(f"cannot use the state directory {path.parent}: {exc}") from exc
        try:
            self.damage: Damage | None = repair(path, route=route)
            """What the check on open found wrong, moved aside and salvaged; None if sound."""
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(
                f"cannot move aside or salvage damaged journal {path}: {exc}"
            ) from exc
        self._conn = connect(path)
        # A small cap gets a small WAL: checkpoints come sooner and truncate it to the limit.
        self._wal_limit = min(WAL_LIMIT_MAX, max(WAL_LIMIT_MIN, max_size_bytes // 8))
        self._conn.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
        autocheckpoint = max(4, min(1000, self._wal_limit // 4096))
        self._conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        try:
            if not self.reserve.short and not self.reserve.ensure():
                self.reserve.release("no room for the reserve at start")
        except OSError as exc:
            raise JournalError(
                f"cannot make the storage reserve {self.reserve.path}: {exc}"
            ) from exc
        # Unbounded so that acknowledgements never block a forwarder; appends
        # wait in append() while more than ``queue_size`` items are queued.
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._queue_size = queue_size
        self._room = asyncio.Event()
        self._room.set()
        # One thread: SQLite allows one writer, and commit order is event order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._listeners: list[Callable[[list[OutboxRow], str], None]] = []
        # origin key -> callbacks waiting for the first copy, or None once durable
        self._origins: OrderedDict[str, list[OnDurable] | None] = OrderedDict()
        self._last_evict = 0.0
        self._log = RateLimitedLog(logger, interval_s=60)
        self._closed = False
        self._load_recent_origins()
        self._refresh_size()
        # Assigned here, not by SQLite, so that a whole batch goes in one executemany.
        self._next_seq = self._last_seq() + 1

    # --- producers (event loop) -------------------------------------------------

    def claim(self, origin_key: str, on_durable: OnDurable | None = None) -> bool:
        """Whether ``origin_key`` is new; a repeat's ``on_durable`` waits for the first copy.

        ``origin_key`` is the device's own identity of a message (driver, shop,
        device, sequence number). Brokers and devices send a message again when
        its acknowledgement was lost; the repeat is acknowledged once the first
        copy is durable, and is not journalled, alerted or forwarded again.
        """
        if origin_key not in self._origins:
            self._origins[origin_key] = []
            if len(self._origins) > RECENT_ORIGIN_KEYS:
                self._origins.popitem(last=False)
            return True
        self.stats.duplicates += 1
        waiting = self._origins[origin_key]
        if on_durable is not None:
            if waiting is None:
                on_durable()
            else:
                waiting.append(on_durable)
        return False

    def release(self, origin_key: str) -> None:
        """Forget a claim whose event never reached ``append`` (the driver was cancelled).

        Repeats parked on it are dropped unacknowledged; the broker sends them again.
        """
        if self._origins.get(origin_key, None) is not None:
            del self._origins[origin_key]

    async def append(
        self,
        event: Event,
        *,
        origin_key: str | None = None,
        on_durable: OnDurable | None = None,
        routes: Iterable[str] | None = None,
    ) -> None:
        """Queue ``event``; ``on_durable`` runs once it is committed.

        ``routes`` (the forwarders that must deliver it) defaults to the journal's
        ``route``. Waits only when the writer is backed up (backpressure on the drivers).

        While storage is short, a non-alarm event that someone keeps until it is
        acknowledged (it comes with ``on_durable``: a broker, a repeating device)
        is refused: ``on_durable`` never runs and its sender offers it again.
        Past ``MAX_REFUSED_PER_SHORTAGE`` such refusals the reserve takes them too.
        """
        if (
            self.reserve.short
            and on_durable is not None
            and EVENT_CLASS[event.kind] is not EventClass.ALARM
            and self._refused_in_shortage < MAX_REFUSED_PER_SHORTAGE
        ):
            self.stats.refused += 1
            self._refused_in_shortage += 1
            if origin_key is not None:
                self.release(origin_key)
            return
        while self._queue.qsize() >= self._queue_size:
            self._room.clear()
            await self._room.wait()
        callbacks = [on_durable] if on_durable else []
        names = tuple(self._route(event) if routes is None else routes)
        self._queue.put_nowait(_Append(event, origin_key, callbacks, names))

    @property
    def queued(self) -> int:
        """Records waiting for the writer (appends and acknowledgements)."""
        return self._queue.qsize()

    def ack(self, forwarder: str, seq: int) -> None:
        """Record that ``forwarder``'s receiver acknowledged the event at ``seq``."""
        self._queue.put_nowait(_Ack(forwarder, seq))

    def failed(self, forwarder: str, seqs: Iterable[int], error: str) -> None:
        """Record a failed delivery attempt of these events (for the audit trail)."""
        self._queue.put_nowait(_Failure(forwarder, tuple(seqs), error))

    def give_up(self, forwarder: str, seq: int, error: str) -> None:
        """Close the delivery at ``seq`` unacknowledged: the receiver refused it for good.

        The row leaves the outbox (``acked_at`` is set) and ``last_error`` starts
        with ``given up:`` and the receiver's reason, for the audit trail.
        """
        self._queue.put_nowait(_GiveUp(forwarder, seq, error))

    def on_commit(self, listener: Callable[[list[OutboxRow], str], None]) -> None:
        """Call ``listener(rows, forwarder)`` with the events newly committed for a forwarder."""
        self._listeners.append(listener)

    # --- the writer task ------------------------------------------------------------

    async def run(self) -> None:
        """Commit queued items in groups until cancelled; flush what is queued on the way out."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._write_until_stored(loop, batch)
                self._committed(batch)
                if self._queue.qsize() < self._queue_size:
                    self._room.set()
        finally:
            self.close()

    async def _write_until_stored(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Item]
    ) -> None:
        """Commit ``batch``; while the disk is full even without the reserve, retry with backoff."""
        delay = 0.5
        while True:
            try:
                await asyncio.shield(loop.run_in_executor(self._writer, self._write, batch))
            except StorageFullError as exc:
                self._log.warning(
                    "full", "%s; retrying every %.0f s at most", exc, FULL_RETRY_MAX_S
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, FULL_RETRY_MAX_S)
            except JournalBusyError as exc:
                # Someone else's transaction (an installer's sqlite3 shell, a backup tool):
                # wait it out rather than end the alarm service; the batch stays accepted.
                self._log.warning("busy", "%s; retrying", exc)
                await asyncio.sleep(0.1)
            else:
                return

    def try_resume(self) -> bool:
        """End a storage shortage if the disk has room again; True if it ended now."""
        if not self.reserve.try_resume():
            return False
        self._refused_in_shortage = 0
        return True

    def close(self) -> None:
        """Let an in-flight commit finish, commit whatever is still queued, and close."""
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        rest: list[_Item] = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        if rest:
            try:
                self._write(rest)
            except StorageFullError as exc:
                # What a sender keeps it offers again; the gateway's own records are lost.
                logger.error(  # noqa: TRY400 - one line, no traceback
                    "journal: %d queued records not flushed on shutdown: %s", len(rest), exc
                )
            else:
                logger.info("journal: flushed %d queued records on shutdown", len(rest))
        self._conn.close()

    def _write(self, batch: list[_Item]) -> None:
        now = utc_now().isoformat()
        events: list[tuple[object, ...]] = []
        deliveries: list[tuple[str, int, int]] = []
        acks: list[tuple[str, str, int]] = []
        failures: list[tuple[str, str, int]] = []
        for item in batch:
            if isinstance(item, _Append):
                ev = item.event
                item.seq = self._next_seq
                self._next_seq += 1
                item.body = ev.model_dump_json()
                item.priority = delivery_priority(ev)
                events.append(
                    (
                        item.seq,
                        ev.id,
                        ev.shop_id,
                        ev.device_id,
                        ev.kind.value,
                        EVENT_CLASS[ev.kind].value,
                        ev.received_at.isoformat(),
                        item.origin_key,
                        item.body,
                    )
                )
                deliveries.extend((name, item.seq, item.priority) for name in item.routes)
            elif isinstance(item, _Ack):
                acks.append((now, item.forwarder, item.seq))
            elif isinstance(item, _GiveUp):
                failures.append((f"given up: {item.error}", item.forwarder, item.seq))
                acks.append((now, item.forwarder, item.seq))
            else:
                failures.extend((item.error, item.forwarder, s) for s in item.seqs)
        try:
            self._commit(events, deliveries, failures, acks)
        except sqlite3.Error as exc:
            if damaged(exc):
                # The bounded check on open missed it: the next start checks the whole file.
                mark_for_full_check(self.path)
                raise JournalError(
                    f"journal {self.path} is damaged ({exc}); the next start checks it fully"
                    " and salvages it"
                ) from exc
            self._next_seq = self._last_seq() + 1
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
                raise JournalBusyError(
                    f"journal {self.path} is locked by another process ({exc})"
                ) from exc
            if not self._disk_full(exc):
                raise JournalError(f"cannot write journal {self.path}: {exc}") from exc
            if self.reserve.short:
                raise StorageFullError(
                    f"journal {self.path}: disk full even without the reserve"
                ) from exc
            # The reserve's room takes this batch (already accepted) and what follows.
            self.reserve.release(f"disk full writing {self.path.name}")
            self._write(batch)
            return
        self._after_commit(evictable=any(_may_be_evicted(item) for item in batch))

    def _commit(
        self,
        events: list[tuple[object, ...]],
        deliveries: list[tuple[str, int, int]],
        failures: list[tuple[str, str, int]],
        acks: list[tuple[str, str, int]],
    ) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (seq, id, shop_id, device_id, kind, class, received_at,"
                " origin_key, body) VALUES (?,?,?,?,?,?,?,?,?)",
                events,
            )
            conn.executemany(
                "INSERT INTO deliveries (forwarder, seq, priority) VALUES (?, ?, ?)", deliveries
            )
            conn.executemany(
                "UPDATE deliveries SET attempts=attempts+1, last_error=?"
                " WHERE forwarder=? AND seq=? AND acked_at IS NULL",
                failures,
            )
            # One row per acknowledged event, never a range.
            conn.executemany(
                "UPDATE deliveries SET acked_at=? WHERE forwarder=? AND seq=? AND acked_at IS NULL",
                acks,
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _disk_full(self, exc: sqlite3.Error) -> bool:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return True
        # A failed write or shared-memory growth on a full disk reports an I/O error.
        return (
            code == sqlite3.SQLITE_IOERR
            and shutil.disk_usage(self.path.parent).free < FULL_DISK_BYTES
        )

    def _after_commit(self, *, evictable: bool) -> None:
        conn = self._conn
        self._measure()  # three header reads and a stat: cheap enough for every commit
        # When nothing evictable was left, search again only once this commit added
        # something evictable, or now and then.
        retry_due = time.monotonic() - self._last_evict > EVICT_RETRY_S
        if self.stats.over_cap and (evictable or retry_due):
            try:
                self._refresh_size()
                if self.stats.over_cap:
                    self._evict()
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                self._log.warning("evict-failed", "journal eviction failed: %s", exc)
            if self.stats.over_cap:
                self._last_evict = time.monotonic()

    def _committed(self, batch: list[_Item]) -> None:
        self.stats.commits += 1
        fresh: dict[str, list[OutboxRow]] = {}
        for item in batch:
            if isinstance(item, _Append):
                self.stats.appended += 1
                waiting = self._origins.get(item.origin_key or "")
                if item.origin_key is not None and item.origin_key in self._origins:
                    self._origins[item.origin_key] = None
                for cb in item.on_durable + (waiting or []):
                    cb()
                row = OutboxRow(item.seq, item.event.shop_id, item.body, item.priority)
                for name in item.routes:
                    fresh.setdefault(name, []).append(row)
            elif isinstance(item, _Ack):
                self.stats.acked += 1
        for name, rows in fresh.items():
            for listener in self._listeners:
                listener(rows, name)

    # --- size cap ----------------------------------------------------------------------

    def _refresh_size(self) -> None:
        """Measure the used pages and the WAL; over the cap, checkpoint and measure again."""
        self._measure()
        if self.stats.over_cap:
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
        pages, free, size = (
            self._conn.execute("PRAGMA page_count").fetchone()[0],
            self._conn.execute("PRAGMA freelist_count").fetchone()[0],
            self._conn.execute("PRAGMA page_size").fetchone()[0],
        )
        try:
            wal = self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            wal = 0
        self._pages_bytes = (pages - free) * size
        self.stats.size_bytes = self._pages_bytes + wal
        self.stats.over_cap = self.stats.size_bytes > self._max_size_bytes

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
                self.stats.evicted += len(seqs)
                self._measure()
                self._log.warning(
                    "evicted",
                    "journal over its %.1f MB cap: evicted %d %s records (alarms are kept)",
                    self._max_size_bytes / 1e6,
                    len(seqs),
                    klass.value,
                )
        self._refresh_size()
        if self.stats.over_cap:
            self._log.warning(
                "full",
                "journal still over its cap at %.1f MB with only alarms and undelivered records;"
                " nothing more will be evicted",
                self.stats.size_bytes / 1e6,
            )

    def _eviction_round(self, low_water: float) -> int:
        """How many records one round deletes: the excess over ``low_water`` in average records."""
        rows = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        per_row = self._pages_bytes / max(rows, 1)
        wanted = (self._pages_bytes - low_water) / max(per_row, 1.0)
        return int(min(EVICT_ROUND_MAX, max(EVICT_ROUND_MIN, wanted * 1.1)))

    # --- reads --------------------------------------------------------------------------

    def _last_seq(self) -> int:
        row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def _load_recent_origins(self) -> None:
        rows = self._conn.execute(
            "SELECT origin_key FROM events WHERE origin_key IS NOT NULL ORDER BY seq DESC LIMIT ?",
            (RECENT_ORIGIN_KEYS,),
        ).fetchall()
        for (key,) in reversed(rows):
            self._origins[key] = None
