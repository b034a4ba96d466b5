"""What the status page shows of each shop, read from the journal's tail; never writes.

The board keeps a read-only connection of its own and reads only the rows
appended since its last look, with the columns it needs (SQLite extracts the
JSON attributes, so no event is parsed in Python): watching the page costs the
panic path one small indexed query at most every ``FRESH_S``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config.model import ShopConfig
from gateway.events import EVENT_CLASS, EventClass, EventKind
from gateway.journal_schema import connect

KEEP_EVENTS = 500
"""Newest events kept for ``/api/events``; its ``limit`` goes up to this."""
TAIL_ROWS = 20_000
"""At start, and after a flood the page fell behind, only this many newest rows are read."""
BATCH_ROWS = 5_000
"""Rows read per look: a flood is caught up over a few looks, never in one long read."""
BACKLOG_EVERY_S = 2.0
"""Counting the outbox backlog walks an index; a few seconds old is fresh enough."""

_COLUMNS = (
    "SELECT seq, id, shop_id, device_id, kind, received_at,"
    " json_extract(body, '$.attrs.test'), json_extract(body, '$.attrs.detail'),"
    " json_extract(body, '$.attrs.reason') FROM events"
)


@dataclass(frozen=True, slots=True)
class BoardEvent:
    """One journalled event as the page lists it."""

    seq: int
    id: str
    shop_id: str | None
    device_id: str
    kind: str
    received_at: str
    test: bool
    detail: str | None

    def as_json(self) -> dict[str, Any]:
        """The event for the API."""
        return {
            "seq": self.seq,
            "id": self.id,
            "shop_id": self.shop_id,
            "device_id": self.device_id,
            "kind": self.kind,
            "received_at": self.received_at,
            "test": self.test,
            "detail": self.detail,
        }


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class ShopBoard:
    """Each shop's state (normal, alarm, fault, untested, in test) and the newest events."""

    def __init__(self, journal: Path, shops: Sequence[ShopConfig], *, alarm_s: float) -> None:
        """Read ``journal`` for ``shops``; an alarm is shown ``alarm_s`` or until cancelled."""
        self._path = journal
        self._shops = shops
        self._alarm_s = alarm_s
        self._conn: sqlite3.Connection | None = None
        self._last_seq = 0
        self._events: deque[BoardEvent] = deque(maxlen=KEEP_EVENTS)
        self._alarms: dict[str, tuple[float, str]] = {}
        self._tested: dict[str, float] = {}
        self._backlog: dict[str, int] = {}
        self._backlog_at = -BACKLOG_EVERY_S
        # A look runs in a worker thread that outlives a cancelled await: closing
        # the connection under a running statement crashes SQLite.
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Read the rows appended since the last look (blocking: call it in a worker thread).

        True when there were any.
        """
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        conn = self._connection()
        newest = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        if newest - self._last_seq > TAIL_ROWS:
            self._last_seq = newest - TAIL_ROWS
        rows = conn.execute(
            f"{_COLUMNS} WHERE seq > ? ORDER BY seq LIMIT ?",
            (self._last_seq, BATCH_ROWS),
        ).fetchall()
        for seq, event_id, shop, device, kind, received, test, detail, reason in rows:
            self._take(
                BoardEvent(seq, event_id, shop, device, kind, received, test == 1, detail or reason)
            )
            self._last_seq = seq
        if time.monotonic() - self._backlog_at > BACKLOG_EVERY_S:
            self._backlog = dict(
                conn.execute(
                    "SELECT forwarder, COUNT(*) FROM deliveries WHERE acked_at IS NULL"
                    " GROUP BY forwarder"
                ).fetchall()
            )
            self._backlog_at = time.monotonic()
        return bool(rows)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self._path, readonly=True)
            # Walk tests older than the tail still count: one pass at the first look.
            self._tested = {
                shop: _epoch(at)
                for shop, at in self._conn.execute(
                    "SELECT shop_id, MAX(received_at) FROM events WHERE shop_id IS NOT NULL"
                    " AND json_extract(body, '$.attrs.test') = 1 GROUP BY shop_id"
                )
            }
        return self._conn

    def _take(self, event: BoardEvent) -> None:
        self._events.append(event)
        if event.shop_id is None:
            return
        kind = EventKind(event.kind) if event.kind in EventKind.__members__.values() else None
        if event.test:
            self._tested[event.shop_id] = _epoch(event.received_at)
        elif kind is not None and EVENT_CLASS[kind] is EventClass.ALARM:
            self._alarms[event.shop_id] = (_epoch(event.received_at), event.kind)
        elif kind is EventKind.CANCEL:
            self._alarms.pop(event.shop_id, None)

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first."""
        newest = list(self._events)[-limit:]
        return [e.as_json() for e in reversed(newest)]

    def backlog(self) -> dict[str, int]:
        """Events each forwarder still owes its receiver."""
        return dict(self._backlog)

    def shops(
        self, faults: Mapping[str, str], under_test: Collection[str] = ()
    ) -> list[dict[str, Any]]:
        """Every shop with its place and state; ``faults`` is the snapshot's ``device_faults``.

        One state each, the most urgent first: ``alarm`` (an alarm in the last
        ``alarm_s``, not cancelled), ``fault`` (a device of it in fault, with
        ``reason``), ``in_test`` (in ``under_test``, the running walk test's
        shops), ``untested`` (no test-marked event in the journal), else ``normal``.
        """
        now = datetime.now(UTC).timestamp()
        reasons: dict[str, list[str]] = {}
        for key, fault in faults.items():
            shop_id, _, device = key.partition("/")
            reasons.setdefault(shop_id, []).append(f"{device}: {fault}")
        found = []
        for shop in self._shops:
            alarm = self._alarms.get(shop.id)
            tested = self._tested.get(shop.id)
            reason: str | None = None
            if alarm is not None and now - alarm[0] <= self._alarm_s:
                state, reason = "alarm", alarm[1]
            elif shop.id in reasons:
                state, reason = "fault", "; ".join(reasons[shop.id])
            elif shop.id in under_test:
                state = "in_test"
            elif tested is None:
                state = "untested"
            else:
                state = "normal"
            found.append(
                {
                    "id": shop.id,
                    "name": shop.name,
                    "lat": shop.lat,
                    "lon": shop.lon,
                    "state": state,
                    "reason": reason,
                }
            )
        return found

    def close(self) -> None:
        """Close the connection, once any look under way has finished."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
