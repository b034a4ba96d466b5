"""Settings of a Modbus bus (RTU or TCP) of IO modules.

Apart from the driver: the daemon imports every driver's settings for its config, and
a driver's code only when the config runs it (decision 102).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.base import DeviceBinding, DriverConfig
from gateway.events import EventKind


class ModbusInputConfig(BaseModel):
    """One contact on a module: a zone."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, defer_build=True
    )  # built at first use (decision 86)

    zone: str = Field(min_length=1, max_length=20, description="Zone name or number.")
    table: Literal["discrete_input", "input_register", "holding_register"] = Field(
        default="discrete_input", description="Where the contact is read."
    )
    address: int = Field(ge=0, le=65535, description="Register or input address (0-based).")
    bit: int = Field(default=0, ge=0, le=15, description="Bit within a register (registers only).")
    contact: Literal["NO", "NC"] = Field(
        default="NC",
        description="NC: the input reads 1 while the door is shut (a cut wire reads open). "
        "NO: it reads 1 while the door is open.",
    )
    debounce_s: float = Field(
        default=0, ge=0, le=10, description="A change must hold this long to count."
    )
    open_kind: EventKind = Field(default=EventKind.DOOR_OPEN, description="Kind when it opens.")
    close_kind: EventKind = Field(default=EventKind.DOOR_CLOSE, description="Kind when it shuts.")

    def is_open(self, bit: bool) -> bool:
        """Whether the door is open when the input reads ``bit``."""
        return bit if self.contact == "NO" else not bit


class ModbusModuleConfig(DeviceBinding):
    """An IO module on the bus, bound to a shop device (kind io_module)."""

    unit: int = Field(ge=1, le=247, description="Modbus unit id (slave address).")
    poll_interval_s: float = Field(default=0.2, ge=0.02, le=60, description="Poll period, s.")
    inputs: list[ModbusInputConfig] = Field(
        default_factory=list, description="Contacts, one per zone."
    )
    siren_coil: int | None = Field(default=None, ge=0, le=65535, description="Siren coil.")
    strobe_coil: int | None = Field(default=None, ge=0, le=65535, description="Strobe coil.")


class ModbusConfig(DriverConfig):
    """One Modbus bus: a serial port (RTU) or a TCP endpoint, and its modules."""

    kind: Literal["modbus"] = Field(description="Driver type.")
    port: str | None = Field(
        default=None, description="Serial device or pyserial URL for RTU (e.g. /dev/ttyUSB1)."
    )
    host: str | None = Field(
        default=None, pattern=r"^[^:\s]+:\d{1,5}$", description="HOST:PORT for Modbus TCP."
    )
    baudrate: int = Field(default=9600, ge=300, le=921600, description="RTU line speed, baud.")
    timeout_s: float = Field(default=0.5, gt=0, le=10, description="Answer timeout per request.")
    failed_polls: int = Field(
        default=3, ge=1, le=100, description="Failed polls in a row that make a device_fault."
    )
    frame_gap_s: float = Field(
        default=0.005, ge=0, le=1, description="Quiet time between requests on an RTU bus."
    )
    siren_max_s: float = Field(
        default=180,
        gt=0,
        le=1800,
        description="Longest a siren sounds for one request, s (local rules often cap it).",
    )
    fault_poll_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Poll period of a module in device_fault, so its timeouts do not slow the bus.",
    )
    modules: list[ModbusModuleConfig] = Field(min_length=1, description="Modules on the bus.")

    @model_validator(mode="after")
    def _one_link(self) -> ModbusConfig:
        if (self.port is None) == (self.host is None):
            raise ValueError("give exactly one of 'port' (RTU) and 'host' (TCP)")
        units = [m.unit for m in self.modules]
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids repeat on one bus: {sorted(units)}")
        return self

    def bound_devices(self) -> list[tuple[str, str, tuple[str | int, ...]]]:
        """Each module's shop and device id, with where it is in this driver's config."""
        return [(m.shop_id, m.device_id, ("modules", i)) for i, m in enumerate(self.modules)]

    @property
    def where(self) -> str:
        """The bus, as logs name it."""
        return self.host or self.port or ""
