"""Soft state read back from a real journal file: which alerts reopen, which escalations resume."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path

import yaml
from ulid import ULID

from gateway.actions import RuleActions
from gateway.config.file import load_config
from gateway.events import Event, EventKind, utc_now
from gateway.journal import Journal
from gateway.mqtt.notify import BlockPublisher
from gateway.rule_engine import rule_engine
from gateway.soft_state import rebuild
from tests.clients import expected_nearest
from tests.events import make_event
from tests.harness import init_config

ESCALATE_S = 60
PANIC_RULES = ["panic-neighbours", "alarms-forward", "robbery-area-alert", "panic-escalates"]


def configured(folder: Path, rules: list[dict] | None = None):
    path = init_config(folder, block_url="mqtt://127.0.0.1:1", police_url="mqtt://127.0.0.1:2")
    data = yaml.safe_load(path.read_text())
    data["rules"] = {
        "rules": rules
        or [
            {
                "name": "panic-escalates",
                "when": {"kinds": ["panic"]},
                "do": [{"action": "escalate", "after_s": ESCALATE_S}],
            }
        ]
    }
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def journalled(kind: str, shop: str, age: timedelta, **attrs: object) -> Event:
    """An event as the gateway journalled it ``age`` ago, with an id of that time."""
    at = utc_now() - age
    return make_event(
        kind, shop=shop, at=at, event_id=str(ULID.from_datetime(at)), gateway_id="GW-001", **attrs
    )


def journal_of(config, events: list[Event]) -> None:
    journal = Journal(config.journal_path, route=lambda _e: ["police"], max_size_bytes=10**9)

    async def write() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            for event in events:
                await journal.append(event)
            writer.cancel()

    asyncio.run(write())
    journal.close()


def fresh_actions(config, publisher: BlockPublisher | None = None) -> tuple[RuleActions, object]:
    engine = rule_engine(config)
    publisher = publisher or BlockPublisher(
        config.broker, gateway_id="GW-001", status=dict, status_interval_s=1
    )
    actions = RuleActions(
        config,
        engine.rules,
        schedule=engine.schedule,
        publisher=publisher,
        routes=dict.fromkeys(EventKind, ("police",)),
    )
    return actions, engine


def test_open_alerts_answers_and_unacknowledged_escalations_come_back(tmp_path):
    """Recent alerts reopen with their answers; an acknowledged, a done or a stale one stays shut."""
    config = configured(tmp_path)
    open_one = journalled(
        "panic", "S00011", timedelta(seconds=10), rules=PANIC_RULES, alert_id="A-open"
    )
    answered = journalled(
        "panic", "S00040", timedelta(seconds=20), rules=PANIC_RULES, alert_id="A-answered"
    )
    done = journalled(
        "panic", "S00070", timedelta(seconds=90), rules=PANIC_RULES, alert_id="A-done"
    )
    stale = journalled("panic", "S00100", timedelta(hours=2), rules=PANIC_RULES, alert_id="A-stale")
    journal_of(
        config,
        [
            stale,
            done,
            journalled("escalation", "S00070", timedelta(seconds=30), cause_event_id=done.id),
            answered,
            journalled(
                "response",
                expected_nearest("S00040")[0],
                timedelta(seconds=15),
                alert_id="A-answered",
                alert_event_id=answered.id,
                response="coming",
                alerted=True,
            ),
            open_one,
            # A shop that was never told says "coming": it neither counts nor stops the timer.
            journalled(
                "response",
                "S00100",
                timedelta(seconds=5),
                alert_id="A-open",
                alert_event_id=open_one.id,
                response="coming",
                alerted=False,
            ),
        ],
    )
    actions, engine = fresh_actions(config)
    rebuilt = rebuild(actions, config, engine.rules)

    assert (rebuilt.alerts, rebuilt.answers, rebuilt.escalations) == (3, 2, 1)
    [(event, _, rule, alert_id, wait_s)] = actions._resumed
    assert (event.id, rule, alert_id) == (open_one.id, "panic-escalates", "A-open")
    assert ESCALATE_S - 11 < wait_s <= ESCALATE_S - 10
    coming = actions.response_event(expected_nearest("S00011")[0], "A-open", "coming")
    assert (coming.attrs["alerted"], coming.attrs["coming"]) == (True, 1)
    cancel = make_event("cancel", shop="S00011", gateway_id="GW-001")
    applied = actions.apply(cancel, engine.evaluate(cancel))
    assert applied.event.attrs["alert_id"] == "A-open"
    assert applied.event.attrs["within_cancel_window"] is True
    # The cool-down of S00011's alert runs on: a second press alerts no one.
    again = make_event("panic", shop="S00011", gateway_id="GW-001")
    assert "alert_id" not in actions.apply(again, engine.evaluate(again)).event.attrs


def test_an_area_window_holds_the_alarm_of_before_the_restart_and_no_older(tmp_path):
    """One alarm of the cell 3 h before: the next one alerts the cell; one 25 h old does not count."""
    config = configured(tmp_path)
    journal_of(
        config,
        [
            journalled("panic", "S00012", timedelta(hours=25), rules=PANIC_RULES),
            journalled("panic", "S00011", timedelta(hours=3), rules=PANIC_RULES),
        ],
    )
    actions, engine = fresh_actions(config)
    assert rebuild(actions, config, engine.rules).area_alarms == 1
    panic = make_event("panic", shop="S00050", gateway_id="GW-001")
    [(area, _)] = actions.apply(panic, engine.evaluate(panic)).derived
    assert area.kind is EventKind.AREA_ALERT
    assert {a["shop_id"] for a in area.attrs["alarms"]} == {"S00011", "S00050"}


def test_a_first_start_without_a_journal_rebuilds_nothing(tmp_path):
    """A first start: nothing to read back, nothing fails."""
    config = configured(tmp_path)
    actions, engine = fresh_actions(config)
    assert not rebuild(actions, config, engine.rules)


def test_a_walk_test_panic_is_not_escalated_or_counted_after_a_restart(tmp_path):
    """A walk-test panic whose rules forward and escalate and count: after a restart, nothing."""
    forward = {"action": "forward"}
    rules = [
        {
            "name": "panic-reported-and-escalated",
            "when": {"kinds": ["panic"]},
            "do": [forward, {"action": "escalate", "after_s": ESCALATE_S}],
        },
        {
            "name": "panic-reported-and-counted",
            "when": {"kinds": ["panic"]},
            "do": [forward, {"action": "area_alert", "alarms": 2}],
        },
    ]
    config = configured(tmp_path, rules)
    # As the intake journals it: only its forwarding rules fired, and it is marked a test.
    test_panic = journalled(
        "panic", "S00011", timedelta(seconds=5), rules=[r["name"] for r in rules], test=True
    )
    journal_of(config, [test_panic])
    actions, engine = fresh_actions(config)

    assert not rebuild(actions, config, engine.rules)
    assert actions._resumed == []
    panic = make_event("panic", shop="S00050", gateway_id="GW-001")
    assert actions.apply(panic, engine.evaluate(panic)).derived == []


def test_a_reopened_alert_is_sent_again_to_own_shops_the_broker_never_confirmed(tmp_path):
    """Four of S00011's 10 nearest confirmed before the restart: the other six are told again."""
    config = configured(tmp_path)
    near = expected_nearest("S00011")
    confirmed_file = config.state_dir / "notices-confirmed.json"
    confirmed_file.parent.mkdir(parents=True, exist_ok=True)
    confirmed_file.write_text(
        json.dumps({"A-open": [time.time() + 60, near[:4]], "A-gone": [time.time() - 1, near]})
    )
    panic = journalled(
        "panic", "S00011", timedelta(seconds=10), rules=PANIC_RULES, alert_id="A-open"
    )
    journal_of(config, [panic])
    publisher = BlockPublisher(
        config.broker,
        gateway_id="GW-001",
        status=dict,
        status_interval_s=1,
        confirmed_file=confirmed_file,
    )
    actions, engine = fresh_actions(config, publisher)

    assert rebuild(actions, config, engine.rules).alerts == 1
    [again] = publisher._pending
    assert again.alert_id == "A-open"
    assert [n.shop_id for n in again.notices] == near[4:]
    body = json.loads(again.notices[0].payload)
    assert (body["event_id"], body["from_shop_id"]) == (panic.id, "S00011")
    assert publisher.confirmed("A-gone") == frozenset()  # expired: forgotten
