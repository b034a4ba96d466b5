"""Modbus IO modules: the driver in-process against the real pymodbus stub (TCP and RTU on ptys)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.base import DriverContext
from drivers.modbus import ModbusDriver, modbus_client, scan_units
from drivers.modbus_config import ModbusConfig
from firmware_stubs.modbus_io import ModbusIO
from gateway.app import Gateway
from gateway.config.model import GatewayConfig
from gateway.device_state import DeviceStates
from gateway.errors import DriverUnavailable
from gateway.events import Event
from gateway.journal_schema import connect
from gateway.mqtt.client import BrokerConfig
from lab.broker import free_port
from tests.clients import wait_until
from tests.field import flush_device_states, stub

PERIOD = 0.2


def config(where: dict[str, str]) -> ModbusConfig:
    return ModbusConfig.model_validate(
        {
            "kind": "modbus",
            "name": "io-bus",
            **where,
            "timeout_s": 0.3,
            "modules": [
                {
                    "unit": 1,
                    "shop_id": "S00011",
                    "device_id": "io-1",
                    "poll_interval_s": PERIOD,
                    "inputs": [{"zone": "1", "address": 0}, {"zone": "2", "address": 1}],
                    "siren_coil": 0,
                    "strobe_coil": 1,
                },
                {
                    "unit": 2,
                    "shop_id": "S00012",
                    "device_id": "io-1",
                    "poll_interval_s": PERIOD,
                    "inputs": [{"zone": "1", "address": 0}],
                },
            ],
        }
    )


class Collected(list[Event]):
    async def __call__(self, event: Event, *, on_durable=None, **_: object) -> None:
        self.append(event)
        if on_durable:
            on_durable()

    def kinds(self) -> list[tuple[str | None, str]]:
        return [(e.shop_id, e.kind.value) for e in self]


def driver_for(cfg: ModbusConfig, state_dir: Path) -> ModbusDriver:
    context = DriverContext(
        gateway_id="GW-001",
        block_broker=BrokerConfig(url="mqtt://127.0.0.1:1"),
        state_dir=state_dir,
    )
    return ModbusDriver(cfg, context=context)


@asynccontextmanager
async def driving(driver: ModbusDriver, events: Collected) -> AsyncIterator[None]:
    """The driver polling in a task, until the block ends."""
    task = asyncio.create_task(driver.run(events), name="driver")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def stub_with_coils() -> AsyncIterator[tuple[str, ModbusIO, list[tuple[int, int, bool]]]]:
    """A TCP stub with units 1 and 2, and the list its coil changes are added to."""
    tcp = f"127.0.0.1:{free_port()}"
    io = ModbusIO([1, 2], tcp=tcp)
    await io.start()
    changes: list[tuple[int, int, bool]] = []
    watcher = asyncio.create_task(io.watch_coils(lambda *c: changes.append(c)), name="watch")
    try:
        yield tcp, io, changes
    finally:
        watcher.cancel()
        await io.stop()


@asynccontextmanager
async def relay(target: str, after_reply: Callable[[], None]) -> AsyncIterator[str]:
    """A loopback TCP hop to ``target`` (HOST:PORT) that calls ``after_reply()`` after passing on each reply."""
    host, _, port = target.rpartition(":")

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, after: Callable[[], None]
    ) -> None:
        while data := await reader.read(4096):
            writer.write(data)  # sent at once on loopback: readable by the other end now
            after()
        writer.close()

    async def hop(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            pipe(client_reader, server_writer, lambda: None),
            pipe(server_reader, client_writer, after_reply),
            return_exceptions=True,
        )

    server = await asyncio.start_server(hop, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def test_door_edges_faults_and_restore_over_tcp(tmp_path):
    """Door open/close become events within two polls of the module; a stopped stub is a device_fault per module; restarted, a restore."""

    async def scenario() -> None:
        tcp = f"127.0.0.1:{free_port()}"
        io = ModbusIO([1, 2], tcp=tcp)
        await io.start()
        driver = driver_for(config({"host": tcp}), tmp_path)
        events = Collected()
        try:
            async with driving(driver, events):
                await exercise(io, driver, events)
        finally:
            await io.stop()

    async def exercise(io: ModbusIO, driver: ModbusDriver, events: Collected) -> None:
        await wait_until(lambda: driver.polls >= 4, 10, "first polls")
        before = driver.polls
        await io.set_door(1, 1, is_open=True)
        await wait_until(lambda: events, 10, "door_open")
        # two modules share the bus: two polls of unit 1 are at most five bus polls
        assert driver.polls - before <= 5
        [opened] = events
        assert (opened.shop_id, opened.device_id, opened.zone) == ("S00011", "io-1", "2")
        assert opened.kind == "door_open"
        await io.set_door(1, 1, is_open=False)
        await wait_until(lambda: len(events) == 2, 10, "door_close")
        assert events[1].kind == "door_close"
        await io.stop()
        await wait_until(lambda: len(events) == 4, 15, "two device faults")
        assert sorted(events.kinds()[2:]) == [
            ("S00011", "device_fault"),
            ("S00012", "device_fault"),
        ]
        faulted = driver.polls
        # Two modules on one bus: six bus polls are three more failed polls of each.
        await wait_until(lambda: driver.polls >= faulted + 6, 10, "three more failed polls each")
        assert len(events) == 4  # one fault each, not one per failed poll
        await io.set_door(2, 0, is_open=True)  # opened while the module was unreachable
        await io.start()
        await wait_until(lambda: len(events) == 7, 15, "two restores and the door")
        assert sorted(events.kinds()[4:]) == [
            ("S00011", "restore"),
            ("S00012", "door_open"),
            ("S00012", "restore"),
        ]

    asyncio.run(scenario())


def test_siren_is_switched_off_also_after_a_restart_in_between(tmp_path):
    """The siren and strobe coils go on, then off at the deadline; a driver stopped in between leaves the deadline on disk and the next one switches them off."""

    async def scenario() -> None:
        async with stub_with_coils() as (tcp, io, changes):
            first = driver_for(config({"host": tcp}), tmp_path)
            assert first.siren_shops() == {"S00011"}
            async with driving(first, Collected()):
                await wait_until(lambda: first.polls >= 2, 10, "first polls")
                await first.sound_siren("S00011", 0.6)
                await wait_until(lambda: len(changes) == 4, 10, "coils on and off")
                assert changes[:2] == [(1, 0, True), (1, 1, True)]
                assert sorted(changes[2:]) == [(1, 0, False), (1, 1, False)]

                await first.sound_siren("S00011", 1.5)
                await wait_until(lambda: len(changes) == 6, 10, "coils on again")
            assert json.loads((tmp_path / "sirens-io-bus.json").read_text())
            await asyncio.sleep(0.3)
            assert io.coils[1][:2] == [True, True]  # nobody left to switch them off

            second = driver_for(config({"host": tcp}), tmp_path)
            async with driving(second, Collected()):
                await wait_until(lambda: len(changes) == 8, 10, "coils off after the restart")
                assert io.coils[1][:2] == [False, False]
                assert json.loads((tmp_path / "sirens-io-bus.json").read_text()) == {}

    asyncio.run(scenario())


def test_rtu_over_a_pty_and_scan(tmp_path):
    """The stub as a process serving RTU on a pty: scan lists its units, and a door edge arrives."""
    with stub("modbus_io", "--units", "1,2") as io:
        io.expect("READY")

        async def scenario() -> None:
            client = modbus_client(port=io.port, host=None, baudrate=9600, timeout_s=0.3)
            await client.connect()
            assert await scan_units(client, range(1, 5)) == [1, 2]
            client.close()
            driver = driver_for(config({"port": io.port}), tmp_path)
            events = Collected()
            async with driving(driver, events):
                await wait_until(lambda: driver.polls >= 4, 10, "first polls")
                io.send("open 1 0")
                await wait_until(lambda: events, 10, "door_open over RTU")
                assert (events[0].kind, events[0].zone) == ("door_open", "1")

        asyncio.run(scenario())


def test_a_driver_cancelled_as_a_reply_arrives_stops(tmp_path):
    """Cancelled in the very loop turn that brings a module's reply, the driver stops: a gateway shutdown does not hang (Python 3.11's wait_for, which pymodbus uses, drops such a cancel)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        armed = False
        driver_task: asyncio.Task[None] | None = None

        def after_reply() -> None:
            # Scheduled now, the cancel runs just before the driver reads the reply, in
            # the same loop turn: the order in which the race was lost 1 run in 4.
            if armed and driver_task is not None:
                loop.call_soon(driver_task.cancel)

        async with stub_with_coils() as (tcp, _io, _changes), relay(tcp, after_reply) as hop:
            driver = driver_for(config({"host": hop}), tmp_path)
            driver_task = asyncio.create_task(driver.run(Collected()), name="driver")
            try:
                await wait_until(lambda: driver.polls >= 2, 10, "first polls")
                armed = True
                done, _ = await asyncio.wait({driver_task}, timeout=5)
                assert driver_task in done, "the cancelled driver is still polling"
                assert driver_task.cancelled()
            finally:
                driver_task.cancel()
                await asyncio.gather(driver_task, return_exceptions=True)

    asyncio.run(scenario())


def test_scan_command_lists_responding_units(tmp_path):
    """`lianfang scan --host` prints the unit ids that answer, and only those."""

    async def scenario() -> None:
        tcp = f"127.0.0.1:{free_port()}"
        io = ModbusIO([3, 7], tcp=tcp)
        await io.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "scan",
                "--host",
                tcp,
                "--units",
                "1-10",
                "--json",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0
            assert json.loads(out) == [3, 7]
        finally:
            await io.stop()

    asyncio.run(scenario())


def test_gateway_sound_siren_reaches_the_modbus_driver(tmp_path):
    """Gateway.sound_siren (the rules' way in) drives the shop's coil through the Modbus driver; a shop without one gets False."""

    async def scenario() -> None:
        tcp = f"127.0.0.1:{free_port()}"
        io = ModbusIO([1, 2], tcp=tcp)
        await io.start()
        driver = config({"host": tcp}).model_dump(mode="json")
        shops = [
            {
                "id": shop,
                "name": shop,
                "lat": 39.9,
                "lon": 116.4 + i / 1000,
                "grid": {"large": "L1", "medium": "M1", "small": "s1"},
                "devices": [{"id": "io-1", "kind": "io_module"}],
            }
            for i, shop in enumerate(("S00011", "S00012"))
        ]
        gateway = Gateway(
            GatewayConfig.model_validate(
                {
                    "gateway": {"id": "GW-001", "large_grid": "L1"},
                    "broker": {"url": "mqtt://127.0.0.1:1"},
                    "state_dir": str(tmp_path / "state"),
                    "drivers": [driver],
                    "shops": shops,
                }
            )
        )
        changes: list[tuple[int, int, bool]] = []
        watcher = asyncio.create_task(io.watch_coils(lambda *c: changes.append(c)), name="watch")
        modbus = gateway.drivers["io-bus"]
        assert isinstance(modbus, ModbusDriver)
        try:
            async with driving(modbus, Collected()):
                await wait_until(lambda: modbus.polls >= 2, 10, "first polls")
                assert await gateway.sound_siren("S00012", 1) is False
                assert await gateway.sound_siren("S00011", 0.3) is True
                await wait_until(lambda: len(changes) == 4, 10, "siren and strobe on and off")
                assert [c for c in changes if c[2]] == [(1, 0, True), (1, 1, True)]
        finally:
            watcher.cancel()
            gateway.journal.close()
            await io.stop()

    asyncio.run(scenario())


def test_siren_switch_off_waits_for_a_module_that_is_down_without_spinning(tmp_path):
    """A siren whose module goes down before its deadline is switched off once the module is back; meanwhile the bus is not hammered; a garbled deadlines file switches every coil off."""

    async def scenario() -> None:
        async with stub_with_coils() as (tcp, io, changes):
            driver = driver_for(config({"host": tcp}), tmp_path)
            async with driving(driver, Collected()):
                await wait_until(lambda: driver.polls >= 2, 10, "first polls")
                await driver.sound_siren("S00011", 0.3)
                await wait_until(lambda: len(changes) == 2, 10, "coils on")
                await io.stop()
                before = driver.polls
                await asyncio.sleep(2)  # the deadline passes while the module is down
                assert driver.polls - before < 40  # 2 modules at 200 ms, then every 2 s
                assert io.coils[1][:2] == [True, True]
                await io.start()  # the module comes back with its coils still on
                await wait_until(lambda: len(changes) == 4, 15, "coils off once it is back")
                assert io.coils[1][:2] == [False, False]
                await driver.sound_siren("S00011", 60)
                await wait_until(lambda: len(changes) == 6, 10, "coils on for a minute")
            # the deadlines file garbled while the driver was away: every coil goes off
            (tmp_path / "sirens-io-bus.json").write_text('{"1/0": "soon"')
            second = driver_for(config({"host": tcp}), tmp_path)
            async with driving(second, Collected()):
                await wait_until(lambda: len(changes) == 8, 10, "every coil off")
                assert io.coils[1][:2] == [False, False]

    asyncio.run(scenario())


def test_a_siren_request_during_the_switch_off_keeps_its_own_deadline(tmp_path):
    """A second siren request that lands while the first one's coils are being switched off sets them again and is switched off at its own deadline (the coil is never left on)."""

    async def scenario() -> None:
        async with stub_with_coils() as (tcp, io, changes):
            cfg = config({"host": tcp})
            # Polled once at start, then not for a minute: the switch-off is the only request.
            slow = [m.model_copy(update={"poll_interval_s": 60}) for m in cfg.modules]
            driver = driver_for(cfg.model_copy(update={"modules": slow}), tmp_path)
            async with driving(driver, Collected()):
                await wait_until(lambda: driver.polls >= 2, 10, "first polls")
                await driver.sound_siren("S00011", 0.3)
                await wait_until(lambda: len(changes) == 2, 10, "coils on")
                # Hold the bus so that the due switch-off queues behind it, then ask again.
                async with driver._lock:
                    await wait_until(lambda: driver._lock._waiters, 10, "switch-off queued")
                    again = asyncio.create_task(driver.sound_siren("S00011", 1.0), name="again")
                    await wait_until(
                        lambda: len(driver._lock._waiters or ()) >= 2, 10, "request queued"
                    )
                await again
                await wait_until(lambda: io.coils[1][:2] == [True, True], 10, "coils on again")
                await wait_until(lambda: io.coils[1][:2] == [False, False], 10, "coils off again")
                assert json.loads((tmp_path / "sirens-io-bus.json").read_text()) == {}

    asyncio.run(scenario())


def test_a_module_faulted_before_a_restart_is_restored_after_it(tmp_path):
    """A device_fault recorded before a gateway restart is closed by a restore at the module's first answer after it; a healthy module makes no event."""

    async def scenario() -> None:
        path = tmp_path / "journal.db"
        connect(path).close()
        before = DeviceStates(path)
        before.fault("S00011", "io-1", driver="io-bus", fault="device_fault")
        await asyncio.wait_for(flush_device_states(before), 10)

        tcp = f"127.0.0.1:{free_port()}"
        io = ModbusIO([1, 2], tcp=tcp)
        await io.start()
        states = DeviceStates(path)
        context = DriverContext(
            gateway_id="GW-001",
            block_broker=BrokerConfig(url="mqtt://127.0.0.1:1"),
            state_dir=tmp_path,
            device_states=states,
        )
        driver = ModbusDriver(config({"host": tcp}), context=context)
        events = Collected()
        try:
            async with driving(driver, events):
                await wait_until(lambda: driver.polls >= 6, 10, "three polls of each module")
        finally:
            await io.stop()
        assert events.kinds() == [("S00011", "restore")]
        assert states.last("S00011", "io-1").fault is None

    asyncio.run(scenario())


def test_an_overdue_siren_on_a_dead_module_does_not_stall_the_bus(tmp_path):
    """A switch-off owed to a module that does not answer is retried at that module's own (slow) polls, not before every poll of the others; it stays owed."""

    async def scenario() -> None:
        dead = {"unit": 3, "shop_id": "S00013", "device_id": "io-1", "siren_coil": 0}
        (tmp_path / "sirens-io-bus.json").write_text(json.dumps({"3/0": 0}))
        async with stub_with_coils() as (tcp, _io, _changes):
            cfg = config({"host": tcp}).model_dump()
            cfg["modules"].append(dead)
            driver = driver_for(ModbusConfig.model_validate(cfg), tmp_path)
            events = Collected()
            async with driving(driver, events):
                await wait_until(
                    lambda: ("S00013", "device_fault") in events.kinds(), 15, "unit 3 faulted"
                )
                polls, requests = driver.polls, driver.requests
                await wait_until(lambda: driver.polls >= polls + 30, 20, "30 more polls")
                # One request a poll, and a switch-off attempt at unit 3's rare polls only.
                assert driver.requests - requests < 1.3 * (driver.polls - polls)
        assert json.loads((tmp_path / "sirens-io-bus.json").read_text()) == {"3/0": 0}

    asyncio.run(scenario())


def test_a_failed_coil_does_not_keep_the_shops_other_siren_silent(tmp_path):
    """A shop's coil that the module refuses makes sound_siren fail, but only after the shop's other siren and strobe are on."""

    async def scenario() -> None:
        async with stub_with_coils() as (tcp, io, _changes):
            cfg = config({"host": tcp}).model_dump()
            # unit 2 as a second module of the same shop, its siren on a coil it does not have
            refusing = cfg["modules"].pop(1) | {"shop_id": "S00011", "siren_coil": 100}
            cfg["modules"].insert(0, refusing)
            driver = driver_for(ModbusConfig.model_validate(cfg), tmp_path)
            async with driving(driver, Collected()):
                await wait_until(lambda: driver.polls >= 2, 10, "first polls")
                with pytest.raises(DriverUnavailable, match="2/100"):
                    await driver.sound_siren("S00011", 30)
                await wait_until(lambda: io.coils[1][:2] == [True, True], 10, "unit 1 sounding")

    asyncio.run(scenario())
