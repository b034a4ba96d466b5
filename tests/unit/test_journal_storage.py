"""Storage short: what the intake refuses (before the rules), what the reserve takes, resuming."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.events import EventKind, utc_now
from gateway.intake import Intake
from gateway.journal import Journal
from gateway.journal_reader import JournalReader
from gateway.rule_engine import rule_engine
from gateway.storage import MAX_REFUSED_PER_SHORTAGE, StorageReserve
from lab.disk import MountUnavailableError, fill, small_tmpfs
from tests.clients import wait_until
from tests.events import make_event
from tests.harness import init_config
from tests.unit.test_rules import acting, load

RESERVE = 256 * 1024


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cfg")
    init_config(folder, block_url="mqtt://127.0.0.1:1", police_url="mqtt://127.0.0.1:2")
    return folder


def short_intake(config_dir: Path, journal_path: Path) -> tuple[Intake, Journal, list[str]]:
    """An intake over the default rules and a real journal whose disk has just filled.

    Sirens are recorded in the list returned; the journal's routes send everything
    to the police.
    """
    cfg = load(config_dir, {"disable": ["robbery-area-alert"]})
    engine = rule_engine(cfg)
    actions, _ = acting(cfg, engine)
    sirens: list[str] = []

    async def siren(shop: str, _seconds: float) -> bool:
        sirens.append(shop)
        return True

    actions.siren = siren
    journal = Journal(
        journal_path, route=lambda _e: ["police"], max_size_bytes=10**9, reserve_bytes=RESERVE
    )
    intake = Intake(journal, engine, actions)
    actions.emit = intake.gateway_event
    journal.reserve.release("a test says the disk is full")
    return intake, journal, sirens


def journalled_kinds(path: Path) -> list[str]:
    reader = JournalReader(path)
    rows = reader.pending("police", after=0, limit=1000)
    reader.close()
    return [json.loads(row.body)["kind"] for row in rows]


def test_while_short_device_events_are_refused_up_to_the_bound_and_nothing_else_is(
    config_dir, tmp_path
):
    """Refused: a device's non-alarms that its sender keeps, 100 at most; taken: the rest.

    Alarms, the gateway's own events (a shop's answer too: the police must see it)
    and events no one keeps come out of the reserve.
    """
    intake, journal, _ = short_intake(config_dir, tmp_path / "j.db")
    assert not (tmp_path / "reserve.ballast").exists()
    durable: list[str] = []

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            answer = intake.actions.response_event("S00012", "A-1", "coming")
            await intake.gateway_event(answer, on_durable=lambda: durable.append("R"))
            for n in range(MAX_REFUSED_PER_SHORTAGE + 1):
                await intake(
                    make_event(EventKind.LOW_BATTERY, shop="S00012"),
                    on_durable=lambda n=n: durable.append(f"B{n}"),
                )
            await intake(make_event(EventKind.PANIC), on_durable=lambda: durable.append("P"))
            await intake(make_event(EventKind.TAMPER))  # no sender keeps it: from the reserve
            await wait_until(lambda: len(durable) == 3, 5, "three durable")
            assert journal.reserve.refused == MAX_REFUSED_PER_SHORTAGE
            assert sorted(durable) == sorted([f"B{MAX_REFUSED_PER_SHORTAGE}", "P", "R"])
            await wait_until(lambda: journal.stats.appended >= 4, 5, "the tamper too")

            assert await asyncio.to_thread(journal.reserve.try_resume)
            assert (tmp_path / "reserve.ballast").stat().st_size == RESERVE
            await intake(
                make_event(EventKind.LOW_BATTERY), on_durable=lambda: durable.append("after")
            )
            await wait_until(lambda: "after" in durable, 5, "an event taken after the shortage")
            writer.cancel()

    asyncio.run(scenario())


def test_a_refused_door_raises_its_intrusion_and_siren_once_when_it_comes_back(
    config_dir, tmp_path
):
    """A door opening in an armed shop while storage is short is refused with no effect at all.

    Sent again after the shortage, it is journalled and raises one intrusion and one siren.
    """
    intake, journal, sirens = short_intake(config_dir, tmp_path / "j.db")
    intake.engine.schedule.set("S00011", armed=True, at=utc_now())
    acked: list[str] = []

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            acting_ = tg.create_task(intake.actions.run(), name="actions")
            door = make_event(EventKind.DOOR_OPEN, seq=7)
            await intake(door, on_durable=lambda: acked.append("first"), origin_key="S00011/7")
            assert journal.reserve.refused == 1
            assert journal.queued == 0  # nothing derived: no intrusion waits for the writer

            assert await asyncio.to_thread(journal.reserve.try_resume)
            again = make_event(EventKind.DOOR_OPEN, seq=7)  # the broker's second copy
            await intake(again, on_durable=lambda: acked.append("again"), origin_key="S00011/7")
            await wait_until(lambda: sirens and journal.stats.appended == 2, 5, "door, intrusion")
            await wait_until(lambda: journal.queued == 0, 5, "the writer idle")
            writer.cancel()
            acting_.cancel()

    asyncio.run(scenario())
    journal.close()
    assert acked == ["again"]
    assert sirens == ["S00011"]
    assert sorted(journalled_kinds(tmp_path / "j.db")) == ["door_open", "intrusion"]


def test_a_cancel_sent_while_short_is_taken_and_never_lands_after_the_next_panic(
    config_dir, tmp_path
):
    """A shop cancels a false alarm while storage is short, then presses panic.

    Were the cancel refused, the broker would send it again after the shortage,
    after the panic, and it would cancel the real alarm: it is taken at once.
    """
    intake, journal, _ = short_intake(config_dir, tmp_path / "j.db")
    acked: list[str] = []

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            acting_ = tg.create_task(intake.actions.run(), name="actions")
            await intake(make_event(EventKind.PANIC, seq=1), on_durable=lambda: acked.append("p1"))
            await intake(make_event(EventKind.CANCEL, seq=2), on_durable=lambda: acked.append("c"))
            await intake(make_event(EventKind.PANIC, seq=3), on_durable=lambda: acked.append("p2"))
            await wait_until(lambda: len(acked) == 3, 5, "all three durable")
            writer.cancel()
            acting_.cancel()

    asyncio.run(scenario())
    journal.close()
    assert journal.reserve.refused == 0
    assert acked == ["p1", "c", "p2"]
    with sqlite3.connect(tmp_path / "j.db") as db:
        kinds = [kind for (kind,) in db.execute("SELECT kind FROM events ORDER BY seq")]
    assert [k for k in kinds if k in ("panic", "cancel")] == ["panic", "cancel", "panic"]


def test_the_end_of_a_shortage_wakes_its_waiters_in_their_own_loop(tmp_path):
    """``try_resume`` runs in a worker thread; the futures it wakes belong to the loop.

    asyncio's debug mode raises when a future's callbacks are scheduled from another thread.
    """
    reserve = StorageReserve(tmp_path, RESERVE)
    assert reserve.ensure()
    reserve.release("a test says the disk is full")

    async def scenario() -> None:
        waiter = asyncio.create_task(reserve.shortage_ended(), name="waiter")
        await asyncio.sleep(0)  # the waiter registers
        assert await asyncio.to_thread(reserve.try_resume)
        await asyncio.wait_for(waiter, 5)
        assert not reserve.short

    asyncio.run(scenario(), debug=True)


def test_a_disk_full_past_the_reserve_holds_the_batch_and_commits_it_once_room_is_back(
    tmp_path,
):
    """Disk full, reserve gone, disk full again: the writer retries and commits, never dies."""
    try:
        with small_tmpfs(tmp_path / "fs", 4) as state:
            journal = Journal(
                state / "j.db", route=lambda _e: ["police"], max_size_bytes=10**9,
                reserve_bytes=RESERVE,
            )  # fmt: skip
            durable: list[str] = []

            async def scenario() -> None:
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(journal.run(), name="journal")
                    await asyncio.to_thread(fill, state / "first.log")
                    await journal.append(
                        make_event(EventKind.PANIC), on_durable=lambda: durable.append("P1")
                    )
                    await wait_until(lambda: durable == ["P1"], 10, "the panic from the reserve")
                    assert journal.reserve.short
                    await asyncio.to_thread(fill, state / "second.log")
                    await journal.append(
                        make_event(EventKind.PANIC, pad="x" * 4000),
                        on_durable=lambda: durable.append("P2"),
                    )
                    await wait_until(lambda: journal.queued == 0, 10, "the writer holding it")
                    assert durable == ["P1"]
                    assert not writer.done()
                    (state / "second.log").unlink()
                    await wait_until(lambda: durable == ["P1", "P2"], 30, "the held panic")
                    writer.cancel()

            asyncio.run(scenario())
    except MountUnavailableError as exc:
        pytest.skip(f"{exc} (needs root or CAP_SYS_ADMIN)")
