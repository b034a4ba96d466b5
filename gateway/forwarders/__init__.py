"""Upstream forwarders, each reading the outbox through its own cursor."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.forwarders.mqtt_police import PoliceMqttConfig, PoliceMqttForwarder

FORWARDERS = {f.kind: f for f in (PoliceMqttForwarder,)}

ForwarderConfigUnion = Annotated[PoliceMqttConfig, Field(discriminator="kind")]
