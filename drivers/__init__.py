"""Southbound drivers, one module per protocol, registered here explicitly.

Each driver's settings live in a module of their own (``<driver>_config``).
Both tables name modules rather than import them: a config's validation needs
every kind's settings (``gateway.config.kinds``), the daemon only the drivers
it runs and their settings (decisions 102 and 108).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, cast

from pydantic import BaseModel, Field

from drivers.base import Driver

if TYPE_CHECKING:
    from drivers.line_serial_config import LineSerialConfig
    from drivers.modbus_config import ModbusConfig
    from drivers.mqtt_devices_config import MqttDevicesConfig
    from drivers.mqtt_ingest_config import MqttIngestConfig
    from drivers.rf433_config import Rf433Config

    DriverConfigUnion = Annotated[
        MqttIngestConfig | LineSerialConfig | ModbusConfig | Rf433Config | MqttDevicesConfig,
        Field(discriminator="kind"),
    ]
    """What a config's ``drivers`` list holds; built at run time by ``gateway.config.kinds``."""

DRIVERS: dict[str, tuple[str, str]] = {
    "mqtt_ingest": ("drivers.mqtt_ingest", "MqttIngestDriver"),
    "line_serial": ("drivers.line_serial", "LineSerialDriver"),
    "modbus": ("drivers.modbus", "ModbusDriver"),
    "rf433": ("drivers.rf433", "Rf433Driver"),
    "mqtt_devices": ("drivers.mqtt_devices", "MqttDevicesDriver"),
}
"""Each driver kind's module and class."""

SETTINGS: dict[str, tuple[str, str]] = {
    "mqtt_ingest": ("drivers.mqtt_ingest_config", "MqttIngestConfig"),
    "line_serial": ("drivers.line_serial_config", "LineSerialConfig"),
    "modbus": ("drivers.modbus_config", "ModbusConfig"),
    "rf433": ("drivers.rf433_config", "Rf433Config"),
    "mqtt_devices": ("drivers.mqtt_devices_config", "MqttDevicesConfig"),
}
"""Each driver kind's settings module and class."""


def _imported(module: str, name: str) -> object:
    # __import__ rather than importlib.import_module: -X importtime lists only the
    # former, and the daemon's import test reads that list.
    return getattr(__import__(module, fromlist=[name]), name)


def driver_class(kind: str) -> Callable[..., Driver]:
    """The driver of ``kind``, its module imported now."""
    return cast("Callable[..., Driver]", _imported(*DRIVERS[kind]))


def settings_class(kind: str) -> type[BaseModel]:
    """The settings of the driver ``kind``, their module imported now."""
    return cast("type[BaseModel]", _imported(*SETTINGS[kind]))
