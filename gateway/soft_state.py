"""What a restart would forget, rebuilt from the journal at start.

Open alerts (their cancel window, the shops they told and their answers),
escalation timers, area-alert windows and the notices for other gateways'
shops live in memory. The journal already holds every event with the rules it
fired (``attrs.rules``) and the alert it sent (``attrs.alert_id``), so they are
read back from it rather than kept in a file of their own: a restart in the
middle of an escalation still escalates, at the original deadline. Walk-test
events are skipped: they had no local effect to rebuild.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError
from ulid import ULID

from gateway.actions import RuleActions
from gateway.config.model import GatewayConfig
from gateway.errors import JournalError
from gateway.events import TEST_ATTR, Event, EventKind, utc_now
from gateway.journal_schema import connect
from rules.models import AreaAlert, Escalate, NotifyNearest, Rule

logger = logging.getLogger(__name__)

MAX_LATE_ESCALATION_S = 3600.0
"""An escalation whose deadline passed while the gateway was down goes out at once
if it is at most this late; an older one would only confuse the police."""
ULID_CHARS = 26
ULID_TIME_CHARS = 10
"""A ULID's first ten characters are its millisecond timestamp, so ids sort by time."""
ANSWER_KINDS = (EventKind.RESPONSE, EventKind.COMMAND_ACK, EventKind.ESCALATION)


@dataclass
class Rebuilt:
    """What was rebuilt, for the start-up log."""

    alerts: int = 0
    answers: int = 0
    escalations: int = 0
    area_alarms: int = 0

    def __bool__(self) -> bool:
        """Whether anything was rebuilt."""
        return any((self.alerts, self.answers, self.escalations, self.area_alarms))


def rebuild(
    actions: RuleActions,
    config: GatewayConfig,
    rules: Sequence[Rule],
    *,
    now: datetime | None = None,
) -> Rebuilt:
    """Give ``actions`` back the soft state of the events journalled before this start."""
    now = now or utc_now()
    alert_s = max(
        [config.neighbour_alert.expires_s, config.rules.cancel_window_s]
        + [a.after_s for r in rules for a in r.do if isinstance(a, Escalate)]
    )
    area_s = max([a.window_s for r in rules for a in r.do if isinstance(a, AreaAlert)], default=0)
    kinds = {
        kind
        for r in rules
        if any(isinstance(a, NotifyNearest | Escalate | AreaAlert) for a in r.do)
        for kind in r.when.kinds
    }
    try:
        events = list(
            journalled_since(
                config.journal_path,
                now - timedelta(seconds=max(alert_s + MAX_LATE_ESCALATION_S, area_s)),
                {*kinds, *ANSWER_KINDS},
            )
        )
    except (JournalError, sqlite3.Error, ValidationError) as exc:
        logger.warning("alerts and timers of before the restart are lost: %s", exc)
        return Rebuilt()
    return _replay(actions, events, now, alert_s)


def _replay(actions: RuleActions, events: list[Event], now: datetime, alert_s: float) -> Rebuilt:
    rebuilt = Rebuilt()
    # An escalation is over once it went out, or an alerted shop or the police acknowledged.
    closed = {str(e.attrs.get(attr)) for e in events if (attr := _closes(e)) is not None}
    for event in events:
        if event.attrs.get(TEST_ATTR) is True:
            continue  # a walk test alerted no one, escalates nothing and counts in no area
        if event.kind is EventKind.RESPONSE:
            actions.open_alerts.reanswer(event)
            rebuilt.answers += 1
        elif event.kind not in ANSWER_KINDS:
            age_s = (now - event.received_at).total_seconds()
            _replay_alarm(actions, event, age_s, alert_s=alert_s, closed=closed, rebuilt=rebuilt)
    return rebuilt


def _replay_alarm(
    actions: RuleActions,
    event: Event,
    age_s: float,
    *,
    alert_s: float,
    closed: set[str],
    rebuilt: Rebuilt,
) -> None:
    """Count an alarm in its area again, reopen its alert, resume its escalation."""
    if actions.fired(event, AreaAlert):
        actions.recount_area(event)
        rebuilt.area_alarms += 1
    if age_s <= alert_s and event.attrs.get("alert_id"):
        actions.reopen(event, age_s)
        rebuilt.alerts += 1
    if event.id in closed or event.attrs.get("alert_id") in closed:
        return
    for rule, action in actions.fired(event, Escalate):
        if age_s <= action.after_s + MAX_LATE_ESCALATION_S:
            actions.resume_escalation(event, rule, action, action.after_s - age_s)
            rebuilt.escalations += 1


def _closes(event: Event) -> str | None:
    """The attribute naming the alarm whose escalation ``event`` closes, if it closes one."""
    attrs = event.attrs
    if event.kind is EventKind.ESCALATION:
        return "cause_event_id"
    if event.kind is EventKind.RESPONSE and attrs.get("alerted") is True:
        return "alert_event_id" if attrs.get("response") in ("coming", "safe") else None
    if event.kind is EventKind.COMMAND_ACK and attrs.get("command") == "ack_alert":
        return "alert_id" if attrs.get("result") == "done" else None
    return None


def journalled_since(path: Path, since: datetime, kinds: set[EventKind]) -> Iterator[Event]:
    """Events of ``kinds`` journalled since ``since``, in journal order; never writes.

    The start is found through the ids' index (ULIDs sort by time), so a large
    journal costs only the rows of the window.
    """
    first_id = str(ULID.from_datetime(since))[:ULID_TIME_CHARS].ljust(ULID_CHARS, "0")
    conn = connect(path, readonly=True)
    try:
        first = conn.execute(
            "SELECT seq FROM events WHERE id >= ? ORDER BY id LIMIT 1", (first_id,)
        ).fetchone()
        if first is None:
            return
        marks = ",".join("?" * len(kinds))
        rows = conn.execute(
            f"SELECT body FROM events WHERE seq >= ? AND kind IN ({marks}) ORDER BY seq",  # noqa: S608 - only placeholders
            (first[0], *(k.value for k in kinds)),
        )
        for (body,) in rows:
            yield Event.model_validate_json(body)
    finally:
        conn.close()
