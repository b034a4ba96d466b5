"""The journal: every accepted event, durably, before anything is forwarded.

One SQLite database in WAL mode with ``synchronous=FULL``: an event the gateway
has acknowledged to a device survives a power cut. One writer thread owns the
only writing connection; events that arrive together share one transaction
(group commit), so durability does not cap throughput. A forwarder's
acknowledgements wait for the next events' commit, or ``CLOSING_LINGER_S`` at
most: alone, each would cost a commit of its own. The event loop hands the
writer each turn's records through a queue and hears back once per commit
(decision 103).

The tables, the connection settings and the drain ranks are in
``gateway/journal_schema.py``; reading is ``gateway/journal_reader.py``; the
size cap and telling a full disk apart are ``gateway/journal_space.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import JournalError
from gateway.events import EVENT_CLASS, Event, EventClass, utc_now
from gateway.journal_reader import OutboxRow
from gateway.journal_repair import Damage, mark_for_full_check, repair
from gateway.journal_schema import connect, damaged, delivery_priority
from gateway.journal_space import JournalSpace, SpaceStats, disk_full
from gateway.ratelimit import RateLimitedLog
from gateway.storage import StorageReserve

logger = logging.getLogger(__name__)

MAX_BATCH = 2000
RECENT_ORIGIN_KEYS = 20_000  # far more than a broker may redeliver after a crash
# While the disk is full even after the reserve went, retry the commit this often at most.
FULL_RETRY_MAX_S = 10.0
# Acknowledgements (and failures, give-ups) wait this long at most for an append
# to share its commit: a crash meanwhile sends those events to their receiver
# again, which a receiver takes by event id anyway.
CLOSING_LINGER_S = 0.2

OnDurable = Callable[[], None]

INSERT_EVENTS = (
    "INSERT INTO events (seq, id, shop_id, device_id, kind, class, received_at, origin_key, body)"
    " VALUES (?,?,?,?,?,?,?,?,?)"
)
INSERT_DELIVERIES = "INSERT INTO deliveries (forwarder, seq, priority) VALUES (?, ?, ?)"
RECORD_FAILURE = (
    "UPDATE deliveries SET attempts=attempts+1, last_error=?"
    " WHERE forwarder=? AND seq=? AND acked_at IS NULL"
)
# One row per acknowledged event, never a range.
RECORD_ACK = "UPDATE deliveries SET acked_at=? WHERE forwarder=? AND seq=? AND acked_at IS NULL"


def _fail(failed: asyncio.Future[None], exc: BaseException) -> None:
    if not failed.done():
        failed.set_exception(exc)


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


_Closing = _Ack | _Failure | _GiveUp
_Item = _Append | _Closing


@dataclass
class JournalStats(SpaceStats):
    """Counters for the status page."""

    appended: int = 0
    acked: int = 0
    duplicates: int = 0
    commits: int = 0


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
        self.reserve = StorageReserve(path.parent, reserve_bytes)
        self._route = route
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
        self._log = RateLimitedLog(logger, interval_s=60)
        self._space = JournalSpace(
            self._conn, path, max_size_bytes=max_size_bytes, stats=self.stats, log=self._log
        )
        try:
            if not self.reserve.short and not self.reserve.ensure():
                self.reserve.release("no room for the reserve at start")
        except OSError as exc:
            raise JournalError(
                f"cannot make the storage reserve {self.reserve.path}: {exc}"
            ) from exc
        # The writer thread's work, None to stop it; appends wait in append()
        # while ``queue_size`` records are queued.
        # Each loop turn's records as one item, so that the writer never takes
        # part of a turn: what is queued without a pause goes in one commit, as
        # when the writer ran on the loop.
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._turn: list[_Item] = []
        # Records handed over (counted by the loop) and taken (by the writer thread).
        self._handed = 0
        self._taken = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unwritten: list[_Item] = []
        # Acknowledgements, failures and give-ups held for the next commit;
        # unbounded so that they never block a forwarder.
        self._closing: list[_Closing] = []
        self._closing_since = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._queue_size = queue_size
        self._room = asyncio.Event()
        self._room.set()
        self._listeners: list[Callable[[list[OutboxRow], str], None]] = []
        # origin key -> callbacks waiting for the first copy, or None once durable
        self._origins: OrderedDict[str, list[OnDurable] | None] = OrderedDict()
        self._closed = False
        self._load_recent_origins()
        self._space.refresh()
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
        """Forget a claim whose event never reached ``append`` (cancelled, or refused).

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
        Every event is taken, while storage is short too (from the reserve): which
        device events wait with their senders then is the intake's to decide, before
        the rules (``StorageReserve.refuses``).
        """
        while self._backlog() >= self._queue_size:
            self._room.clear()
            await self._room.wait()
        callbacks = [on_durable] if on_durable else []
        names = tuple(self._route(event) if routes is None else routes)
        self._to_writer([_Append(event, origin_key, callbacks, names)])
        self._flush_closing()  # the held acknowledgements share this commit

    @property
    def queued(self) -> int:
        """Records waiting for the writer (appends and acknowledgements)."""
        return self._backlog() + len(self._closing)

    def _backlog(self) -> int:
        return self._handed - self._taken + len(self._turn)

    def ack(self, forwarder: str, seq: int) -> None:
        """Record that ``forwarder``'s receiver acknowledged the event at ``seq``.

        Committed with the next events, or within ``CLOSING_LINGER_S``.
        """
        self._hold(_Ack(forwarder, seq))

    def failed(self, forwarder: str, seqs: Iterable[int], error: str) -> None:
        """Record a failed delivery attempt of these events (for the audit trail).

        Committed at once, with the acknowledgements held: the forwarder reads the
        journal again next, and must find the rows it had closed closed.
        """
        self._hold(_Failure(forwarder, tuple(seqs), error))
        self._flush_closing()

    def give_up(self, forwarder: str, seq: int, error: str) -> None:
        """Close the delivery at ``seq`` unacknowledged: the receiver refused it for good.

        The row leaves the outbox (``acked_at`` is set) and ``last_error`` starts
        with ``given up:`` and the receiver's reason, for the audit trail.
        """
        self._hold(_GiveUp(forwarder, seq, error))

    def _hold(self, item: _Closing) -> None:
        """Keep ``item`` for the next commit; make sure one comes within the linger."""
        if not self._closing:
            self._closing_since = time.monotonic()
        self._closing.append(item)
        if len(self._closing) >= MAX_BATCH:
            self._flush_closing()
        elif self._linger is None:
            with contextlib.suppress(RuntimeError):  # no loop: close() commits them
                loop = asyncio.get_running_loop()
                self._linger = loop.call_later(CLOSING_LINGER_S, self._lingered)

    def _lingered(self) -> None:
        """The linger timer: flush what has waited long enough, else wait for the rest."""
        self._linger = None
        if not self._closing:
            return
        left = self._closing_since + CLOSING_LINGER_S - time.monotonic()
        if left <= 0:
            self._flush_closing()
        else:
            self._linger = asyncio.get_running_loop().call_later(left, self._lingered)

    def _flush_closing(self) -> None:
        """Hand the held records to the writer."""
        if self._closing:
            self._to_writer(self._closing)
            self._closing = []

    def _to_writer(self, items: Iterable[_Item]) -> None:
        """Queue ``items`` for the writer at the end of this loop turn, with the turn's others."""
        if not self._turn:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._turn.extend(items)

    def _hand_over(self) -> None:
        """The end of a loop turn: the writer takes the turn's records."""
        self._handed += len(self._turn)
        self._queue.put(self._turn)
        self._turn = []

    def on_commit(self, listener: Callable[[list[OutboxRow], str], None]) -> None:
        """Call ``listener(rows, forwarder)`` with the events newly committed for a forwarder."""
        self._listeners.append(listener)

    # --- the writer thread ----------------------------------------------------------

    async def run(self) -> None:
        """Commit queued records in groups until cancelled; flush what is queued on the way out.

        Raises the writer's ``JournalError`` if it cannot go on.
        """
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._write_all, args=(loop, failed), name="journal", daemon=True
        )
        self._thread.start()
        try:
            await failed
        finally:
            self.close()

    def _write_all(self, loop: asyncio.AbstractEventLoop, failed: asyncio.Future[None]) -> None:
        """The writer thread: commit what is queued in groups; the loop hears once per commit."""
        while (first := self._queue.get()) is not None:
            batch = first
            stop = False
            while len(batch) < MAX_BATCH and not self._queue.empty():
                turn = self._queue.get()
                if turn is None:
                    stop = True
                    break
                batch += turn
            self._taken += len(batch)
            try:
                stored = self._write_until_stored(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it
                self._unwritten = batch
                loop.call_soon_threadsafe(_fail, failed, exc)
                return
            if not stored:
                self._unwritten = batch
                return
            loop.call_soon_threadsafe(self._committed, batch)
            if stop:
                return

    def _write_until_stored(self, batch: list[_Item]) -> bool:
        """Commit ``batch``; while the disk is full even without the reserve, retry with backoff.

        False when told to stop before it was stored.
        """
        delay = 0.5
        while True:
            try:
                self._write(batch)
            except StorageFullError as exc:
                self._log.warning(
                    "full", "%s; retrying every %.0f s at most", exc, FULL_RETRY_MAX_S
                )
                wait_s, delay = delay, min(delay * 2, FULL_RETRY_MAX_S)
            except JournalBusyError as exc:
                # Someone else's transaction (an installer's sqlite3 shell, a backup tool):
                # wait it out rather than end the alarm service; the batch stays accepted.
                self._log.warning("busy", "%s; retrying", exc)
                wait_s = 0.1
            else:
                return True
            if self._stopping.wait(wait_s):
                return False

    def close(self) -> None:
        """Let an in-flight commit finish, commit whatever is still queued, and close."""
        if self._closed:
            return
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
        if self._thread is not None:
            self._stopping.set()
            self._queue.put(None)
            self._thread.join()
        rest, self._unwritten = self._unwritten, []
        while not self._queue.empty():
            rest += self._queue.get() or []
        rest += self._turn
        rest += self._closing
        self._turn.clear()
        self._closing.clear()
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
            if not disk_full(exc, self.path.parent):
                raise JournalError(f"cannot write journal {self.path}: {exc}") from exc
            if self.reserve.short:
                raise StorageFullError(
                    f"journal {self.path}: disk full even without the reserve"
                ) from exc
            # The reserve's room takes this batch (already accepted) and what follows.
            self.reserve.release(f"disk full writing {self.path.name}")
            self._write(batch)
            return
        self._space.after_commit(evictable=any(_may_be_evicted(item) for item in batch))

    def _commit(
        self,
        events: list[tuple[object, ...]],
        deliveries: list[tuple[str, int, int]],
        failures: list[tuple[str, str, int]],
        acks: list[tuple[str, str, int]],
    ) -> None:
        conn = self._conn
        # Each statement lets go of the GIL and takes it again, a thread switch
        # when the event loop holds it: the ones with nothing to do are skipped.
        statements = (
            (INSERT_EVENTS, events),
            (INSERT_DELIVERIES, deliveries),
            (RECORD_FAILURE, failures),
            (RECORD_ACK, acks),
        )
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                if rows:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _committed(self, batch: list[_Item]) -> None:
        """In the event loop, after ``batch`` was committed: callbacks, listeners, room."""
        if self._backlog() < self._queue_size:
            self._room.set()
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
