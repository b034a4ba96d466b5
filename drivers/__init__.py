"""Southbound drivers, one module per protocol, registered here explicitly.

Each driver's settings live in a module of their own (``<driver>_config``): the
config needs every driver's settings, the daemon only the drivers it runs, whose
modules are imported when it builds them (decision 102).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from drivers.base import Driver
from drivers.line_serial_config import LineSerialConfig
from drivers.modbus_config import ModbusConfig
from drivers.mqtt_devices_config import MqttDevicesConfig
from drivers.mqtt_ingest_config import MqttIngestConfig
from drivers.rf433_config import Rf433Config

DRIVERS: dict[str, tuple[str, str]] = {
    "mqtt_ingest": ("drivers.mqtt_ingest", "MqttIngestDriver"),
    "line_serial": ("drivers.line_serial", "LineSerialDriver"),
    "modbus": ("drivers.modbus", "ModbusDriver"),
    "rf433": ("drivers.rf433", "Rf433Driver"),
    "mqtt_devices": ("drivers.mqtt_devices", "MqttDevicesDriver"),
}
"""Each driver kind's module and class."""

DriverConfigUnion = Annotated[
    MqttIngestConfig | LineSerialConfig | ModbusConfig | Rf433Config | MqttDevicesConfig,
    Field(discriminator="kind"),
]


def driver_class(kind: str) -> Callable[..., Driver]:
    """The driver of ``kind``, its module imported now."""
    module, name = DRIVERS[kind]
    # __import__ rather than importlib.import_module: -X importtime lists only the
    # former, and the daemon's import test reads that list.
    driver: Callable[..., Driver] = getattr(__import__(module, fromlist=[name]), name)
    return driver
