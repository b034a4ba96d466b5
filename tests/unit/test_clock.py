"""The gateway's judgement of its clock, and the police's time used when its own is off."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import DriverContext
from drivers.mqtt_ingest import MqttIngestDriver
from drivers.mqtt_ingest_config import MqttIngestConfig
from firmware_stubs.police_commands import command_body, new_key, sign
from gateway.clock import ClockJudgement, GatewayClock, ntp_synchronised
from gateway.events import EVENT_CLASS, Event, EventClass, EventKind, Source
from gateway.forwarders.dc09_codes import CodeTable
from gateway.mqtt.client import BrokerConfig
from rules.commands import Authentic, Command, CommandVerifier, Refusal
from rules.defaults import DEFAULT_RULES
from rules.geo import Neighbour
from rules.models import Forward
from rules.neighbour_alert import NeighbourAlerts

REPO = Path(__file__).resolve().parent.parent.parent
REAL = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BEHIND = timedelta(hours=2)


class Machine:
    """A wall clock that can be wrong and be stepped, and a monotonic clock that only runs."""

    def __init__(self, wall: datetime) -> None:
        self.wall_at = wall
        self.elapsed = 0.0

    def wall(self) -> datetime:
        return self.wall_at

    def monotonic(self) -> float:
        return self.elapsed

    def run(self, seconds: float) -> None:
        self.wall_at += timedelta(seconds=seconds)
        self.elapsed += seconds


def judged(machine: Machine, ntp: bool | None = None, **kwargs: object) -> GatewayClock:
    async def probe() -> bool | None:
        return ntp

    return GatewayClock(
        ntp=probe,
        wall=machine.wall,
        monotonic=machine.monotonic,
        released=date(2026, 11, 22),
        **kwargs,
    )


def test_a_clock_before_the_release_or_unsynchronised_is_suspect_an_unknown_ntp_is_not():
    """Reading 2001 or NTP saying 'no' makes the clock suspect; no NTP answer is no evidence."""
    assert asyncio.run(judged(Machine(REAL), ntp=None).judge()) == ClockJudgement(
        ntp_synchronised=None
    )
    assert not asyncio.run(judged(Machine(REAL), ntp=True).judge()).suspect
    unsynced = asyncio.run(judged(Machine(REAL), ntp=False).judge())
    assert unsynced.reasons == ("NTP has not synchronised the clock",)
    in_2001 = asyncio.run(judged(Machine(datetime(2001, 1, 1, tzinfo=UTC))).judge())
    assert in_2001.suspect
    assert "2001-01-01" in in_2001.reasons[0]


def test_a_police_command_dated_two_hours_ahead_corrects_the_time_until_ntp_steps_the_clock():
    """The police's issue time 2 h ahead: suspect, now() is the police's time; after NTP, good."""
    machine = Machine(REAL - BEHIND)
    clock = judged(machine)
    clock.told(REAL, by="police", exact=False)
    machine.run(30)
    judgement = asyncio.run(clock.judge())
    assert judgement.suspect
    assert judgement.offset_s == pytest.approx(7200)
    assert judgement.told_by == "police"
    assert clock.now() == REAL + timedelta(seconds=30)
    machine.wall_at += BEHIND  # NTP steps the wall clock; the monotonic clock does not jump
    assert not asyncio.run(clock.judge()).suspect
    assert clock.now() == machine.wall_at


def test_a_command_dated_in_the_past_says_nothing_against_the_clock():
    """A queued or replayed command is older than now: no suspicion, no correction."""
    machine = Machine(REAL)
    clock = judged(machine)
    clock.told(REAL - timedelta(hours=5), by="police", exact=False)
    assert not asyncio.run(clock.judge()).suspect
    assert clock.now() == REAL


def test_an_alarm_centre_nak_time_counts_both_ways():
    """A DC-09 NAK's timestamp is the centre's time now: a clock 2 h fast is suspect too."""
    machine = Machine(REAL + BEHIND)
    clock = judged(machine)
    clock.told(REAL, by="alarm centre", exact=True)
    judgement = asyncio.run(clock.judge())
    assert judgement.reasons == ("7200 s ahead of the time the alarm centre gave",)
    assert clock.now() == REAL


def test_clock_suspect_is_reported_once_per_episode_and_restored():
    """Two suspect judgements raise one report; the good one after them raises the restore."""
    machine = Machine(REAL - BEHIND)
    reports: list[bool] = []

    async def scenario() -> None:
        clock = judged(machine, check_every_s=3600)

        async def report(judgement: ClockJudgement) -> None:
            reports.append(judgement.suspect)

        clock.on_change = report
        runner = asyncio.create_task(clock.run(), name="clock")
        clock.told(REAL, by="police", exact=False)
        await wait_for(lambda: reports == [True])
        clock.told(REAL + timedelta(seconds=1), by="police", exact=False)  # still off
        await asyncio.sleep(0)
        machine.wall_at += BEHIND
        clock.told(REAL + timedelta(seconds=2), by="police", exact=False)
        await wait_for(lambda: reports == [True, False])
        runner.cancel()

    asyncio.run(scenario())
    assert reports == [True, False]


async def wait_for(predicate, timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def test_a_command_the_police_signed_by_their_clock_is_accepted_by_their_time():
    """Issued now, seen by a gateway 2 h behind: accepted by the time its issue time told.

    By the gateway's own clock it is not yet valid; a replay of it is still refused.
    """
    key, public = new_key()
    verifier = CommandVerifier("GW-001", {"platform-1": public}, max_age_s=300)
    body = command_body("GW-001", "set_level", level="heightened", issued_at=REAL)
    payload = sign(key, "platform-1", body)
    machine = Machine(REAL - BEHIND + timedelta(seconds=2))
    refused = verifier.verify(payload, machine.wall())
    assert isinstance(refused, Refusal)
    assert refused.reason == "not_yet_valid"
    signed = verifier.authentic(payload)
    assert isinstance(signed, Authentic)
    clock = judged(machine)
    clock.told(signed.command.issued_at, by="police", exact=False)
    accepted = verifier.timely(signed, clock.now())
    assert isinstance(accepted, Command)
    assert accepted.level is not None
    assert accepted.level.value == "heightened"
    replayed = verifier.timely(signed, clock.now())
    assert isinstance(replayed, Refusal)
    assert replayed.reason == "replayed"


def test_notices_expire_by_the_polices_time():
    """A neighbour notice's expires_at is the police's time plus the lifetime, not ours."""
    machine = Machine(REAL - BEHIND)
    clock = judged(machine)
    clock.told(REAL, by="police", exact=False)
    alerts = NeighbourAlerts({"S1": "No.1"}, cooldown_s=10, expires_s=300, wall=clock.now)
    panic = Event(
        id="E1",
        gateway_id="GW-001",
        shop_id="S1",
        device_id="button",
        kind=EventKind.PANIC,
        occurred_at=machine.wall(),
        received_at=machine.wall(),
        source=Source(driver="test", ref="t"),
    )
    alert = alerts.alert_for(panic, [Neighbour("S2", 20.0, 90.0)])
    assert alert is not None
    notice = json.loads(alert.notices[0].payload)
    assert datetime.fromisoformat(notice["expires_at"]) == REAL + timedelta(seconds=300)


def test_clock_suspect_is_trouble_forwarded_by_default_and_coded_for_dc09():
    """The kind is trouble, the default rules forward it as trouble, DC-09 sends CID 626."""
    assert EVENT_CLASS[EventKind.CLOCK_SUSPECT] is EventClass.TROUBLE
    forwarding = [
        a
        for r in DEFAULT_RULES
        if EventKind.CLOCK_SUSPECT in r.when.kinds
        for a in r.do
        if isinstance(a, Forward)
    ]
    assert [a.priority for a in forwarding] == [EventClass.TROUBLE]
    table = CodeTable.with_overrides({})
    event = Event(
        id="E1",
        gateway_id="GW-001",
        shop_id=None,
        device_id="clock",
        kind=EventKind.CLOCK_SUSPECT,
        occurred_at=REAL,
        received_at=REAL,
        source=Source(driver="gateway", ref="clock"),
    )
    data = table.event_data(event, partition=0)
    assert data is not None
    assert (data.qualifier, data.code) == (1, 626)
    restore = event.model_copy(
        update={"kind": EventKind.RESTORE, "attrs": {"restores": "clock_suspect"}}
    )
    restored = table.event_data(restore, partition=0)
    assert restored is not None
    assert (restored.qualifier, restored.code) == (3, 626)


@pytest.mark.parametrize(
    ("age", "believed"),
    [(timedelta(hours=23), True), (timedelta(hours=25), False), (None, False)],
    ids=["23h-ago", "25h-ago", "year-2001"],
)
def test_a_device_time_more_than_a_day_old_is_not_believed(age, believed):
    """Like a device clock ahead: the receive time is used and the device's reading kept."""
    context = DriverContext(
        "GW-T", BrokerConfig(url="mqtt://127.0.0.1:1883"), {"S00001": frozenset({"panel-1"})}
    )
    driver = MqttIngestDriver(MqttIngestConfig(kind="mqtt_ingest", name="shops"), context=context)
    ts = "2001-09-09T01:46:40+00:00" if age is None else (datetime.now(UTC) - age).isoformat()
    body = {"device_id": "panel-1", "kind": "panic", "ts": ts}
    event, _ = driver.parse("lianfang/v1/shop/S00001/event", json.dumps(body).encode())
    if believed:
        assert event.occurred_at == datetime.fromisoformat(ts)
        assert "device_ts" not in event.attrs
    else:
        assert event.occurred_at == event.received_at
        assert event.attrs["device_ts"] == ts


def fake_timedatectl(folder: Path, script: str) -> dict[str, str]:
    """A PATH whose timedatectl is ``script`` (a real executable), and nothing else."""
    folder.mkdir()
    tool = folder / "timedatectl"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    return {"PATH": str(folder)}


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('case "$*" in *NTPSynchronized*) echo yes;; esac', True),
        ("echo no", False),
        ("echo 'Failed to connect to bus' >&2; exit 1", None),
    ],
    ids=["yes", "no", "no-systemd"],
)
def test_ntp_is_asked_through_timedatectl(tmp_path, monkeypatch, script, expected):
    """Yes and no from timedatectl are believed; one that cannot answer means unknown."""
    for name, value in fake_timedatectl(tmp_path / "bin", script).items():
        monkeypatch.setenv(name, value)
    assert asyncio.run(ntp_synchronised()) is expected


def test_without_timedatectl_the_kernel_is_asked(tmp_path, monkeypatch):
    """No timedatectl on PATH: adjtimex answers (True or False on Linux, never an error)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert asyncio.run(ntp_synchronised()) in (True, False)


def test_the_unit_starts_after_the_clock_is_set_but_never_waits_for_ntp():
    """After= time-set and time-sync; no Wants=/Requires= of them (passive targets)."""
    unit = (REPO / "gateway" / "data" / "lianfang.service").read_text()
    after = " ".join(line for line in unit.splitlines() if line.startswith("After="))
    assert "time-sync.target" in after
    assert "time-set.target" in after
    pulls = [line for line in unit.splitlines() if line.startswith(("Wants=", "Requires="))]
    assert not any("time-" in line for line in pulls)
