"""What fired rules do: alert neighbours, route to the police, raise events, sirens, escalation.

Neighbours of other gateways are reached through the police broker (the mesh);
an area alert tells every shop of a grid cell.

``apply`` runs on the hot path before the journal write and never waits; the
actions that take time (sirens, escalation timers) run as named tasks in
``run``'s TaskGroup and report failures as journalled events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.config.model import GatewayConfig
from gateway.events import (
    EVENT_CLASS,
    TEST_ATTR,
    Event,
    EventClass,
    EventKind,
    Source,
    new_event_id,
    utc_now,
)
from gateway.mqtt.notify import BlockPublisher
from gateway.notice_sender import NoticeSender
from gateway.open_alerts import RECENT_ALERTS, OpenAlert, OpenAlerts
from gateway.ratelimit import RateLimitedLog
from gateway.rule_engine import notice_places
from gateway.state_file import write_atomically
from protocols.mesh_message import MeshMessage
from rules.area import AreaTrigger, AreaWatch
from rules.arming import ArmSchedule
from rules.engine import Firing
from rules.geo import Neighbour, neighbour_table
from rules.models import AreaAlert, Escalate, Forward, NotifyNearest, Raise, Rule, Siren
from rules.neighbour_alert import NeighbourAlert, NeighbourAlerts, Notice

logger = logging.getLogger(__name__)

PRIORITY_ORDER = (EventClass.ROUTINE, EventClass.STATUS, EventClass.TROUBLE, EventClass.ALARM)
ALWAYS_FORWARDED = frozenset(
    {kind for kind, cls in EVENT_CLASS.items() if cls is EventClass.ALARM}
    | {EventKind.CANCEL, EventKind.RESPONSE}
)
"""Kinds that reach the forwarders that take them even when no rule forwards them."""

Emit = Callable[..., Awaitable[None]]
"""``emit(event, routes=...)``: hand a gateway-made event to the intake."""
SoundSiren = Callable[[str, float], Awaitable[bool]]
ActionT = TypeVar("ActionT")


@dataclass
class Applied:
    """An event after its rules: what to journal, where to forward it, what it raised."""

    event: Event
    routes: tuple[str, ...]
    derived: list[tuple[Event, tuple[str, ...]]] = field(default_factory=list)


@dataclass
class _Outcome:
    """What the fired actions of one event add up to."""

    extra: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, None] = field(default_factory=dict)
    routes: dict[str, None] = field(default_factory=dict)
    priority: EventClass | None = None
    derived: list[tuple[Event, tuple[str, ...]]] = field(default_factory=list)

    def forward(self, to: Iterable[str], priority: EventClass | None, kind: EventKind) -> None:
        self.routes.update(dict.fromkeys(to))
        wanted = priority or EVENT_CLASS[kind]
        if self.priority is None or PRIORITY_ORDER.index(wanted) > PRIORITY_ORDER.index(
            self.priority
        ):
            self.priority = wanted

    def applied(self, event: Event) -> Applied:
        if self.rules:
            self.extra["rules"] = list(self.rules)
        if self.priority is not None:
            self.extra["priority"] = self.priority.value
        if self.extra:
            event = event.model_copy(update={"attrs": {**event.attrs, **self.extra}})
        return Applied(event, tuple(self.routes), self.derived)


class RuleActions:
    """Carries out the actions of fired rules for one gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        rules: Sequence[Rule],
        *,
        schedule: ArmSchedule,
        publisher: BlockPublisher,
        routes: dict[EventKind, tuple[str, ...]],
        arming_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Act for ``config``'s gateway; ``routes`` are the forwarders that take each kind.

        Early arm/disarm overrides are kept in ``arming_file`` across restarts.
        Notices expire by ``wall_clock`` (the police's time when the gateway's is off).
        """
        self._gid = config.gateway.id
        self._publisher = publisher
        self._routes = routes
        self._clock = clock
        self._wall_clock = wall_clock
        alert = config.neighbour_alert
        self._alert_config = alert
        self.alerts = NeighbourAlerts(
            {},
            cooldown_s=alert.cooldown_s,
            expires_s=alert.expires_s,
            clock=clock,
            wall=wall_clock,
        )
        self.notices = NoticeSender(
            self._gid,
            publisher,
            rate=config.rules.max_notices_per_s,
            by_mqtt="mqtt" in alert.channels,
            spawn=self._spawn,
            clock=clock,
        )
        self.reconfigure(config, rules, schedule=schedule)
        self._area = AreaWatch()
        self.open_alerts = OpenAlerts()
        # Per (gateway, alert): the own shops already told, so an alert the sender's cap
        # split over several messages reaches every shop, and each shop once.
        self._relayed: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        self._escalations: dict[str, asyncio.Task[None]] = {}
        self._resumed: list[tuple[Event, Escalate, str, str | None, float]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._arming_file = arming_file
        self._arming_changed = asyncio.Event()
        if arming_file is not None:
            self._restore_arming(arming_file)
        self.emit: Emit | None = None
        self.siren: SoundSiren | None = None
        self._log = RateLimitedLog(logger, interval_s=10)
        self.area_alerts = 0
        self.relayed = 0
        self.mesh_resent = 0

    def reconfigure(
        self, config: GatewayConfig, rules: Sequence[Rule], *, schedule: ArmSchedule
    ) -> None:
        """Take ``config``'s shops and ``rules`` (at start and on reload).

        Open alerts, cool-downs, escalation timers and arm overrides are kept.
        """
        self._config = config
        self._schedule = schedule
        self._cancel_window_s = config.rules.cancel_window_s
        self._own = {s.id: s for s in config.shops}
        self._places = [*config.shops, *config.other_shops]
        self._gateway_of = {s.id: self._gid for s in config.shops} | {
            o.id: o.gateway_id for o in config.other_shops
        }
        self.notices.reach(self._gateway_of, {p.id: p.grid.large for p in self._places})
        self.alerts.names = {p.id: p.name for p in self._places}
        self._nearest: dict[tuple[int, float, bool], dict[str, list[Neighbour]]] = {}
        notify = [a for rule in rules for a in rule.do if isinstance(a, NotifyNearest)]
        self._widest: dict[bool, tuple[int, float]] = {}
        for count, radius_m, other_gateways in map(self._reach, notify):
            widest = self._widest.get(other_gateways, (0, 0.0))
            self._widest[other_gateways] = (max(widest[0], count), max(widest[1], radius_m))
        for action in notify:
            self._table(action)  # computed now, not on the first panic
        self._rules = {rule.name: rule for rule in rules}

    # --- the hot path --------------------------------------------------------------

    def apply(self, event: Event, firings: Iterable[Firing]) -> Applied:
        """Do the immediate actions of ``firings`` and say where ``event`` goes; never waits."""
        outcome = _Outcome()
        test = event.attrs.get(TEST_ATTR) is True
        if test:
            # A walk test's event only goes to the police, as a test: no neighbour, siren or state.
            firings = [f for f in firings if isinstance(f.action, Forward)]
        for firing in firings:
            outcome.rules[firing.rule] = None
            action = firing.action
            if isinstance(action, NotifyNearest):
                if "alert_id" not in outcome.extra and (alert_id := self._notify(event, action)):
                    outcome.extra["alert_id"] = alert_id
            elif isinstance(action, Forward):
                outcome.forward(action.to or self._routes[event.kind], action.priority, event.kind)
            elif isinstance(action, Raise):
                outcome.derived.append((self._made(action.kind, event, firing.rule), ()))
            elif isinstance(action, AreaAlert):
                area = self._area_alert(event, action, firing.rule)
                if area is not None:
                    outcome.derived.append((area, ()))
            elif isinstance(action, Siren):
                self._spawn(self._sound(event, action, firing.rule), f"siren[{event.id}]")
            else:
                self._start_escalation(event, action, firing.rule, outcome.extra.get("alert_id"))
        return self._finished(event, outcome, test=test)

    def _finished(self, event: Event, outcome: _Outcome, *, test: bool) -> Applied:
        """``event`` with what its fired actions add up to; one log line if it is an alarm."""
        if not outcome.routes and event.kind in ALWAYS_FORWARDED:
            # Rules add routes and priority; they cannot keep these kinds from the police.
            outcome.forward(self._routes[event.kind], None, event.kind)
        if not test:
            outcome.extra.update(self._state_change(event))
        alert = self.open_alerts.get(str(outcome.extra.get("alert_id")))
        if alert is not None:
            # Journalled and forwarded with the event: who was told, for `lianfang events`
            # and for the police (a capped notice still counts: it goes out as room comes).
            outcome.extra["alerted"] = sorted(alert.alerted)
        if EVENT_CLASS[event.kind] is EventClass.ALARM:
            logger.info(
                "alarm %s %s at shop %s: %d shops alerted%s",
                event.kind.value,
                event.id,
                event.shop_id,
                len(alert.alerted) if alert else 0,
                " (walk test)" if test else "",
            )
        return outcome.applied(event)

    def _reach(self, action: NotifyNearest) -> tuple[int, float, bool]:
        """How many shops ``action`` alerts, how far, and whether other gateways' shops count."""
        return (
            action.count or self._alert_config.count,
            action.radius_m or self._alert_config.radius_m,
            action.other_gateways,
        )

    def _table(self, action: NotifyNearest) -> dict[str, list[Neighbour]]:
        key = self._reach(action)
        table = self._nearest.get(key)
        if table is None:
            count, radius_m, other_gateways = key
            # One search per place set, at the most shops and the farthest any rule asks:
            # the shops within a smaller radius are the first of those within a larger one,
            # so every rule's table is a filtered, sliced copy of the widest.
            most, farthest = self._widest.get(other_gateways, (count, radius_m))
            widest = (max(most, count), max(farthest, radius_m), other_gateways)
            full = self._nearest.get(widest)
            if full is None:
                places = notice_places(self._config, other_gateways=other_gateways)
                full = neighbour_table(
                    self._own.values(), places, count=widest[0], radius_m=widest[1]
                )
                self._nearest[widest] = full
            table = full if widest == key else _narrowed(full, count, radius_m)
            self._nearest[key] = table
        return table

    def _notify(self, event: Event, action: NotifyNearest) -> str | None:
        """Alert the nearest shops of ``event``'s shop; the alert id, if one went out."""
        neighbours = self._table(action).get(event.shop_id or "", [])
        alert = self.alerts.alert_for(event, neighbours)
        if alert is None:
            return None
        self.notices.send_capped(alert)
        alerted = frozenset(n.shop_id for n in alert.notices)
        origin = event.shop_id or ""
        self.open_alerts.remember(
            OpenAlert(alert.alert_id, event.id, origin, self._clock(), alerted)
        )
        return alert.alert_id

    def _made(
        self, kind: EventKind, cause: Event, rule: str, attrs: dict[str, Any] | None = None
    ) -> Event:
        """A gateway-made event about ``cause``'s shop and device."""
        return Event(
            id=new_event_id(),
            gateway_id=self._gid,
            shop_id=cause.shop_id,
            device_id=cause.device_id,
            zone=cause.zone,
            kind=kind,
            occurred_at=cause.occurred_at,
            received_at=utc_now(),
            source=Source(driver="rules", ref=rule),
            attrs={"cause_event_id": cause.id, "rule": rule, **(attrs or {})},
        )

    def _area_count(self, event: Event, action: AreaAlert) -> AreaTrigger | None:
        """Count ``event`` in its shop's cell; the trigger if the cell now fires."""
        shop = self._own.get(event.shop_id or "")
        if shop is None:
            return None
        return self._area.count(
            getattr(shop.grid, action.grid.value),
            event.id,
            shop.id,
            event.occurred_at,
            alarms=action.alarms,
            window_s=action.window_s,
        )

    def _area_alert(self, event: Event, action: AreaAlert, rule: str) -> Event | None:
        trigger = self._area_count(event, action)
        if trigger is None:
            return None
        cell = trigger.cell
        self.area_alerts += 1
        alert_id = new_event_id()
        expires = (self._wall_clock() + timedelta(seconds=self._alert_config.expires_s)).isoformat()
        body = {
            "alert_id": alert_id,
            "kind": "area_alert",
            "grid": action.grid.value,
            "cell": cell,
            "from_shop_ids": [sid for _, sid in trigger.alarms],
            "event_ids": [eid for eid, _ in trigger.alarms],
            "occurred_at": event.occurred_at.isoformat(),
            "expires_at": expires,
        }
        payload = json.dumps(body, separators=(",", ":")).encode()
        members = [p.id for p in self._places if getattr(p.grid, action.grid.value) == cell]
        notices = tuple(Notice(sid, payload) for sid in members)
        self.notices.send(
            NeighbourAlert(
                alert_id, event.id, notices, self._clock() + self._alert_config.expires_s
            )
        )
        return self._made(
            EventKind.AREA_ALERT,
            event,
            rule,
            {
                "alert_id": alert_id,
                "grid": action.grid.value,
                "cell": cell,
                "alarms": [{"event_id": e, "shop_id": s} for e, s in trigger.alarms],
                "shops_alerted": len(notices),
            },
        )

    def _state_change(self, event: Event) -> dict[str, Any]:
        """Arm state follows arm/disarm events; a cancel names the alert it cancels."""
        if event.shop_id is None:
            return {}
        if event.kind in (EventKind.ARM, EventKind.DISARM):
            self._schedule.set(
                event.shop_id, armed=event.kind is EventKind.ARM, at=event.occurred_at
            )
            self._arming_changed.set()
            return {}
        if event.kind is EventKind.CANCEL:
            return self._cancel_attrs(event.shop_id)
        return {}

    def _cancel_attrs(self, shop_id: str) -> dict[str, Any]:
        alert = self.open_alerts.latest(shop_id)
        if alert is None:
            return {"alert_id": None, "within_cancel_window": False}
        within = self._clock() - alert.at <= self._cancel_window_s
        return {"alert_id": alert.alert_id, "within_cancel_window": within}

    # --- responses and acknowledgements ------------------------------------------------

    def response_event(self, shop_id: str, alert_id: str, response: str) -> Event:
        """The journalled form of a shop's answer to an alert (counted per alert)."""
        now = utc_now()
        attrs: dict[str, Any] = {"alert_id": alert_id, "response": response}
        alert = self.open_alerts.get(alert_id)
        if alert is not None:
            attrs["origin_shop_id"] = alert.shop_id
            attrs["alert_event_id"] = alert.event_id
            # Only a shop that was alerted counts as coming or stops the escalation: not the
            # origin (a robber can make it say "safe"), not a shop that was never told.
            attrs["alerted"] = shop_id in alert.alerted
            if attrs["alerted"]:
                alert.responses[shop_id] = response
                if response in ("coming", "safe"):
                    self.acknowledge(alert.event_id)
            attrs["coming"] = sum(r == "coming" for r in alert.responses.values())
            if shop_id == alert.shop_id and response == "cancel":
                attrs.update(self._cancel_attrs(shop_id))
        else:
            attrs["known_alert"] = False
        return Event(
            id=new_event_id(),
            gateway_id=self._gid,
            shop_id=shop_id,
            device_id="response",
            kind=EventKind.RESPONSE,
            occurred_at=now,
            received_at=now,
            source=Source(driver="responses", ref=alert_id),
            attrs=attrs,
        )

    def acknowledge(self, event_or_alert_id: str) -> bool:
        """Stop the escalation of an event (by its id or its alert's id); whether one ran."""
        alert = self.open_alerts.get(event_or_alert_id)
        task = self._escalations.pop(alert.event_id if alert else event_or_alert_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    def relay(self, message: MeshMessage) -> int:
        """Publish a mesh message's notices for this gateway's shops, each shop once per alert.

        Relayed notices count against the same global cap as the gateway's own.
        """
        if message.from_gateway == self._gid:
            return 0
        key = (message.from_gateway, message.alert_id)
        told = self._relayed.get(key)
        if told is None:
            told = self._relayed[key] = set()
            if len(self._relayed) > RECENT_ALERTS:
                self._relayed.popitem(last=False)
        notices = tuple(
            Notice(n.shop_id, json.dumps(n.notice, separators=(",", ":")).encode())
            for n in message.notices
            if n.shop_id in self._own and n.shop_id not in told
        )
        told.update(n.shop_id for n in notices)
        if notices:
            event_id = str(message.notices[0].notice.get("event_id", ""))
            expires = self._clock() + self._alert_config.expires_s
            self.notices.send_capped(NeighbourAlert(message.alert_id, event_id, notices, expires))
            self.relayed += len(notices)
        return len(notices)

    # --- soft state rebuilt after a restart (gateway/soft_state.py reads the journal) --------

    def fired(self, event: Event, kind: type[ActionT]) -> list[tuple[str, ActionT]]:
        """The ``kind`` actions of the rules a journalled ``event`` fired, with their rule."""
        return [
            (name, action)
            for name in event.attrs.get("rules", ())
            if (rule := self._rules.get(name)) is not None
            for action in rule.do
            if isinstance(action, kind)
        ]

    def reopen(self, event: Event, age_s: float) -> None:
        """Reopen the alert ``event`` sent ``age_s`` ago: cancel window, cool-down, shops told.

        While it has not expired, its notices go out again to the shops that may
        not have had them: other gateways' shops (a mesh queue is memory only; the
        receiving gateway relays an alert once) and own shops the block broker
        never confirmed (the gateway died before their PUBACKs).
        """
        alert_id, shop = event.attrs.get("alert_id"), event.shop_id
        notify = self.fired(event, NotifyNearest)
        if not isinstance(alert_id, str) or shop is None or not notify:
            return
        neighbours = self._table(notify[0][1]).get(shop, [])
        at = self._clock() - age_s
        alerted = frozenset(n.shop_id for n in neighbours)
        self.open_alerts.remember(OpenAlert(alert_id, event.id, shop, at, alerted))
        self.alerts.alerted_at(shop, at)
        left_s = self._alert_config.expires_s - age_s
        mine = [n for n in neighbours if self._gateway_of[n.shop_id] == self._gid]
        away = [n for n in neighbours if n not in mine] if self.notices.mesh is not None else []
        # Own shops told by SMS only are not owed anything: a restart never texts again.
        confirmed = self._publisher.confirmed(alert_id) if self.notices.by_mqtt else alerted
        owed = [*away, *(n for n in mine if n.shop_id not in confirmed)]
        if left_s > 0 and owed:
            expires = self._wall_clock() + timedelta(seconds=left_s)
            notices = self.alerts.notices(event, owed, alert_id, expires)
            self.notices.send(NeighbourAlert(alert_id, event.id, notices, self._clock() + left_s))
            self.mesh_resent += len(away)
            logger.info("alert %s: %d notices owed from before the restart", alert_id, len(owed))

    def resume_escalation(self, event: Event, rule: str, action: Escalate, left_s: float) -> None:
        """Escalate ``event`` in ``left_s`` (at least at once) when the actions start."""
        alert_id = event.attrs.get("alert_id")
        self._resumed.append(
            (event, action, rule, alert_id if isinstance(alert_id, str) else None, max(left_s, 0))
        )

    def recount_area(self, event: Event) -> None:
        """Count a journalled alarm in its cell's window again; its area alert was sent then."""
        for _, action in self.fired(event, AreaAlert):
            self._area_count(event, action)

    # --- actions that take time -----------------------------------------------------------

    async def run(self) -> None:
        """Run sirens, escalation timers and the keeping of arm state until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for resumed in self._resumed:
                self._start_escalation(*resumed)
            self._resumed.clear()
            try:
                await self._keep_arming()
            finally:
                self._tg = None

    def _restore_arming(self, path: Path) -> None:
        try:
            self._schedule.restore(json.loads(path.read_text()))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            logger.warning("ignoring %s: %s", path, exc)

    async def _keep_arming(self) -> None:
        """Write the arm overrides after each change, off the hot path; idle without a file."""
        while True:
            await self._arming_changed.wait()
            self._arming_changed.clear()
            if self._arming_file is None:
                continue
            text = json.dumps(self._schedule.saved())
            try:
                await asyncio.to_thread(write_atomically, self._arming_file, text)
            except OSError as exc:  # arming still works; only its memory across restarts is lost
                self._log.warning("arming-file", "cannot write %s: %s", self._arming_file, exc)

    def _spawn(self, work: Coroutine[None, None, None], name: str) -> asyncio.Task[None] | None:
        if self._tg is None:
            self._log.warning("not-running", "action %s dropped: actions are not running", name)
            work.close()
            return None
        return self._tg.create_task(work, name=name)

    async def _sound(self, event: Event, action: Siren, rule: str) -> None:
        shop = event.shop_id if action.shop == "origin" else action.shop
        if shop is None:
            return
        try:
            sounded = self.siren is not None and await self.siren(shop, action.seconds)
            reason = "no siren driver drives this shop"
        except Exception as exc:  # noqa: BLE001 - any driver failure is journalled, never fatal
            sounded, reason = False, f"siren failed: {exc!r}"[:256]
        if not sounded and self.emit is not None:
            failed = self._made(
                EventKind.ACTION_FAILED,
                event,
                rule,
                {"action": "siren", "siren_shop_id": shop, "reason": reason},
            )
            await self.emit(failed)

    def _start_escalation(
        self,
        event: Event,
        action: Escalate,
        rule: str,
        alert_id: str | None,
        wait_s: float | None = None,
    ) -> None:
        """Escalate ``event`` after ``action.after_s``, or ``wait_s`` (what a restart left)."""
        wait_s = action.after_s if wait_s is None else wait_s
        work = self._escalate(event, action, rule, alert_id, wait_s)
        task = self._spawn(work, f"escalate[{event.id}]")
        if task is not None:
            self._escalations[event.id] = task

    async def _escalate(
        self, event: Event, action: Escalate, rule: str, alert_id: str | None, wait_s: float
    ) -> None:
        await asyncio.sleep(wait_s)
        self._escalations.pop(event.id, None)
        if self.emit is not None:
            escalation = self._made(
                EventKind.ESCALATION,
                event,
                rule,
                {"after_s": action.after_s, "alert_id": alert_id, "unacknowledged": True},
            )
            await self.emit(escalation, routes=tuple(action.to or ()))


def _narrowed(
    table: dict[str, list[Neighbour]], count: int, radius_m: float
) -> dict[str, list[Neighbour]]:
    """The first ``count`` of each shop's neighbours within ``radius_m``, from a wider table."""
    return {
        shop: [n for n in found if n.distance_m <= radius_m][:count]
        for shop, found in table.items()
    }
