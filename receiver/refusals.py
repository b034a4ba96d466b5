"""What the centre refused, logged per source at a readable rate: 10 MB of noise is a few lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

REFUSAL_LOG_INTERVAL_S = 60.0
"""One line per source per interval at most."""
MAX_SOURCES = 4096
"""Sources remembered at once; past it, those with nothing held back are forgotten."""


@dataclass
class _Held:
    since: float
    """Start of the source's current interval (when its last line was logged)."""
    count: int = 0
    last: str = ""


class RefusalLog:
    """Logs a source's first refusal at once, then one line per interval with the count held back.

    What is held back is counted into the line of the source's next refusal
    after its interval; the centre's ``rejected`` counters keep every total.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = REFUSAL_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Log to ``logger`` at most once per ``interval_s`` per source."""
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._sources: dict[str, _Held] = {}

    def refused(self, source: str, what: str) -> None:
        """``source`` had ``what`` refused (a frame, a connection): log it or count it."""
        now = self._clock()
        held = self._sources.get(source)
        if held is not None and now - held.since < self._interval_s:
            held.count += 1
            held.last = what
            return
        if held is not None and held.count:
            self._logger.warning(
                "%s: refused %d in the last %.0f s; the latest: %s",
                source,
                held.count + 1,
                now - held.since,
                what,
            )
        else:
            self._logger.warning("%s: refused %s", source, what)
        if held is None and len(self._sources) >= MAX_SOURCES:
            self._forget_quiet()
        self._sources[source] = _Held(since=now)

    def _forget_quiet(self) -> None:
        for source in [s for s, held in self._sources.items() if not held.count]:
            del self._sources[source]
