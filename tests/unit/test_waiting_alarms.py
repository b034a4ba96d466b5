"""Which forwarder links count as urgent: the police link always, another while an alarm waits for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.journal import Journal
from gateway.waiting_alarms import WaitingAlarms
from tests.clients import wait_until


def event(kind: EventKind) -> Event:
    now = utc_now()
    return Event(
        id=new_event_id(),
        gateway_id="GW-001",
        shop_id="S00050",
        device_id="panel-1",
        kind=kind,
        occurred_at=now,
        received_at=now,
        source=Source(driver="test", ref="unit"),
    )


def test_a_forwarder_is_urgent_while_an_alarm_waits_for_it(tmp_path: Path):
    async def scenario() -> None:
        journal = Journal(
            tmp_path / "journal.sqlite3", route=lambda _e: ("arc",), max_size_bytes=10**9
        )
        arc = WaitingAlarms(journal, "arc", always=False)
        police = WaitingAlarms(journal, "police", always=True)
        committed: list[int] = []
        journal.on_commit(lambda rows, _name: committed.extend(r.seq for r in rows))
        writer = asyncio.create_task(journal.run(), name="journal")
        try:
            assert police.alarms_waiting()
            assert not arc.alarms_waiting()
            await journal.append(event(EventKind.DOOR_CLOSE))
            await wait_until(lambda: len(committed) == 1, 10, "the routine event committed")
            assert not arc.alarms_waiting()  # something waits, but no alarm

            arrived = asyncio.create_task(arc.alarm_arrived(), name="arrival")
            await asyncio.sleep(0)  # let it start waiting before the commit
            await journal.append(event(EventKind.PANIC))
            await asyncio.wait_for(arrived, 10)
            assert arc.alarms_waiting()

            journal.ack("arc", committed[-1])
            await wait_until(lambda: not arc.alarms_waiting(), 10, "the alarm acknowledged")
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            arc.close()
            police.close()

    asyncio.run(scenario())
