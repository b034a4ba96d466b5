"""Settings of a serial bus of wired panic buttons and keypads (line protocol).

Apart from the driver: the daemon imports every driver's settings for its config, and
a driver's code only when the config runs it (decision 102).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from drivers.base import DeviceBinding, DriverConfig
from gateway.events import EventKind

MAX_KEYS = 16


class LineDeviceConfig(DeviceBinding):
    """A device on the bus: its address and the shop device it is."""

    address: int = Field(ge=1, le=247, description="Bus address set on the device (1-247).")
    supervision_s: float | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Heartbeat supervision: silent this long raises supervision_lost. "
        "None: not supervised.",
    )


class LineSerialConfig(DriverConfig):
    """A serial bus of wired panic buttons and keypads speaking the line protocol."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["line_serial"] = Field(description="Driver type.")
    port: str = Field(
        min_length=1,
        description="Serial device (/dev/ttyUSB0) or pyserial URL (socket://host:port).",
    )
    baudrate: int = Field(default=9600, ge=300, le=921600, description="Line speed, baud.")
    devices: list[LineDeviceConfig] = Field(min_length=1, description="Devices on the bus.")
    supervision_s: float | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Supervision interval of every device on the bus that sets none itself.",
    )
    key_sequences: dict[str, EventKind] = Field(
        default_factory=lambda: {"9#": EventKind.PANIC},
        description="Keypad sequences and the event kind each becomes (e.g. '9#': panic).",
    )
    sequence_timeout_s: float = Field(
        default=4.0, gt=0, le=60, description="Keys further apart than this start a new sequence."
    )
    low_battery_v: float = Field(
        default=2.6, gt=0, le=30, description="A heartbeat below this voltage raises low_battery."
    )
    repeat_window_s: float = Field(
        default=10,
        gt=0,
        le=3600,
        description="The last frame of an address, sent again this soon (s), is a "
        "retransmission, not a new frame.",
    )

    @model_validator(mode="after")
    def _unique_addresses(self) -> LineSerialConfig:
        seen: set[int] = set()
        for device in self.devices:
            if device.address in seen:
                raise ValueError(f"address {device.address} is used by two devices on {self.port}")
            seen.add(device.address)
        for sequence in self.key_sequences:
            if not 1 <= len(sequence) <= MAX_KEYS:
                raise ValueError(f"key sequence {sequence!r} must be 1 to {MAX_KEYS} keys")
        return self

    def bound_devices(self) -> list[tuple[str, str, tuple[str | int, ...]]]:
        """Each device's shop and id, with where it is in this driver's config."""
        return [(d.shop_id, d.device_id, ("devices", i)) for i, d in enumerate(self.devices)]
