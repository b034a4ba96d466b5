"""Keep a long-lived task running: jittered backoff, logged once down and once recovered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

HOLD_DOWN_S = 2.0
"""A link that stayed up this long was a success: its backoff starts again from
the shortest delay. One dropped sooner (a broker that kicks right after CONNACK)
keeps backing off, so a misbehaving broker is not hammered (decision 58)."""
URGENT_RETRY_S = 1.5
"""While alarms wait for a link, its retries are at most this far apart (jittered
below it): a waiting panic reaches the police within about this long of the
police broker's return, whatever the flaps before (decision 58)."""


class OnChange(Protocol):
    """Told when a supervised component goes down or comes back."""

    def __call__(self, name: str, *, up: bool, detail: str) -> Awaitable[None]:
        """React to ``name`` going down (``up`` False) or recovering."""
        ...


class Linked(Protocol):
    """A component that says when its link is up (set) and down (cleared)."""

    link_up: asyncio.Event


class Urgency(Protocol):
    """Says whether alarms wait for a link, and when a new one starts waiting."""

    def alarms_waiting(self) -> bool:
        """Whether an alarm is waiting for this link now."""
        ...

    async def alarm_arrived(self) -> None:
        """Return when a new alarm for this link is committed."""
        ...


class Backoff:
    """Full-jitter exponential backoff: the n-th delay is uniform in [0, min(cap, base * 2**n)]."""

    def __init__(
        self,
        base_s: float,
        cap_s: float,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """Delays from ``base_s`` doubling up to ``cap_s``; ``uniform`` draws the jitter."""
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._uniform = uniform

    def ceiling(self) -> float:
        """The largest delay the next ``delay()`` may return."""
        return min(self.cap_s, self.base_s * 2.0**self.attempt)

    def delay(self, limit: float = math.inf) -> float:
        """The next delay, at most ``limit``; each one's ceiling doubles until the cap."""
        ceiling = self.ceiling()
        if ceiling < self.cap_s:
            self.attempt += 1
        return self._uniform(0, min(ceiling, limit))

    def reset(self) -> None:
        """Start again from the shortest delay."""
        self.attempt = 0


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    link: Linked | None = None,
    on_change: OnChange | None = None,
    on_retry: Callable[[str, str], None] = lambda _name, _error: None,
    urgency: Urgency | None = None,
    base_delay: float = 0.5,
    max_delay: float = 60.0,
    backoff: Backoff | None = None,
    hold_down_s: float = HOLD_DOWN_S,
) -> None:
    """Run ``run()`` until cancelled, restarting it with jittered exponential backoff.

    Logs a WARNING once when the component goes down and an INFO once when it
    recovers (its ``link.link_up`` is set), and tells ``on_change(name, up, detail)``
    so the gateway can raise a trouble event about its own link. ``on_retry(name,
    error)`` hears every failure, so what is shown as the reason stays current
    while the component stays down.

    A link that stayed up ``hold_down_s`` resets the backoff (``backoff``, if
    given, else one from ``base_delay`` to ``max_delay``). While ``urgency``
    says alarms wait for the link, retries come at most ``URGENT_RETRY_S`` apart,
    and an alarm arriving during a longer pause cuts it short.
    """
    backoff = backoff or Backoff(base_delay, max_delay)
    down = False
    while True:
        up_since: float | None = None
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(_run_once(run), name=f"{name}.run")
            if link is not None:
                up = tg.create_task(link.link_up.wait(), name=f"{name}.link-up")
                await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
                if up.done() and not task.done():
                    up_since = time.monotonic()
                    if down:
                        down = False
                        logger.info("%s recovered", name)
                        if on_change:
                            await on_change(name, up=True, detail="recovered")
                else:
                    up.cancel()
        error = task.result()
        if link is not None:
            link.link_up.clear()
        if up_since is not None and time.monotonic() - up_since >= hold_down_s:
            backoff.reset()
        on_retry(name, error)
        if not down:
            down = True
            logger.warning("%s down: %s; retrying with backoff", name, error)
            if on_change:
                await on_change(name, up=False, detail=error)
        await _pause(backoff, urgency)


async def _pause(backoff: Backoff, urgency: Urgency | None) -> None:
    """Wait the next backoff delay; an alarm waiting or arriving shortens it."""
    if urgency is not None and _alarms_waiting(urgency):
        await asyncio.sleep(backoff.delay(URGENT_RETRY_S))
        return
    delay = backoff.delay()
    if urgency is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await urgency.alarm_arrived()
            await asyncio.sleep(backoff.delay(URGENT_RETRY_S))


async def _run_once(run: Callable[[], Awaitable[None]]) -> str:
    """Run once; return why it stopped (it is meant to run until cancelled)."""
    try:
        await run()
    except (GatewayError, OSError) as exc:
        return str(exc) or type(exc).__name__
    except Exception as exc:
        logger.exception("unexpected failure")
        return f"unexpected {type(exc).__name__}: {exc}"
    return "stopped"


def _alarms_waiting(urgency: Urgency) -> bool:
    """Whether alarms wait; a journal that cannot be read says yes (retry soon, never crash)."""
    try:
        return urgency.alarms_waiting()
    except (sqlite3.Error, GatewayError) as exc:
        logger.warning("cannot tell whether alarms wait: %s", exc)
        return True
