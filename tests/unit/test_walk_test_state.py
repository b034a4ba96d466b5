"""A walk test kept in the state dir: resumed after a restart, ended at once if its time ran out."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config.file import load_config
from gateway.device_state import DeviceStates
from gateway.events import Event, EventKind
from gateway.walk_test import WalkTest
from tests.events import make_event

CONFIG = """\
gateway: {id: GW-007, large_grid: L1}
broker: {url: "mqtt://127.0.0.1:1883"}
no_forwarders_ok: true
shops:
- {id: S1, name: Tea house, lat: 39.9, lon: 116.4, grid: {large: L1, medium: M1, small: s1}}
- {id: S2, name: Noodles, lat: 39.901, lon: 116.4, grid: {large: L1, medium: M1, small: s1}}
"""


def saved(ends_at: datetime) -> str:
    return json.dumps(
        {
            "last_result": None,
            "running": {
                "started_at": (ends_at - timedelta(minutes=30)).isoformat(),
                "ends_at": ends_at.isoformat(),
                "shops": {"S1": {}, "S2": {}},
                "real_alarms": [],
            },
        }
    )


def walk_test(tmp_path, told: list[Event], state: str) -> WalkTest:
    path = tmp_path / "lianfang.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    config.state_dir.mkdir()
    (config.state_dir / "walktest.json").write_text(state)
    return walk_test_from(tmp_path, told)


def walk_test_from(tmp_path, told: list[Event]) -> WalkTest:
    """A walk test of the gateway in ``tmp_path``, as a (re)start makes it."""
    config = load_config(tmp_path / "lianfang.yaml")

    async def emit(event: Event) -> None:
        told.append(event)

    return WalkTest(config, emit=emit, device_states=DeviceStates(config.journal_path))


async def run_until(walk: WalkTest, done) -> None:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(walk.run(), name="walk-test")
        async with asyncio.timeout(5):
            while not done():
                await asyncio.sleep(0.01)
        task.cancel()


def test_a_test_whose_time_ran_out_while_down_ends_at_once(tmp_path):
    """Resumed past its end: each shop's walk_test_ended (time up) goes out, the file says so."""
    told: list[Event] = []
    walk = walk_test(tmp_path, told, saved(datetime.now(UTC) - timedelta(seconds=1)))
    assert walk.status()["running"] is True
    asyncio.run(run_until(walk, lambda: len(told) == 2))
    assert [(e.kind, e.shop_id, e.attrs["reason"]) for e in told] == [
        (EventKind.WALK_TEST_ENDED, "S1", "time up"),
        (EventKind.WALK_TEST_ENDED, "S2", "time up"),
    ]
    kept = json.loads((tmp_path / "state" / "walktest.json").read_text())
    assert "running" not in kept
    assert kept["last_result"]["ended_because"] == "time up"


def test_a_test_with_time_left_is_resumed_with_its_end(tmp_path):
    """Resumed before its end: still running, same end, nothing told; a press there is a test."""
    told: list[Event] = []
    ends = datetime.now(UTC) + timedelta(minutes=10)
    walk = walk_test(tmp_path, told, saved(ends))
    status = walk.status()
    assert (status["running"], status["ends_at"]) == (True, ends.isoformat())
    now = datetime.now(UTC)
    press = Event(
        id="01J0000000000000000000000",
        gateway_id="GW-007",
        shop_id="S1",
        device_id="panel-1",
        kind=EventKind.PANIC,
        occurred_at=now,
        received_at=now,
        source={"driver": "shops", "ref": "t"},
    )
    assert walk.mark(press).attrs == {"test": True}
    assert walk.mark(press.model_copy(update={"shop_id": "S9"})).attrs == {}
    assert told == []


class SlowDisk(ThreadPoolExecutor):
    """The loop's worker thread, holding every job until released: a disk that takes its time."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.held = threading.Event()
        self.release = threading.Event()
        self.jobs = 0
        self.finished = 0

    def submit(self, fn, /, *args, **kwargs):
        def held():
            self.held.set()
            self.release.wait(10)
            try:
                return fn(*args, **kwargs)
            finally:
                self.finished += 1

        self.jobs += 1
        return super().submit(held)


def test_a_slow_device_heard_save_cannot_bring_a_stopped_test_back(tmp_path):
    """A "device heard" save still on its way when the test stops lands last: still stopped."""
    told: list[Event] = []
    walk = walk_test(tmp_path, told, saved(datetime.now(UTC) + timedelta(minutes=10)))
    disk = SlowDisk()

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(disk)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(walk.run(), name="walk-test")
            walk.mark(make_event(EventKind.DOOR_OPEN, shop="S1", gateway_id="GW-007"))
            async with asyncio.timeout(5):
                while not disk.held.is_set():
                    await asyncio.sleep(0.01)
            await walk.stop("stopped")
            disk.release.set()
            async with asyncio.timeout(5):
                while disk.finished < disk.jobs:
                    await asyncio.sleep(0.01)
            task.cancel()

    asyncio.run(scenario())
    disk.shutdown()
    again = walk_test_from(tmp_path, told)
    assert again.status()["running"] is False
    assert again.status()["ended_because"] == "stopped"


def test_a_state_file_is_synced_to_the_card_before_it_replaces_the_old(tmp_path, monkeypatch):
    """The new text and the rename reach the card: fsync of the file, then of its folder."""
    import os  # noqa: PLC0415

    from gateway.state_file import write_atomically  # noqa: PLC0415

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if Path(f"/proc/self/fd/{fd}").is_dir() else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "walktest.json"
    write_atomically(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert synced == ["file", "dir"]
    synced.clear()
    write_atomically(target, '{"a": 2}', durable=False)
    assert (target.read_text(), synced) == ('{"a": 2}', [])
