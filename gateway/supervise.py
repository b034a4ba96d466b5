"""Keep a long-lived task running: jittered backoff, logged once down and once recovered."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

STABLE_S = 30.0


class OnChange(Protocol):
    """Told when a supervised component goes down or comes back."""

    def __call__(self, name: str, *, up: bool, detail: str) -> Awaitable[None]:
        """React to ``name`` going down (``up`` False) or recovering."""
        ...


class Linked(Protocol):
    """A component that says when its link is up (set) and down (cleared)."""

    link_up: asyncio.Event


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    link: Linked | None = None,
    on_change: OnChange | None = None,
    on_retry: Callable[[str, str], None] = lambda _name, _error: None,
    base_delay: float = 0.5,
    max_delay: float = 60.0,
) -> None:
    """Run ``run()`` until cancelled, restarting it with jittered exponential backoff.

    Logs a WARNING once when the component goes down and an INFO once when it
    recovers (its ``link.link_up`` is set), and tells ``on_change(name, up, detail)``
    so the gateway can raise a trouble event about its own link. ``on_retry(name,
    error)`` hears every failure, so what is shown as the reason stays current
    while the component stays down.
    """
    attempt = 0
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
        # Only a link that stayed up a while resets the backoff: one that is
        # kicked right after connecting must not hammer the broker.
        if up_since is not None and time.monotonic() - up_since >= STABLE_S:
            attempt = 0
        on_retry(name, error)
        if not down:
            down = True
            logger.warning("%s down: %s; retrying with backoff", name, error)
            if on_change:
                await on_change(name, up=False, detail=error)
        delay = random.uniform(0, min(max_delay, base_delay * 2**attempt))  # noqa: S311 - jitter
        attempt += 1
        await asyncio.sleep(delay)


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
