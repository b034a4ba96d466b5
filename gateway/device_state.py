"""Field devices' state (last seen, battery, fault), kept in the journal database.

Drivers update it in memory as frames arrive; ``run`` writes the changed rows
every few seconds on its own connection (WAL lets it share the file with the
journal writer), so a busy bus costs one small transaction per interval, not
one per heartbeat. ``lianfang status`` reads the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.journal_schema import connect
from gateway.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

FLUSH_S = 2.0


@dataclass
class DeviceState:
    """What the gateway last knew of one device."""

    shop_id: str
    device_id: str
    driver: str
    last_seen: float | None = None
    """Wall-clock time (Unix seconds) of the device's last frame or successful poll."""
    battery_v: float | None = None
    fault: str | None = None
    """Why the device is in trouble (``supervision_lost``, ``device_fault``...), or None."""


class DeviceStates:
    """Every field device's state, in memory and in the ``device_state`` table."""

    def __init__(self, path: Path) -> None:
        """Keep the states in the journal database at ``path``, starting from what it holds.

        A fault raised before a restart stays known, so that the device's
        recovery is reported (and its trouble not raised a second time).
        """
        self._path = path
        self._states: dict[tuple[str, str], DeviceState] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._log = RateLimitedLog(logger, interval_s=300)
        self._load()

    def _load(self) -> None:
        if not self._path.exists():
            return
        conn = connect(self._path)
        try:
            rows = conn.execute(
                "SELECT shop_id, device_id, driver, last_seen, battery_v, fault FROM device_state"
            ).fetchall()
        except sqlite3.Error as exc:
            self._log.warning("load", "cannot read device state from %s: %s", self._path, exc)
            rows = []
        finally:
            conn.close()
        for row in rows:
            state = DeviceState(*row)
            self._states[(state.shop_id, state.device_id)] = state

    def last(self, shop_id: str, device_id: str) -> DeviceState | None:
        """The device's state as last recorded (also before a restart), or None."""
        return self._states.get((shop_id, device_id))

    def _state(self, shop_id: str, device_id: str, driver: str) -> DeviceState:
        key = (shop_id, device_id)
        self._dirty.add(key)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = DeviceState(shop_id, device_id, driver)
        return state

    def seen(
        self, shop_id: str, device_id: str, *, driver: str, battery_v: float | None = None
    ) -> None:
        """The device was heard from just now."""
        state = self._state(shop_id, device_id, driver)
        state.last_seen = time.time()
        if battery_v is not None:
            state.battery_v = battery_v

    def fault(self, shop_id: str, device_id: str, *, driver: str, fault: str | None) -> None:
        """The device is in trouble (``fault``), or no longer (None)."""
        self._state(shop_id, device_id, driver).fault = fault

    def all(self) -> list[DeviceState]:
        """Every device's state, by shop and device id."""
        return [self._states[k] for k in sorted(self._states)]

    async def run(self) -> None:
        """Write changed states every ``FLUSH_S`` until cancelled, and once more on the way out."""
        conn = connect(self._path)
        try:
            while True:
                await asyncio.sleep(FLUSH_S)
                # Taken on the loop: drivers change the states there while the thread writes.
                rows = self._changed()
                if rows:
                    await asyncio.to_thread(self._write, conn, rows)
        finally:
            rows = self._changed()
            if rows:
                self._write(conn, rows)
            conn.close()

    def _changed(self) -> list[dict[str, Any]]:
        rows = [asdict(self._states[k]) for k in self._dirty]
        self._dirty.clear()
        return rows

    def _write(self, conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO device_state (shop_id, device_id, driver, last_seen,"
                " battery_v, fault) VALUES (:shop_id, :device_id, :driver, :last_seen,"
                " :battery_v, :fault)",
                rows,
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # state is advisory; alarms go through the journal
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._dirty.update((r["shop_id"], r["device_id"]) for r in rows)
            self._log.warning("flush", "cannot write device state to %s: %s", self._path, exc)
