"""Settings of devices mapped from MQTT (Zigbee2MQTT, Tasmota, Shelly).

Apart from the driver: the daemon imports every driver's settings for its config, and
a driver's code only when the config runs it (decision 102).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from drivers.base import DeviceBinding, DriverConfig
from drivers.device_maps import PRESETS, DeviceMapper, Mapping
from gateway.mqtt.client import BrokerConfig


class MappedDeviceConfig(DeviceBinding):
    """One shop device on MQTT: its topic and how its payloads read."""

    shop_id: str = Field(
        validation_alias=AliasChoices("shop", "shop_id"),
        description="Shop the device belongs to (one of 'shops').",
    )
    device_id: str = Field(
        validation_alias=AliasChoices("device", "device_id"),
        description="Device id within that shop (one of its 'devices').",
    )
    topic: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^+#{}]+$",
        description="The device's topic (Zigbee2MQTT: base topic and friendly name; Tasmota "
        "switch: its Topic; Shelly: its device id; RF bridge: the topic it reports on).",
    )
    preset: str | None = Field(
        default=None, description="Preset mappings: " + ", ".join(sorted(PRESETS)) + "."
    )
    code: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Fa-f]{1,32}$",
        description="The code the device sends (tasmota.rf_bridge), hex.",
    )
    mappings: list[Mapping] = Field(
        default_factory=list, description="Custom mappings, after the preset's."
    )
    supervision_s: float | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Silent this long raises supervision_lost (default: the driver's).",
    )

    @model_validator(mode="after")
    def _usable(self) -> MappedDeviceConfig:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"no preset {self.preset!r} (presets: {', '.join(sorted(PRESETS))})")
        if self.preset is None and not self.mappings:
            raise ValueError("give a 'preset' or 'mappings' (or both)")
        coded = self.code_key is not None
        if coded and self.code is None:
            raise ValueError(f"preset {self.preset} needs the device's 'code'")
        if not coded and self.code is not None:
            raise ValueError("'code' is only for presets that tell devices by code")
        return self

    @field_validator("code")
    @classmethod
    def _upper(cls, code: str | None) -> str | None:
        return None if code is None else code.upper()

    @property
    def code_key(self) -> str | None:
        """Where messages carry the code of the device they are from, if its preset says."""
        return None if self.preset is None else PRESETS[self.preset].code_key

    def all_mappings(self) -> list[Mapping]:
        """The preset's mappings, then the custom ones."""
        preset = () if self.preset is None else PRESETS[self.preset].mappings
        return [*preset, *self.mappings]

    def mapper(self, burst_s: float) -> DeviceMapper:
        """A fresh mapper of this device's payloads."""
        fields = {"topic": self.topic, "code": self.code or ""}
        return DeviceMapper(self.all_mappings(), fields, burst_s=burst_s)


class MqttDevicesConfig(DriverConfig):
    """Zigbee2MQTT, Tasmota and Shelly devices on an MQTT broker."""

    kind: Literal["mqtt_devices"] = Field(description="Driver type.")
    broker: BrokerConfig | None = Field(
        default=None, description="Broker the devices publish to (default: the block's)."
    )
    devices: list[MappedDeviceConfig] = Field(min_length=1, description="The devices.")
    burst_s: float = Field(
        default=1.0, gt=0, le=10, description="Repeats of a press closer than this are one press."
    )
    supervision_s: float | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Supervision interval of every device that sets none itself.",
    )
    max_payload_bytes: int = Field(
        default=4096, ge=256, le=65536, description="Larger payloads are dropped and counted."
    )
    receive_maximum: int = Field(
        default=500, ge=2, le=65535, description="Unacknowledged messages at most."
    )

    @model_validator(mode="after")
    def _topics_apart(self) -> MqttDevicesConfig:
        owner: dict[tuple[str, str], str] = {}
        for device in self.devices:
            name = f"{device.shop_id}/{device.device_id}"
            for topic in device.mapper(self.burst_s).topics:
                key = (topic, device.code or "")
                if key in owner:
                    what = f"code {device.code} on {topic}" if device.code else f"topic {topic}"
                    raise ValueError(f"{what} is both {owner[key]}'s and {name}'s")
                owner[key] = name
        return self

    def bound_devices(self) -> list[tuple[str, str, tuple[str | int, ...]]]:
        """Each device's shop and device id, with where it is in this driver's config."""
        return [(d.shop_id, d.device_id, ("devices", i)) for i, d in enumerate(self.devices)]

    def resolved(self, base: Path) -> MqttDevicesConfig:
        """The same settings with the broker's relative file paths taken from ``base``."""
        if self.broker is None:
            return self
        return self.model_copy(update={"broker": self.broker.resolved(base)})

    def topics(self) -> list[str]:
        """Every topic the driver subscribes to, each once."""
        return list(dict.fromkeys(t for d in self.devices for t in d.mapper(self.burst_s).topics))
