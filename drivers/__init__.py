"""Southbound drivers, one module per protocol, registered here explicitly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from drivers.base import Driver
from drivers.line_serial import LineSerialConfig, LineSerialDriver
from drivers.modbus import ModbusConfig, ModbusDriver
from drivers.mqtt_devices import MqttDevicesConfig, MqttDevicesDriver
from drivers.mqtt_ingest import MqttIngestConfig, MqttIngestDriver
from drivers.rf433 import Rf433Config, Rf433Driver

DRIVERS: dict[str, Callable[..., Driver]] = {
    d.kind: d
    for d in (MqttIngestDriver, LineSerialDriver, ModbusDriver, Rf433Driver, MqttDevicesDriver)
}

DriverConfigUnion = Annotated[
    MqttIngestConfig | LineSerialConfig | ModbusConfig | Rf433Config | MqttDevicesConfig,
    Field(discriminator="kind"),
]
