"""Rule models, the engine, arming by hours, area alerts and the rule validator."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.file import load_config
from gateway.errors import ConfigError
from gateway.events import Event, EventKind
from gateway.rule_engine import rule_engine
from rules.area import AreaWatch
from rules.expr import Condition, ExpressionError
from rules.models import Level
from tests.clients import expected_nearest, wait_until
from tests.events import make_event
from tests.harness import init_config

ZONE = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cfg")
    init_config(folder, block_url="mqtt://127.0.0.1:1", police_url="mqtt://127.0.0.1:2")
    return folder


def load(folder: Path, rules: object = None):
    path = folder / "lianfang.yaml"
    data = yaml.safe_load(path.read_text())
    data["rules"] = {"timezone": "Asia/Shanghai", **(rules or {})}
    path.with_name("test.yaml").write_text(yaml.safe_dump(data))
    return load_config(path.with_name("test.yaml"))


def event(kind: str, shop: str | None = "S00011", at: datetime | None = None, **attrs) -> Event:
    return make_event(kind, shop=shop, at=at, event_id="E1", gateway_id="GW-001", **attrs)


def local(hour: int, minute: int = 0, days: int = 0) -> datetime:
    return datetime(2026, 11, 22 + days, hour, minute, tzinfo=ZONE)


def fired(engine, ev: Event, at: datetime | None = None) -> list[tuple[str, str]]:
    return [(f.rule, f.action.action) for f in engine.evaluate(ev, at=at)]


def test_defaults_at_each_level(config_dir):
    """Panic: nearest shops (20 at a raised level), alarm forward, area count; troubles as trouble."""
    engine = rule_engine(load(config_dir))
    assert fired(engine, event("panic")) == [
        ("panic-neighbours", "notify_nearest"),
        ("alarms-forward", "forward"),
        ("robbery-area-alert", "area_alert"),
    ]
    [notify] = [f.action for f in engine.evaluate(event("duress"))][:1]
    assert notify.count is None  # neighbour_alert.count, as before the rules engine
    engine.level = Level.HEIGHTENED
    [notify] = [f.action for f in engine.evaluate(event("panic"))][:1]
    assert notify.count == 20
    assert fired(engine, event("heartbeat")) == []
    assert fired(engine, event("tamper")) == [("troubles-forward", "forward")]
    assert engine.evaluate(event("tamper"))[0].action.priority == "trouble"


def test_dry_run_names_the_exact_neighbours_at_both_levels(config_dir):
    from gateway.cli.dry_run import dry_run  # noqa: PLC0415

    cfg = load(config_dir)
    for level, count in ((Level.EVERYDAY, 10), (Level.EXTRAORDINARY, 20)):
        engine = rule_engine(cfg, level=level)
        rows = dry_run(cfg, engine, event("panic"), datetime.now(UTC))
        assert rows[0]["shops"] == expected_nearest("S00011", count=count)


def test_arming_follows_opening_hours_and_early_codes(config_dir):
    """S00011 opens 10:00, closes 23:30 (Shanghai). An early disarm holds until opening time."""
    engine = rule_engine(load(config_dir))
    door = event("door_open")
    assert ("intrusion-when-armed", "raise") in fired(engine, door, local(3))
    assert ("intrusion-when-armed", "raise") not in fired(engine, door, local(11))
    assert ("intrusion-when-armed", "raise") in fired(engine, door, local(23, 45))
    schedule = engine.schedule
    schedule.set("S00011", armed=False, at=local(2))
    assert not schedule.armed("S00011", local(3))
    assert not schedule.armed("S00011", local(12))
    assert schedule.armed("S00011", local(23, 45))  # the hours rule again after opening
    schedule.set("S00011", armed=True, at=local(12))  # shut early
    assert schedule.armed("S00011", local(13))
    assert not schedule.armed("S00011", local(10, 30, days=1))
    assert not schedule.armed("S99999", local(3))


def test_an_early_disarm_judges_an_event_stamped_inside_it_whenever_it_arrives(config_dir):
    """Disarmed at 07:00 until opening (08:30): judged by the moment an event is stamped.

    A door stamped 08:10 that arrives late (a retransmission, after an event of
    08:45 was judged) is still no intrusion; one stamped 06:00, before the disarm, is.
    """
    schedule = rule_engine(load(config_dir)).schedule
    schedule.set("S00011", armed=False, at=local(7))
    assert not schedule.armed("S00011", local(8, 45))  # open by then
    assert not schedule.armed("S00011", local(8, 10))
    assert schedule.armed("S00011", local(6))
    again = rule_engine(load(config_dir)).schedule
    again.restore(schedule.saved())
    assert (again.armed("S00011", local(8, 10)), again.armed("S00011", local(6))) == (False, True)
    old_file = {"S00011": {"armed": False, "until": local(8, 30).isoformat()}}
    again.restore(old_file)  # written before overrides kept their start: held from ever
    assert not again.armed("S00011", local(6))


def test_own_rules_replace_defaults_and_use_conditions_windows_and_cells(config_dir):
    cfg = load(
        config_dir,
        {
            "disable": ["robbery-area-alert"],
            "rules": [
                {
                    "name": "alarms-forward",
                    "when": {"kinds": ["panic"]},
                    "do": [{"action": "forward", "to": ["police"], "priority": "alarm"}],
                },
                {
                    "name": "weak-battery-at-night",
                    "when": {
                        "kinds": ["low_battery"],
                        "cells": ["L1-M01"],
                        "between": [{"from": "22:00", "to": "06:00"}],
                    },
                    "if": "attrs['volts'] < 3.1 and shop_id in ['S00011', 'S00012']",
                    "do": [{"action": "siren", "seconds": 5}],
                },
            ],
        },
    )
    engine = rule_engine(cfg)
    assert fired(engine, event("panic")) == [
        ("panic-neighbours", "notify_nearest"),
        ("alarms-forward", "forward"),
    ]
    night = fired(engine, event("low_battery", volts=3.0), local(23))
    assert ("weak-battery-at-night", "siren") in night
    assert ("weak-battery-at-night", "siren") not in fired(
        engine, event("low_battery", volts=3.0), local(12)
    )
    assert ("weak-battery-at-night", "siren") not in fired(
        engine, event("low_battery", volts=3.3), local(23)
    )
    # A condition that fails at run time (no 'volts') does not fire, and is counted.
    assert ("weak-battery-at-night", "siren") not in fired(engine, event("low_battery"), local(23))
    assert engine.failed == 1


def test_expressions_are_safe():
    assert Condition("attrs['x'] > 2")({"attrs": {"x": 3}})
    for text in (
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "attrs.__class__",
        "().__class__.__bases__",
        "kind ==",
        "undefined_name > 1",
        "attrs.clear()",
        "kind = 'panic'",
        "kind == 'panic'; attrs.clear()",
    ):
        with pytest.raises(ExpressionError):
            Condition(text)({"attrs": MappingProxyType({}), "kind": "panic"})


def test_area_alert_fires_once_per_cell_and_never_across_cells():
    watch = AreaWatch()
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    day = 86_400

    def count(cell, eid, shop, hours):
        return watch.count(cell, eid, shop, t0 + timedelta(hours=hours), alarms=2, window_s=day)

    assert count("M1", "e1", "A", 0) is None
    assert count("M2", "e2", "B", 1) is None  # another cell
    assert count("M1", "e3", "A", 2) is None  # the same shop again
    trigger = count("M1", "e4", "C", 3)
    assert trigger is not None
    assert trigger.alarms == (("e1", "A"), ("e4", "C"))
    assert count("M1", "e5", "D", 4) is None  # once per window
    assert count("M1", "e6", "E", 30) is None  # next day: only E within 24 h
    again = count("M1", "e7", "F", 51)  # the window since firing is over; E, F within 24 h
    assert again is not None
    assert again.alarms == (("e6", "E"), ("e7", "F"))
    assert count("M3", "e8", "G", 200) is None
    assert count("M3", "e9", "H", 100) is None  # delivered late: four days before G's


def test_rules_yaml_beside_the_config_is_located_by_file_rule_field_and_line(config_dir, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "lianfang.yaml").write_text((config_dir / "lianfang.yaml").read_text())
    (folder / "rules.yaml").write_text(
        "rules:\n"
        "  - name: night-doors\n"
        "    when: {kinds: [door_open]}\n"
        "    do:\n"
        "      - {action: siren, seconds: 5000}\n"
        "  - name: odd\n"
        "    when: {kinds: [explode]}\n"
        "    if: \"__import__('os')\"\n"
        "    do: [{action: forward, to: [nowhere]}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(folder / "lianfang.yaml")
    found = {(p.file.rsplit("/", 1)[-1], p.path, p.line) for p in caught.value.problems}
    assert ("rules.yaml", "rules.rules[night-doors].do[0].seconds", 5) in found
    assert ("rules.yaml", "rules.rules[odd].when.kinds[0]", 7) in found
    assert ("rules.yaml", "rules.rules[odd].if", 8) in found
    messages = " ".join(p.message for p in caught.value.problems)
    assert "unknown name '__import__'" in messages
    (folder / "rules.yaml").write_text(
        "rules:\n  - name: x\n    when: {kinds: [panic]}\n    do: [{action: forward, to: [nowhere]}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(folder / "lianfang.yaml")
    [problem] = caught.value.problems
    assert "no forwarder named 'nowhere'" in problem.message


rule_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10_000)
    | st.floats(allow_nan=False)
    | st.sampled_from(["panic", "door_open", "forward", "notify_nearest", "S00011", "22:00", "1 +"])
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=8)
            | st.sampled_from(
                ["name", "when", "do", "if", "kinds", "action", "count", "to", "between", "from"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.dictionaries(
        st.sampled_from(["rules", "disable", "defaults", "timezone", "cancel_window_s", "bogus"]),
        rule_values,
        max_size=4,
    )
)
def test_any_rules_document_is_accepted_or_refused_with_a_message(config_dir, document):
    """Whatever rules.yaml holds, loading ends in a config or in ConfigError problems: never a traceback."""
    folder = config_dir / "hyp"
    folder.mkdir(exist_ok=True)
    (folder / "lianfang.yaml").write_text((config_dir / "lianfang.yaml").read_text())
    (folder / "rules.yaml").write_text(yaml.safe_dump(document))
    problems = []
    try:
        load_config(folder / "lianfang.yaml")
    except ConfigError as exc:
        problems = exc.problems
        assert problems
    for problem in problems:
        assert problem.message
        assert problem.file.endswith(("rules.yaml", "lianfang.yaml"))


def acting(cfg, engine, clock=None):
    """Real RuleActions over a BlockPublisher that is not running: its queue shows what went out."""
    from gateway.actions import RuleActions  # noqa: PLC0415
    from gateway.mqtt.notify import BlockPublisher  # noqa: PLC0415
    from rules.engine import effective_rules  # noqa: PLC0415

    publisher = BlockPublisher(cfg.broker, gateway_id="GW-001", status=dict, status_interval_s=1)
    actions = RuleActions(
        cfg,
        [e.rule for e in effective_rules(cfg.rules)],
        schedule=engine.schedule,
        publisher=publisher,
        routes=dict.fromkeys(EventKind, ("police",)),
        **({"clock": clock} if clock else {}),
    )
    return actions, publisher


def test_storm_control_one_alert_per_shop_per_cooldown_and_a_global_cap(config_dir):
    """Cool-down per origin shop; past max_notices_per_s the farthest neighbours are told later."""
    cfg = load(config_dir, {"max_notices_per_s": 15, "disable": ["robbery-area-alert"]})
    engine = rule_engine(cfg)
    now = [100.0]
    actions, publisher = acting(cfg, engine, clock=lambda: now[0])

    def panic(shop: str) -> None:
        ev = event("panic", shop)
        actions.apply(ev, engine.evaluate(ev))

    def told(alert_id: str) -> list[str]:
        return [n.shop_id for a in publisher._pending if a.alert_id == alert_id for n in a.notices]

    async def storm() -> None:
        runner = asyncio.create_task(actions.run(), name="actions")
        await asyncio.sleep(0)
        panic("S00011")
        panic("S00011")  # cool-down
        panic("S00040")  # only 5 tokens left: 5 shops now, the rest when the cap allows
        sent = [[n.shop_id for n in a.notices] for a in publisher._pending]
        assert sent == [expected_nearest("S00011"), expected_nearest("S00040")[:5]]
        now[0] += 1.0  # a second later the bucket is full again
        alert_id = publisher._pending[1].alert_id
        await wait_until(
            lambda: told(alert_id) == expected_nearest("S00040"), 30, "the capped notices"
        )
        runner.cancel()

    asyncio.run(storm())
    assert actions.alerts.suppressed == 1
    assert actions.notices.capped == 5
    assert actions.notices.cap_expired == 0
    assert publisher._pending[-1].alert_id == publisher._pending[-2].alert_id
    now[0] += 1.0
    panic("S00060")
    assert [n.shop_id for n in publisher._pending[-1].notices] == expected_nearest("S00060")

    # The origin's cancel names its alert, within the 30 s window or not; never dropped.
    cancel = event("cancel", "S00060")
    within = actions.apply(cancel, engine.evaluate(cancel)).event.attrs
    assert within["alert_id"] == publisher._pending[-1].alert_id
    assert within["within_cancel_window"] is True
    assert within["rules"] == ["status-forward"]
    now[0] += 31
    late = actions.apply(cancel, engine.evaluate(cancel))
    assert late.event.attrs["within_cancel_window"] is False
    assert late.routes == ("police",)


def test_escalation_fires_unless_acknowledged_and_a_siren_nobody_drives_is_reported(config_dir):
    """An unanswered alert escalates after after_s; a "coming" stops it. No siren: action_failed."""
    cfg = load(
        config_dir,
        {
            "disable": ["robbery-area-alert"],
            "rules": [
                {
                    "name": "panic-escalates",
                    "when": {"kinds": ["panic"]},
                    "do": [{"action": "escalate", "after_s": 0.2, "to": ["police"]}],
                }
            ],
        },
    )
    engine = rule_engine(cfg)
    actions, _ = acting(cfg, engine)
    emitted: list[tuple[Event, tuple[str, ...]]] = []

    async def emit(ev: Event, routes: tuple[str, ...] = ()) -> None:
        emitted.append((ev, routes))

    async def siren(shop: str, seconds: float) -> bool:
        return False

    actions.emit = emit
    actions.siren = siren

    async def scenario() -> None:
        runner = asyncio.create_task(actions.run(), name="actions")
        await asyncio.sleep(0)
        answered, ignored = event("panic", "S00011"), event("panic", "S00040")
        answered = answered.model_copy(update={"id": "E-answered"})
        ignored = ignored.model_copy(update={"id": "E-ignored"})
        applied = actions.apply(answered, engine.evaluate(answered))
        actions.apply(ignored, engine.evaluate(ignored))
        alert_id = applied.event.attrs["alert_id"]
        origin_says_safe = actions.response_event("S00011", alert_id, "safe")
        stranger_comes = actions.response_event("S00099", alert_id, "coming")
        assert (origin_says_safe.attrs["alerted"], stranger_comes.attrs["alerted"]) == (
            False,
            False,
        )
        assert stranger_comes.attrs["coming"] == 0
        assert "E-answered" in actions._escalations  # neither stopped it
        response = actions.response_event("S00010", alert_id, "coming")
        assert response.attrs["coming"] == 1
        assert response.attrs["alerted"] is True
        door = event("door_open", "S00012")
        actions.apply(door, engine.evaluate(door, at=local(3)))
        # Both timers started together, the answered one first: had it not been stopped,
        # its escalation would be in before the ignored one's.
        await wait_until(lambda: len(emitted) == 2, 30, "the siren failure and one escalation")
        runner.cancel()

    asyncio.run(scenario())
    kinds = sorted((e.kind.value, e.attrs["cause_event_id"], r) for e, r in emitted)
    assert kinds == [
        ("action_failed", "E1", ()),  # the door's siren
        ("escalation", "E-ignored", ("police",)),
    ]


def test_rules_cli_lists_the_rules_and_dry_runs_an_event(config_dir):
    import json  # noqa: PLC0415

    from typer.testing import CliRunner  # noqa: PLC0415

    from gateway.cli.main import app  # noqa: PLC0415

    load(config_dir)  # test.yaml: the shops' hours in Asia/Shanghai
    config = str(config_dir / "test.yaml")
    listed = CliRunner().invoke(app, ["rules", "list", "--config", config, "--json"])
    assert listed.exit_code == 0, listed.output
    rules = json.loads(listed.output)
    assert [r["name"] for r in rules][:2] == ["panic-neighbours", "panic-neighbours-heightened"]
    assert {r["origin"] for r in rules} == {"default"}
    event_json = '{"shop_id":"S00011","kind":"door_open"}'
    args = ["rules", "test", "--config", config, "--event", event_json, "--json"]
    night = CliRunner().invoke(app, [*args, "--at", "2026-11-22T03:00+08:00"])
    day = CliRunner().invoke(app, [*args, "--at", "2026-11-22T11:00+08:00"])
    fired_at_night = [(r["rule"], r["action"]) for r in json.loads(night.output)["fires"]]
    assert ("intrusion-when-armed", "raise") in fired_at_night
    assert ("alarms-forward", "forward") in fired_at_night  # the intrusion it raises
    assert json.loads(night.output)["armed"] is True
    assert [r["rule"] for r in json.loads(day.output)["fires"]] == ["status-forward"]
    high = CliRunner().invoke(
        app, ["rules", "test", "--config", config, "--level", "heightened", "--json",
              "--event", '{"shop_id":"S00011","kind":"panic"}'],
    )  # fmt: skip
    assert json.loads(high.output)["fires"][0]["shops"] == expected_nearest("S00011", count=20)
    bad = CliRunner().invoke(app, ["rules", "test", "--config", config, "--event", "[1]"])
    assert bad.exit_code == 2
    assert "JSON object" in bad.output


def test_a_panic_is_journalled_and_routed_even_when_its_rules_raise(config_dir, tmp_path):
    """A fault in an action (here: no forwarder route for the kind) loses nothing: journalled as is."""
    from gateway.intake import Intake  # noqa: PLC0415
    from gateway.journal import Journal  # noqa: PLC0415
    from gateway.journal_reader import JournalReader  # noqa: PLC0415

    cfg = load(config_dir)
    engine = rule_engine(cfg)
    actions, publisher = acting(cfg, engine)
    actions._routes = {}  # the forward action's lookup fails, as a bug in an action would
    journal = Journal(tmp_path / "j.db", route=lambda _event: ["police"], max_size_bytes=10**9)
    intake = Intake(journal, engine, actions)

    async def scenario() -> None:
        durable = asyncio.Event()
        writer = asyncio.create_task(journal.run(), name="journal")
        await intake(event("panic"), on_durable=durable.set)
        await asyncio.wait_for(durable.wait(), timeout=30)
        writer.cancel()

    asyncio.run(scenario())
    journal.close()
    reader = JournalReader(tmp_path / "j.db")
    [row] = reader.pending("police", after=0, limit=10)
    reader.close()
    assert row.shop_id == "S00011"
    assert intake.rules_crashed == 1
    assert [n.shop_id for n in publisher._pending[0].notices] == expected_nearest("S00011")


def test_no_rule_set_keeps_an_alarm_or_a_cancel_from_the_police(config_dir):
    """With the defaults off and no forward rule, alarms, cancels and answers go; a door does not."""
    cfg = load(config_dir, {"defaults": False})
    engine = rule_engine(cfg)
    actions, _ = acting(cfg, engine)

    def routes(kind: str) -> tuple[str, ...]:
        ev = event(kind)
        return actions.apply(ev, engine.evaluate(ev)).routes

    assert routes("panic") == ("police",)
    assert routes("fire") == ("police",)
    assert routes("cancel") == ("police",)
    assert routes("door_open") == ()
    answer = actions.response_event("S00012", "A-1", "cancel")
    assert actions.apply(answer, engine.evaluate(answer)).routes == ("police",)


def commands_on_a_journal(cfg, journal_path: Path, state_file: Path, keys: dict[str, str]):
    """PoliceCommands over a real journal (not yet running) that routes everything to the police."""
    from gateway.commands import PoliceCommands  # noqa: PLC0415
    from gateway.intake import Intake  # noqa: PLC0415
    from gateway.journal import Journal  # noqa: PLC0415
    from rules.commands import CommandVerifier  # noqa: PLC0415

    engine = rule_engine(cfg)
    actions, _ = acting(cfg, engine)
    journal = Journal(journal_path, route=lambda _event: ["police"], max_size_bytes=10**9)
    intake = Intake(journal, engine, actions)
    verifier = CommandVerifier("GW-001", keys, max_age_s=300)
    commands = PoliceCommands("GW-001", verifier, intake, actions, state_file=state_file)
    return commands, journal, intake


def journalled_refusals(path: Path) -> list[dict[str, object]]:
    from gateway.journal_reader import JournalReader  # noqa: PLC0415

    reader = JournalReader(path)
    rows = reader.pending("police", after=0, limit=1000)
    reader.close()
    return [dict(r.event.attrs) for r in rows if r.event.kind is EventKind.COMMAND_REFUSED]


def test_a_command_for_another_gateway_is_refused_and_the_refusal_journalled(config_dir, tmp_path):
    """A well-signed command addressed to GW-002 changes nothing here and is answered as refused."""
    from firmware_stubs.police_commands import command_body, new_key, sign  # noqa: PLC0415

    key, public = new_key()
    commands, journal, intake = commands_on_a_journal(
        load(config_dir), tmp_path / "j.db", tmp_path / "commands.json", {"platform-1": public}
    )
    payload = sign(key, "platform-1", command_body("GW-002", "set_level", level="extraordinary"))
    answered: list[bool] = []

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            await commands.handle("cmd", payload, lambda: answered.append(True))
            await wait_until(lambda: answered == [True], 10, "the refusal journalled")
            writer.cancel()

    asyncio.run(scenario())
    journal.close()
    assert intake.engine.level is Level.EVERYDAY
    assert (commands.obeyed, commands.refused) == (0, 1)
    [refusal] = journalled_refusals(tmp_path / "j.db")
    assert refusal["reason"] == "wrong_gateway"
    assert refusal["detail"] == "addressed to GW-002"


def test_refusals_are_journalled_a_burst_of_20_then_one_per_10_s_with_a_count(config_dir, tmp_path):
    """25 junk commands: 20 journalled. 10 s on, 3 more: one journalled, counting the 5 held back."""
    commands, journal, _ = commands_on_a_journal(
        load(config_dir), tmp_path / "j.db", tmp_path / "commands.json", {}
    )
    answered: list[int] = []

    async def send(count: int) -> None:
        for _ in range(count):
            await commands.handle("cmd", b"{junk", lambda: answered.append(1))

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            started = time.monotonic()
            await send(25)
            # The rate itself is under test: real time must pass for the next token.
            await wait_until(lambda: time.monotonic() - started >= 10.5, 12, "10 s after the burst")
            await send(3)
            await wait_until(lambda: len(answered) == 28, 10, "every junk command answered")
            writer.cancel()

    asyncio.run(scenario())
    journal.close()
    refusals = journalled_refusals(tmp_path / "j.db")
    held_back = [r["refused_since_not_journalled"] for r in refusals]
    assert held_back == [0] * 20 + [5]
    assert commands.refused == 28


def test_commands_within_clock_leeway_pass_and_a_nonce_is_refused_again_after_a_restart(
    config_dir, tmp_path
):
    """Expiry and issue time allow 2 min of skew, no more; a used nonce survives a restart."""
    from firmware_stubs.police_commands import command_body, new_key, sign  # noqa: PLC0415
    from gateway.commands import PoliceCommands  # noqa: PLC0415
    from gateway.intake import Intake  # noqa: PLC0415
    from gateway.journal import Journal  # noqa: PLC0415
    from rules.commands import Command, CommandVerifier, Refusal  # noqa: PLC0415

    key, public = new_key()
    now = datetime.now(UTC)

    def verdict(verifier: CommandVerifier, **kw) -> str:
        body = command_body("GW-001", "set_level", level="heightened", **kw)
        result = verifier.verify(sign(key, "platform-1", body), now)
        return "ok" if isinstance(result, Command) else result.reason

    verifier = CommandVerifier("GW-001", {"platform-1": public}, max_age_s=600)
    assert verdict(verifier, issued_at=now - timedelta(seconds=90), valid_s=30) == "ok"
    assert verdict(verifier, issued_at=now - timedelta(seconds=200), valid_s=30) == "expired"
    assert verdict(verifier, issued_at=now + timedelta(seconds=90)) == "ok"
    assert verdict(verifier, issued_at=now + timedelta(seconds=200)) == "not_yet_valid"

    cfg = load(config_dir)
    state = tmp_path / "commands.json"
    payload = sign(key, "platform-1", command_body("GW-001", "set_level", level="extraordinary"))

    def started() -> tuple[PoliceCommands, Intake]:
        engine = rule_engine(cfg)
        actions, _ = acting(cfg, engine)
        journal = Journal(tmp_path / "j.db", route=lambda _event: ["police"], max_size_bytes=10**9)
        intake = Intake(journal, engine, actions)
        fresh = CommandVerifier("GW-001", {"platform-1": public}, max_age_s=600)
        return PoliceCommands("GW-001", fresh, intake, actions, state_file=state), intake

    first, intake = started()
    asyncio.run(first.handle("cmd", payload, lambda: None))
    assert (first.obeyed, intake.engine.level) == (1, Level.EXTRAORDINARY)
    again, intake = started()
    assert intake.engine.level is Level.EXTRAORDINARY  # the level survives the restart too
    asyncio.run(again.handle("cmd", payload, lambda: None))
    assert (again.obeyed, again.refused) == (0, 1)
    refusal = again._verifier.verify(payload, datetime.now(UTC))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "replayed"
