"""Where every event enters: rules first (neighbour alerts go out at once), then the journal.

While storage is short, a device event its sender keeps until acknowledged may
be refused here, before the rules: it has no effect at all until the sender
offers it again (decision 69).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.actions import Applied, RuleActions
from gateway.events import GATEWAY_MADE_KINDS, TEST_ATTR, Event
from gateway.journal import Journal, OnDurable
from gateway.ratelimit import RateLimitedLog
from rules.engine import RuleEngine

logger = logging.getLogger(__name__)

# A derived event may derive once more (door open -> intrusion -> its actions), no further.
MAX_DERIVED_DEPTH = 2


class Intake:
    """The ``Emit`` the drivers call, and the way in for the gateway's own events.

    The rules run as soon as the event is parsed: a neighbour alert goes out
    without waiting for the disk or the police link; the durable append follows,
    to the forwarders the rules chose. The gateway's own events (responses,
    command answers, troubles) and alarms are never refused.
    """

    def __init__(self, journal: Journal, engine: RuleEngine, actions: RuleActions) -> None:
        """Judge events with ``engine``, act with ``actions``, keep them in ``journal``."""
        self._journal = journal
        self.engine = engine
        self.actions = actions
        self.refused = 0
        self.rules_crashed = 0
        self.mark: Callable[[Event], Event] | None = None
        """Marks the events of shops under walk test (``gateway/walk_test.py``)."""
        self._log = RateLimitedLog(logger, interval_s=60)

    async def __call__(
        self,
        event: Event,
        *,
        on_durable: OnDurable | None = None,
        origin_key: str | None = None,
    ) -> None:
        """Accept ``event`` from a driver; repeats of a recent ``origin_key`` are dropped.

        While storage is short, an event with ``on_durable`` (its sender keeps it
        until then) may be refused: no rules run, ``on_durable`` never runs, and the
        sender offers it again once the shortage is over.
        """
        if event.kind in GATEWAY_MADE_KINDS:
            # A device may not forge what only the gateway says (responses, area alerts...).
            self.refused += 1
            if on_durable is not None:
                on_durable()
            return
        if origin_key is not None and not self._journal.claim(origin_key, on_durable):
            return
        if on_durable is not None and self._journal.reserve.refuses(event.kind):
            # Refused, it must do nothing: a door opening in an armed shop raised its
            # intrusion and siren here once, and again when the broker sent it back.
            if origin_key is not None:
                self._journal.release(origin_key)
            return
        if TEST_ATTR in event.attrs:
            # Only a walk test makes an event a test: a panel's own "test" would silence
            # its alarm's neighbour alert (a bug or a prank), so it is not believed.
            event = event.model_copy(
                update={"attrs": {k: v for k, v in event.attrs.items() if k != TEST_ATTR}}
            )
        if self.mark is not None:
            event = self.mark(event)
        try:
            await self._take(event, on_durable=on_durable, origin_key=origin_key)
        except BaseException:
            # Cancelled while the journal was backed up: the broker sends it again.
            if origin_key is not None:
                self._journal.release(origin_key)
            raise

    async def gateway_event(
        self,
        event: Event,
        *,
        routes: tuple[str, ...] = (),
        on_durable: OnDurable | None = None,
    ) -> None:
        """Accept an event the gateway made itself; ``routes`` add to the rules' forwarders."""
        await self._take(event, routes=routes, on_durable=on_durable)

    async def _take(
        self,
        event: Event,
        *,
        on_durable: OnDurable | None = None,
        origin_key: str | None = None,
        routes: tuple[str, ...] = (),
        depth: int = 0,
    ) -> None:
        applied = self._judged(event)
        await self._journal.append(
            event if applied is None else applied.event,
            origin_key=origin_key,
            on_durable=on_durable,
            # Rules that crashed chose nothing: the journal's own routes still reach the police.
            routes=None if applied is None else tuple(dict.fromkeys(applied.routes + routes)),
        )
        if applied is None:
            return
        if depth < MAX_DERIVED_DEPTH:
            for derived, extra in applied.derived:
                await self._take(derived, routes=extra, depth=depth + 1)

    def _judged(self, event: Event) -> Applied | None:
        """The rules' verdict on ``event``; None when they raised (the event is kept anyway)."""
        try:
            return self.actions.apply(event, self.engine.evaluate(event))
        except Exception as exc:  # noqa: BLE001 - a rule bug must not lose an alarm
            self.rules_crashed += 1
            self._log.warning(
                "crash", "rules failed on %s %s (%r); journalled as is", event.kind, event.id, exc
            )
            return None
