"""The storage reserve: a ballast file that keeps room for alarms when the disk fills.

An SD card fills (a log, a copied file, a broker backlog). The gateway keeps
a preallocated ballast file in its state directory; when SQLite reports the
disk full, the ballast is deleted, and the room it held takes the alarms and
the gateway's own events while device events that someone else keeps until
acknowledged (a broker, a repeating device) are refused and wait there: the
intake asks ``refuses`` before the rules see the event. Once the disk has room
for the ballast again, with as much to spare, the ballast is made again and the
shortage ends (decision 69).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import threading
from pathlib import Path

from gateway.events import EVENT_CLASS, ORDER_BOUND_KINDS, EventClass, EventKind
from gateway.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

BALLAST_NAME = "reserve.ballast"
_CHUNK = 1 << 20
# Device events refused per storage shortage at most: each one holds a place in
# its sender's window of unacknowledged messages (a broker's Receive Maximum), and
# a full window would hold the alarms behind it. Past this, the reserve takes them.
MAX_REFUSED_PER_SHORTAGE = 100


class StorageReserve:
    """The ballast file in the state directory, and whether the disk is short now."""

    def __init__(self, state_dir: Path, size_bytes: int) -> None:
        """Keep ``size_bytes`` in reserve in ``state_dir`` (0: no reserve)."""
        self.path = state_dir / BALLAST_NAME
        self.size_bytes = size_bytes
        self.short = False
        """True from the disk filling until the ballast is in place again."""
        self.reason = ""
        """Why storage is short, for the status."""
        self.refused = 0
        """Device events refused while storage was short (their senders keep them)."""
        self._refused_in_shortage = 0
        self._waiting: list[asyncio.Future[None]] = []
        # ``try_resume`` runs in a worker thread, the waiters in the event loop.
        self._waiting_lock = threading.Lock()
        self._log = RateLimitedLog(logger, interval_s=300)

    def ensure(self) -> bool:
        """Make the ballast if it is missing; False when the disk has no room for it."""
        if self.size_bytes <= 0 or self._complete():
            return True
        try:
            _preallocate(self.path, self.size_bytes)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            return False
        return True

    def refuses(self, kind: EventKind) -> bool:
        """Whether to refuse, now, a device event of ``kind`` that its sender keeps until acked.

        True while storage is short, for a non-alarm, up to ``MAX_REFUSED_PER_SHORTAGE``
        times per shortage; each True is counted. The event loop asks, before the rules.
        A cancel, restore, arm or disarm is never refused: sent again after the
        shortage it would land after the shop's later alarm and close that one.
        """
        if (
            not self.short
            or EVENT_CLASS[kind] is EventClass.ALARM
            or kind in ORDER_BOUND_KINDS
            or self._refused_in_shortage >= MAX_REFUSED_PER_SHORTAGE
        ):
            return False
        self._refused_in_shortage += 1
        self.refused += 1
        return True

    def release(self, reason: str) -> None:
        """The disk is full: free the ballast's room and start the shortage."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if not self.short:
            logger.warning(
                "storage short (%s): reserve released for alarms; other events wait with"
                " their senders",
                reason,
            )
        self.short = True
        self.reason = reason

    def try_resume(self) -> bool:
        """End the shortage if the disk has room for the ballast twice over; True if it ended.

        Blocking (it writes the ballast): call it from a worker thread. The waiters
        of ``shortage_ended`` are woken in their own event loop.
        """
        if not self.short:
            return False
        try:
            free = shutil.disk_usage(self.path.parent).free
            if free < 2 * self.size_bytes or not self.ensure():
                return False
        except OSError as exc:  # a failing card: stay short, say so now and then
            self._log.warning("resume", "cannot make the storage reserve %s: %s", self.path, exc)
            return False
        self._refused_in_shortage = 0
        self.short = False
        self.reason = ""
        logger.info(
            "storage back (%d MB free): reserve made again; all events journalled", free >> 20
        )
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            # A future may only be touched in its loop's thread, and this is a worker's.
            waiter.get_loop().call_soon_threadsafe(_wake, waiter)
        return True

    async def shortage_ended(self) -> None:
        """Return when the next shortage (or the one under way) ends."""
        waiter = asyncio.get_running_loop().create_future()
        with self._waiting_lock:
            self._waiting.append(waiter)
        try:
            await waiter
        finally:
            with self._waiting_lock, contextlib.suppress(ValueError):
                self._waiting.remove(waiter)

    def _complete(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size_bytes
        except FileNotFoundError:
            return False


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _preallocate(path: Path, size: int) -> None:
    """Write ``path`` with ``size`` bytes that the file system has really given it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            # A file system without fallocate: zeros take the room just as well.
            zeros = bytes(_CHUNK)
            for offset in range(0, size, _CHUNK):
                os.write(fd, zeros[: min(_CHUNK, size - offset)])
        os.fsync(fd)
    finally:
        os.close(fd)
