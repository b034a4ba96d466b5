"""Reading the journal: the rows a forwarder still owes, counts and recent events; never writes."""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.events import Event
from gateway.journal_schema import RANKS, connect


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting for one forwarder, as the journal holds it."""

    seq: int
    shop_id: str | None
    body: str
    """The event's JSON, exactly as journalled."""
    priority: int
    """Drain rank (``PRIORITY_RANK``): lower drains first."""

    @property
    def event(self) -> Event:
        """The event itself (parsed on demand; forwarders that relay JSON skip this)."""
        return Event.model_validate_json(self.body)


class JournalReader:
    """Reads the journal for forwarders and the CLI, on its own connection; never writes."""

    def __init__(self, path: Path) -> None:
        """Open a reading connection; WAL lets it read while the writer commits."""
        self._conn = connect(path)
        # A forwarder reads in a worker thread that outlives a cancelled await:
        # closing the connection under a running statement crashes SQLite.
        self._lock = threading.Lock()

    def pending(
        self,
        forwarder: str,
        *,
        after: int | Mapping[int, int],
        limit: int,
        ranks: Collection[int] = RANKS,
    ) -> list[OutboxRow]:
        """Unacknowledged events for ``forwarder``, highest priority first, then in journal order.

        ``after`` is the last ``seq`` already handed out, per priority rank (a
        rank it does not name starts at 0) or one number for every rank; only
        the priority ``ranks`` named are read.
        """
        with self._lock:
            return self._pending(forwarder, after=after, limit=limit, ranks=sorted(ranks))

    def _pending(
        self, forwarder: str, *, after: int | Mapping[int, int], limit: int, ranks: list[int]
    ) -> list[OutboxRow]:
        rows: list[OutboxRow] = []
        # One snapshot for every rank: a commit landing between two rank queries
        # would hand out a restore (status rank) without the alarm committed before it.
        self._conn.execute("BEGIN")
        try:
            for rank in ranks:
                if len(rows) >= limit:
                    break
                since = after if isinstance(after, int) else after.get(rank, 0)
                # One index range per rank: (forwarder, priority, seq) over pending rows.
                rows.extend(
                    OutboxRow(seq, shop_id, body, rank)
                    for seq, shop_id, body in self._conn.execute(
                        "SELECT d.seq, e.shop_id, e.body FROM deliveries d JOIN events e"
                        " ON e.seq = d.seq WHERE d.forwarder=? AND d.priority=?"
                        " AND d.acked_at IS NULL AND d.seq>? ORDER BY d.seq LIMIT ?",
                        (forwarder, rank, since, limit - len(rows)),
                    )
                )
        finally:
            self._conn.execute("COMMIT")
        return rows

    def shop_pending(
        self,
        forwarder: str,
        shop_id: str,
        *,
        after: int,
        before: int,
        kinds: Collection[str] | None = None,
    ) -> list[OutboxRow]:
        """``shop_id``'s unacknowledged events for ``forwarder`` between two seqs, in order.

        Those after ``after`` and before ``before``; only those of ``kinds`` when
        given. Read through the ``events(shop_id, seq)`` index: one shop's rows,
        however long the backlog of the others.
        """
        kind_list = None if kinds is None else json.dumps(sorted(kinds))
        with self._lock:
            return [
                OutboxRow(seq, shop_id, body, rank)
                for seq, body, rank in self._conn.execute(
                    "SELECT e.seq, e.body, d.priority FROM events e JOIN deliveries d"
                    " ON d.seq = e.seq AND d.forwarder=?1 WHERE e.shop_id=?2"
                    " AND e.seq>?3 AND e.seq<?4 AND d.acked_at IS NULL"
                    " AND (?5 IS NULL OR e.kind IN (SELECT value FROM json_each(?5)))"
                    " ORDER BY e.seq",
                    (forwarder, shop_id, after, before, kind_list),
                )
            ]

    def pending_counts(self) -> dict[str, int]:
        """Unacknowledged events per forwarder."""
        return dict(
            self._conn.execute(
                "SELECT forwarder, COUNT(*) FROM deliveries WHERE acked_at IS NULL"
                " GROUP BY forwarder"
            ).fetchall()
        )

    def given_up_counts(self) -> dict[str, int]:
        """Deliveries each forwarder's receiver refused for good (see ``Journal.give_up``)."""
        return dict(
            self._conn.execute(
                "SELECT forwarder, COUNT(*) FROM deliveries WHERE last_error LIKE 'given up:%'"
                " GROUP BY forwarder"
            ).fetchall()
        )

    def recent(self, limit: int) -> list[tuple[int, Event]]:
        """The newest ``limit`` events, newest first."""
        return [
            (seq, Event.model_validate_json(body))
            for seq, body in self._conn.execute(
                "SELECT seq, body FROM events ORDER BY seq DESC LIMIT ?", (limit,)
            )
        ]

    def deliveries(self, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
        """Each forwarder's delivery of the events at ``seqs``: acked_at (None: waiting), tries."""
        found: dict[int, list[dict[str, Any]]] = {seq: [] for seq in seqs}
        if not seqs:
            return found
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, forwarder, acked_at, attempts, last_error FROM deliveries"
                " WHERE seq BETWEEN ? AND ? ORDER BY seq, forwarder",
                (min(seqs), max(seqs)),
            ).fetchall()
        for seq, forwarder, acked_at, attempts, last_error in rows:
            if seq not in found:
                continue
            found[seq].append(
                {
                    "forwarder": forwarder,
                    "acked_at": acked_at,
                    "attempts": attempts,
                    "last_error": last_error,
                }
            )
        return found

    def device_states(self) -> list[dict[str, Any]]:
        """Each field device's last known state (``device_state`` table), by shop and device."""
        cursor = self._conn.execute(
            "SELECT shop_id, device_id, driver, last_seen, battery_v, fault FROM device_state"
            " ORDER BY shop_id, device_id"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def close(self) -> None:
        """Close the connection, once any read under way has finished."""
        with self._lock:
            self._conn.close()
