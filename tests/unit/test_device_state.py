"""Device state in the journal database, and the supervision that survives a gateway restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.base import DeviceBinding, DriverContext
from drivers.line_serial import LineSerialDriver
from drivers.line_serial_config import LineSerialConfig
from drivers.supervision import Supervision
from gateway.device_state import DeviceStates
from gateway.events import Event, EventKind
from gateway.journal_schema import connect
from gateway.mqtt.client import BrokerConfig
from tests.field import flush_device_states

BUTTON = DeviceBinding(shop_id="S1", device_id="pb-1")


def _context(states: DeviceStates) -> DriverContext:
    return DriverContext("GW-001", BrokerConfig(url="mqtt://127.0.0.1:1"), device_states=states)


def test_a_device_lost_before_a_restart_is_restored_once_after_it(tmp_path: Path) -> None:
    """A supervision_lost raised before a restart is not raised again after it; the device's next frame is its restore."""
    path = tmp_path / "journal.db"
    connect(path).close()
    before = DeviceStates(path)
    before.seen("S1", "pb-1", driver="bus-1", battery_v=3.0)
    before.fault("S1", "pb-1", driver="bus-1", fault="supervision_lost")
    before.seen("S1", "pb-2", driver="bus-1")
    asyncio.run(flush_device_states(before))

    after = DeviceStates(path)
    assert [(s.device_id, s.fault, s.battery_v) for s in after.all()] == [
        ("pb-1", "supervision_lost", 3.0),
        ("pb-2", None, None),
    ]
    supervision = Supervision("bus-1", _context(after), [(BUTTON, 0.05)])
    emitted: list[Event] = []

    async def emit(event: Event, **_: object) -> None:
        emitted.append(event)

    async def watch_a_while() -> None:
        task = asyncio.create_task(supervision.watch(emit), name="watch")
        await asyncio.sleep(0.3)  # several intervals: a second supervision_lost would come
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(watch_a_while())
    assert emitted == []
    assert supervision.heard(BUTTON) is True  # the driver emits its restore
    assert supervision.heard(BUTTON) is False
    assert after.last("S1", "pb-1").fault is None


def test_a_battery_low_before_a_restart_is_not_raised_again_after_it(tmp_path: Path) -> None:
    """A heartbeat still low after a restart makes no second low_battery; a fresh battery restores."""
    path = tmp_path / "journal.db"
    connect(path).close()
    before = DeviceStates(path)
    before.seen("S1", "pb-1", driver="bus-1", battery_v=2.4)
    asyncio.run(flush_device_states(before))
    bus = LineSerialConfig.model_validate(
        {
            "kind": "line_serial",
            "name": "bus-1",
            "port": "/dev/ttyUSB0",
            "devices": [
                {"address": 3, "shop_id": "S1", "device_id": "pb-1"},
                {"address": 4, "shop_id": "S1", "device_id": "pb-2"},
            ],
        }
    )
    driver = LineSerialDriver(bus, context=_context(DeviceStates(path)))
    assert driver._battery(3, 2.4) is None
    assert driver._battery(3, 3.0) == EventKind.RESTORE
    assert driver._battery(4, 2.4) == EventKind.LOW_BATTERY  # never recorded low: raised
