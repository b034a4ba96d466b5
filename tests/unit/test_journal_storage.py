"""The journal while storage is short: what it refuses, what the reserve takes, and resuming."""

from __future__ import annotations

import asyncio

import pytest

from gateway.events import EventKind
from gateway.journal import MAX_REFUSED_PER_SHORTAGE, Journal
from lab.disk import MountUnavailableError, fill, small_tmpfs
from tests.clients import wait_until
from tests.events import make_event

RESERVE = 256 * 1024


def test_while_short_only_kept_non_alarms_are_refused_and_only_up_to_the_bound(tmp_path):
    """Refused: non-alarms with a sender that keeps them, 100 at most; taken: everything else."""
    journal = Journal(
        tmp_path / "j.db", route=lambda _e: ["police"], max_size_bytes=10**9, reserve_bytes=RESERVE
    )
    ballast = tmp_path / "reserve.ballast"
    assert ballast.stat().st_size == RESERVE
    journal.reserve.release("a test says the disk is full")
    assert not ballast.exists()
    durable: list[str] = []

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(journal.run(), name="journal")
            for n in range(MAX_REFUSED_PER_SHORTAGE + 1):
                await journal.append(
                    make_event(EventKind.LOW_BATTERY),
                    on_durable=lambda n=n: durable.append(f"B{n}"),
                )
            await journal.append(
                make_event(EventKind.PANIC), on_durable=lambda: durable.append("P")
            )
            await journal.append(make_event(EventKind.DEVICE_FAULT))  # the gateway's own
            await wait_until(lambda: journal.stats.appended == 3, 5, "three appended")
            assert journal.stats.refused == MAX_REFUSED_PER_SHORTAGE
            assert durable == [f"B{MAX_REFUSED_PER_SHORTAGE}", "P"]

            assert journal.try_resume()  # the disk has room: the ballast is made again
            assert ballast.stat().st_size == RESERVE
            await journal.append(
                make_event(EventKind.LOW_BATTERY), on_durable=lambda: durable.append("after")
            )
            await wait_until(lambda: "after" in durable, 5, "an event taken after the shortage")
            writer.cancel()

    asyncio.run(scenario())


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
