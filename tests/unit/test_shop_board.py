"""The status page's shop states, read from a real journal file."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from gateway.config.model import ShopConfig
from gateway.events import Event, EventKind, utc_now
from gateway.journal import Journal
from gateway.shop_board import ShopBoard
from tests.events import make_event

SHOPS = [
    ShopConfig(
        id=f"S{i}",
        name=f"Shop {i}",
        lat=23.35 + i / 10_000,
        lon=116.69,
        grid={"large": "L1", "medium": "L1-M01", "small": "L1-M01-01"},
    )
    for i in range(1, 6)
]


def journal_with(path: Path, events: list[Event]) -> None:
    """Append ``events`` durably with the real journal writer."""
    journal = Journal(path, route=lambda _e: (), max_size_bytes=10**9)

    async def append_all() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(journal.run(), name="journal")
            done = asyncio.Event()
            for i, event in enumerate(events):
                last = i == len(events) - 1
                await journal.append(event, on_durable=done.set if last else None)
            await asyncio.wait_for(done.wait(), 10)
            task.cancel()

    asyncio.run(append_all())
    journal.close()


def states(
    board: ShopBoard, faults: dict[str, str] | None = None, under_test: tuple[str, ...] = ()
) -> dict[str, tuple[str, str | None]]:
    return {s["id"]: (s["state"], s["reason"]) for s in board.shops(faults or {}, under_test)}


def test_each_shop_gets_its_most_urgent_state(tmp_path):
    """Alarm, cancelled alarm, shop under test, device fault, expired alarm: one state each."""
    long_ago = utc_now() - timedelta(minutes=10)
    journal_with(
        tmp_path / "j.db",
        [
            make_event(EventKind.PANIC, shop="S1"),
            make_event(EventKind.PANIC, shop="S2"),
            make_event(EventKind.CANCEL, shop="S2"),
            make_event(EventKind.PANIC, shop="S3", test=True),
            make_event(EventKind.DURESS, shop="S5", at=long_ago),
        ],
    )
    board = ShopBoard(tmp_path / "j.db", SHOPS, alarm_s=300)
    assert board.refresh()
    # S3's test panic is not an alarm; S3 is in test while the walk test runs, then tested.
    assert states(board, {"S4/pb-1": "supervision_lost"}, under_test=("S3",)) == {
        "S1": ("alarm", "panic"),
        "S2": ("untested", None),
        "S3": ("in_test", None),
        "S4": ("fault", "pb-1: supervision_lost"),
        "S5": ("untested", None),
    }
    assert states(board)["S3"] == ("normal", None)
    newest = board.events(2)
    assert [(e["shop_id"], e["kind"], e["test"]) for e in newest] == [
        ("S5", "duress", False),
        ("S3", "panic", True),
    ]
    board.close()


def test_a_later_look_reads_only_what_was_appended(tmp_path):
    """A second look finds the new panic; a look with nothing new says so."""
    path = tmp_path / "j.db"
    journal_with(path, [make_event(EventKind.DOOR_CLOSE, shop="S2")])
    board = ShopBoard(path, SHOPS, alarm_s=300)
    assert board.refresh()
    assert not board.refresh()
    journal_with(path, [make_event(EventKind.PANIC, shop="S2")])
    assert board.refresh()
    assert states(board)["S2"] == ("alarm", "panic")
    assert [e["kind"] for e in board.events(10)] == ["panic", "door_close"]
    board.close()
