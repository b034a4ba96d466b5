"""Field driver config and logic that needs no bus: bindings, registry, debounce."""

from __future__ import annotations

import asyncio
import os
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import DRIVERS, driver_class
from drivers.base import DriverContext
from drivers.line_serial import LineSerialDriver
from drivers.line_serial_config import LineSerialConfig
from drivers.modbus import _Contact, _debounced, parse_units
from drivers.modbus_config import ModbusInputConfig
from drivers.rf433 import CodeReader
from drivers.rf433_config import Rf433Config
from drivers.serial_port import open_serial
from gateway.config import kinds
from gateway.config.model import GatewayConfig
from gateway.errors import DriverUnavailable
from gateway.mqtt.client import BrokerConfig
from protocols.line_frames import LineFrame

BASE = {
    "gateway": {"id": "GW-001", "large_grid": "L1"},
    "broker": {"url": "mqtt://127.0.0.1:1883"},
    "shops": [
        {
            "id": "S1",
            "name": "One",
            "lat": 39.9,
            "lon": 116.4,
            "grid": {"large": "L1", "medium": "M1", "small": "s1"},
            "devices": [{"id": "pb-1", "kind": "panic_button"}],
        }
    ],
}


def line(device_id: str, shop: str = "S1") -> dict[str, object]:
    return {
        "kind": "line_serial",
        "name": "bus-1",
        "port": "/dev/ttyUSB0",
        "devices": [{"address": 3, "shop_id": shop, "device_id": device_id}],
    }


def test_registry_matches_config_union():
    """Every driver kind in the config union has exactly one registered driver, of that kind."""
    union = typing.get_args(typing.get_args(kinds.driver_settings())[0])
    named = {typing.get_args(c.model_fields["kind"].annotation)[0] for c in union}
    assert named == set(DRIVERS)
    assert {kind: driver_class(kind).kind for kind in DRIVERS} == {kind: kind for kind in DRIVERS}


def test_binding_to_a_listed_device_is_valid():
    """A bus device bound to a device its shop lists is accepted, bound as given."""
    config = GatewayConfig.model_validate({**BASE, "drivers": [line("pb-1")]})
    [driver] = config.drivers
    [device] = driver.devices
    assert (driver.kind, device.address, device.shop_id, device.device_id) == (
        "line_serial",
        3,
        "S1",
        "pb-1",
    )


@pytest.mark.parametrize(
    ("driver", "words"),
    [
        (line("pb-9"), "binds device 'pb-9', which shop 'S1' does not list"),
        (line("pb-1", shop="S9"), "shop 'S9', not a served shop"),
    ],
)
def test_binding_to_an_unknown_device_names_it(driver, words):
    """A binding to a device or shop that is not configured is refused, naming both."""
    with pytest.raises(ValidationError) as caught:
        GatewayConfig.model_validate({**BASE, "drivers": [driver]})
    assert words in str(caught.value)


def test_repeated_address_and_two_links_are_refused():
    """Two devices on one address, and a Modbus bus with both port and host, are config errors."""
    bus = line("pb-1")
    bus["devices"] = [*bus["devices"], {"address": 3, "shop_id": "S1", "device_id": "pb-2"}]  # type: ignore[misc]
    with pytest.raises(ValidationError, match="address 3 is used by two devices"):
        GatewayConfig.model_validate({**BASE, "drivers": [bus]})
    modbus = {
        "kind": "modbus",
        "name": "io",
        "port": "/dev/ttyUSB1",
        "host": "10.0.0.5:502",
        "modules": [{"unit": 1, "shop_id": "S1", "device_id": "pb-1"}],
    }
    with pytest.raises(ValidationError, match="exactly one of 'port'"):
        GatewayConfig.model_validate({**BASE, "drivers": [modbus]})


def test_two_drivers_on_one_port_are_refused():
    """A serial port belongs to one driver; the second is named."""
    rf = {"kind": "rf433", "name": "rf-1", "port": "/dev/ttyUSB0"}
    with pytest.raises(ValidationError, match="drivers 'bus-1' and 'rf-1' both use port"):
        GatewayConfig.model_validate({**BASE, "drivers": [line("pb-1"), rf]})


def test_contact_polarity():
    """NC reads 1 while shut (a cut wire reads open); NO reads 1 while open."""
    nc = ModbusInputConfig(zone="1", address=0)
    no = ModbusInputConfig(zone="1", address=0, contact="NO")
    assert [nc.is_open(b) for b in (True, False)] == [False, True]
    assert [no.is_open(b) for b in (True, False)] == [True, False]


def test_debounce_needs_a_change_to_hold():
    """A blip shorter than the debounce makes no event; a change that holds makes one, once."""
    contact = _Contact(ModbusInputConfig(zone="1", address=0, debounce_s=0.5))
    assert _debounced(contact, 0.0, is_open=False) is None  # first reading: the state
    assert _debounced(contact, 1.0, is_open=True) is None  # opened...
    assert _debounced(contact, 1.2, is_open=False) is None  # ...a blip
    assert _debounced(contact, 2.0, is_open=True) is None
    assert _debounced(contact, 2.4, is_open=True) is None
    assert _debounced(contact, 2.5, is_open=True) == "door_open"
    assert _debounced(contact, 3.0, is_open=True) is None
    assert _debounced(contact, 3.1, is_open=False) is None
    assert _debounced(contact, 3.6, is_open=False) == "door_close"


def test_unit_lists():
    """Unit ranges and lists as the installer types them."""
    assert parse_units("1-3,7") == [1, 2, 3, 7]


def test_keypad_sequences_longest_match_and_timeout():
    """With '9#' and '1239#' configured, 1239# is the longer one; keys too far apart start afresh; a lone key matches nothing."""
    config = LineSerialConfig.model_validate(
        {
            **line("pb-1"),
            "key_sequences": {"9#": "panic", "1239#": "disarm"},
            "sequence_timeout_s": 2,
        }
    )
    driver = LineSerialDriver(
        config, context=DriverContext("GW-001", BrokerConfig(url="mqtt://127.0.0.1:1"))
    )
    typed = [driver._typed(3, key, t) for key, t in zip("1239#", [0, 0.5, 1, 1.5, 2], strict=True)]
    assert typed == [None, None, None, None, "1239#"]
    assert [driver._typed(3, k, t) for k, t in (("9", 10), ("#", 10.5))] == [None, "9#"]
    assert [driver._typed(3, k, t) for k, t in (("9", 20), ("#", 22.5))] == [None, None]
    assert driver._typed(3, "9", 30) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A1B2C3", "00FFEE", "123456"]), st.integers(1, 12)), max_size=8
    ),
    st.lists(st.binary(max_size=30), max_size=8),
)
def test_each_burst_is_one_press_whatever_the_noise(presses, noise):
    """Bursts 1 s apart give one code each, in order; garbled lines in between give none."""
    reader = CodeReader(Rf433Config.model_fields["line_pattern"].default, burst_s=0.5)
    got: list[str] = []
    now = 0.0
    for i, (code, repeats) in enumerate(presses):
        junk = noise[i] if i < len(noise) else b""
        got += reader.feed(junk.replace(b"\n", b"") + b"\r\n", now)
        for _ in range(repeats):
            got += reader.feed(f"RX:{code.lower()}\r\n".encode(), now)
            now += 0.05
        now += 1.0
    assert got == [code for code, _ in presses]


def test_bus_supervision_interval_applies_to_devices_without_their_own():
    """supervision_s on the bus covers every device; a device's own value wins."""
    bus = line("pb-1")
    bus["devices"] = [  # type: ignore[assignment]
        {"address": 3, "shop_id": "S1", "device_id": "pb-1", "supervision_s": 10},
        {"address": 4, "shop_id": "S1", "device_id": "pb-2"},
    ]
    config = LineSerialConfig.model_validate({**bus, "supervision_s": 60})
    driver = LineSerialDriver(
        config, context=DriverContext("GW-001", BrokerConfig(url="mqtt://127.0.0.1:1"))
    )
    watched = {key[1]: w.interval_s for key, w in driver.supervision._watched.items()}
    assert watched == {"pb-1": 10, "pb-2": 60}


def test_a_stream_of_strangers_codes_does_not_grow_the_burst_memory():
    """Every code heard once (neighbours' remotes, rolling-code keys) is forgotten once its burst is over."""
    reader = CodeReader(r"RX:(?P<code>[0-9A-F]{6})", burst_s=1.0)
    for n in range(5000):
        assert reader.feed(f"RX:{n:06X}\r\n".encode(), now=n * 0.1) == [f"{n:06X}"]
    assert len(reader._last) <= 2 * 64
    # a burst in progress is still one press
    assert reader.feed(b"RX:000001\r\nRX:000001\r\n", now=1000.0) == ["000001"]
    assert reader.feed(b"RX:000001\r\n", now=1000.5) == []


def test_a_frame_whose_emit_was_cancelled_is_taken_when_the_device_repeats_it():
    """Cancelled while the journal was backed up, a panic is not mistaken for a repeat when the device sends it again."""
    config = LineSerialConfig.model_validate(line("pb-1"))
    driver = LineSerialDriver(
        config, context=DriverContext("GW-001", BrokerConfig(url="mqtt://127.0.0.1:1"))
    )
    panic = LineFrame(3, 17, "PANIC", "1")
    taken: list[str] = []

    async def backed_up(event, **_: object) -> None:
        raise asyncio.CancelledError

    async def journal(event, **_: object) -> None:
        taken.append(event.kind.value)

    async def scenario() -> None:
        with pytest.raises(asyncio.CancelledError):
            await driver._handle(panic, backed_up)
        await driver._handle(panic, journal)
        await driver._handle(panic, journal)  # a real repeat of a frame taken: dropped

    asyncio.run(scenario())
    assert taken == ["panic"]


def test_a_serial_port_in_use_is_refused_to_a_second_reader():
    """Two readers of one tty split its bytes; the second opener (learn beside a hung gateway) is refused, the first keeps every byte."""

    async def scenario() -> None:
        device, tty = os.openpty()
        try:
            reader, writer = await open_serial(os.ttyname(tty), 9600)
            with pytest.raises(DriverUnavailable, match="exclusively lock"):
                await open_serial(os.ttyname(tty), 9600)
            os.write(device, b"RX:A1B2C3\r\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"RX:A1B2C3\r\n"
            writer.close()
        finally:
            os.close(device)
            os.close(tty)

    asyncio.run(scenario())
