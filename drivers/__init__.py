"""Southbound drivers, one module per protocol, registered here explicitly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from drivers.base import Driver
from drivers.line_serial import LineSerialConfig, LineSerialDriver
from drivers.modbus import ModbusConfig, ModbusDriver
from drivers.mqtt_ingest import MqttIngestConfig, MqttIngestDriver

DRIVERS: dict[str, Callable[..., Driver]] = {
    d.kind: d for d in (MqttIngestDriver, LineSerialDriver, ModbusDriver)
}

DriverConfigUnion = Annotated[
    MqttIngestConfig | LineSerialConfig | ModbusConfig, Field(discriminator="kind")
]
