"""Settings of a 433 MHz receiver module and its learned buttons.

Apart from the driver: the daemon imports every driver's settings for its config, and
a driver's code only when the config runs it (decision 102).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.base import DeviceBinding, DriverConfig
from gateway.events import EventKind


class Rf433ButtonConfig(DeviceBinding):
    """A learned button: its code and the shop device it is."""

    code: str = Field(pattern=r"^[0-9A-F]{6}$", description="Fixed code, 6 upper-case hex digits.")
    event: EventKind = Field(default=EventKind.PANIC, description="Kind of event a press makes.")


class Rf433Config(DriverConfig):
    """A 433 MHz receiver module on a serial port."""

    kind: Literal["rf433"] = Field(description="Driver type.")
    port: str = Field(min_length=1, description="Serial device or pyserial URL of the receiver.")
    baudrate: int = Field(default=9600, ge=300, le=921600, description="Line speed, baud.")
    line_pattern: str = Field(
        default=r"RX:(?P<code>[0-9A-Fa-f]{6})",
        description="Regular expression for one received line; its 'code' group is the code.",
    )
    burst_s: float = Field(
        default=1.0, gt=0, le=10, description="Frames of one code closer than this are one press."
    )
    buttons: list[Rf433ButtonConfig] = Field(
        default_factory=list, description="Learned buttons (lianfang learn adds them)."
    )

    @field_validator("line_pattern")
    @classmethod
    def _pattern_has_code(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "code" not in compiled.groupindex:
            raise ValueError("needs a named group 'code', e.g. RX:(?P<code>[0-9A-F]{6})")
        return pattern

    @model_validator(mode="after")
    def _unique_codes(self) -> Rf433Config:
        seen: dict[str, str] = {}
        for button in self.buttons:
            if button.code in seen:
                raise ValueError(
                    f"code {button.code} is learned twice ({seen[button.code]} and "
                    f"{button.shop_id}/{button.device_id})"
                )
            seen[button.code] = f"{button.shop_id}/{button.device_id}"
        return self

    def bound_devices(self) -> list[tuple[str, str, tuple[str | int, ...]]]:
        """Each button's shop and device id, with where it is in this driver's config."""
        return [(b.shop_id, b.device_id, ("buttons", i)) for i, b in enumerate(self.buttons)]
