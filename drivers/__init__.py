"""Southbound drivers, one module per protocol, registered here explicitly."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivers.mqtt_ingest import MqttIngestConfig, MqttIngestDriver

DRIVERS = {d.kind: d for d in (MqttIngestDriver,)}

DriverConfigUnion = Annotated[MqttIngestConfig, Field(discriminator="kind")]
