"""Logging, and caps on what one source may send, that hold under a flood of bad input."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable


class RateLimitedLog:
    """Logs at most one message per key per ``interval_s``, then how many it held back."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``logger``."""
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        """Log ``msg`` unless a message with ``key`` was logged within the interval."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        self._logger.warning(msg, *args)
        if held:
            self._logger.warning("%d more like it were held back", held)


class WindowCap:
    """At most ``limit`` passes per key in each ``window_s`` (a fixed window, restarted per key)."""

    def __init__(
        self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Allow ``limit`` per key per ``window_s``."""
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, passes)

    def allow(self, key: str, at: float | None = None) -> bool:
        """Count one pass for ``key`` at ``at`` (else now); False once its window is used up."""
        now = self._clock() if at is None else at
        start, passes = self._windows.get(key, (now, 0))
        if now - start >= self._window:
            start, passes = now, 0
        if passes >= self._limit:
            return False
        self._windows[key] = (start, passes + 1)
        return True


class Outages:
    """The spans of wall-clock time a link was down: the device times a backlog may carry.

    A span runs from ``slack_s`` before the link was lost (it may have been dead
    that long before anyone noticed) to the moment it came up again. Only the
    last ``keep`` spans are kept: a backlog older than those has been read.

    Spans are kept on the monotonic clock and read in wall-clock time when asked:
    a step of the gateway's clock (NTP after a boot without a real-time clock)
    moves them with it, so a loss noted before the step neither opens a day-long
    span nor leaves an inverted one.
    """

    def __init__(self, slack_s: float, *, lost_at: float | None = None, keep: int = 8) -> None:
        """Start down since ``lost_at`` (seconds since the epoch), or up with no outage known.

        A ``lost_at`` in the future (a clock now behind the one that wrote it) is no
        outage known: nothing counts as a backlog's rather than too much.
        """
        self._slack = slack_s
        known = lost_at is not None and lost_at <= time.time()
        self._lost_at = _monotonic(lost_at) if known and lost_at is not None else None
        self._spans: deque[tuple[float, float]] = deque(maxlen=keep)

    def lost(self, at: float) -> None:
        """The link went down at ``at``; a failed attempt to bring it back does not move that."""
        if self._lost_at is None:
            self._lost_at = _monotonic(at)

    def up(self, at: float) -> None:
        """The link is up again at ``at``: what was sent since it was lost is a backlog."""
        if self._lost_at is not None:
            self._spans.append((self._lost_at - self._slack, _monotonic(at)))
            self._lost_at = None

    def covers(self, at: float) -> bool:
        """Whether ``at`` falls inside an outage: an event sent then waited for us."""
        moment = _monotonic(at)
        return any(start <= moment <= end for start, end in self._spans)


def _monotonic(wall: float) -> float:
    """The monotonic clock's reading at wall-clock time ``wall``, by the clocks' offset now."""
    return wall - (time.time() - time.monotonic())
