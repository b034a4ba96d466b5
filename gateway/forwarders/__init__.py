"""Upstream forwarders, each reading the outbox through its own cursor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from gateway.forwarders.base import Forwarder
from gateway.forwarders.mqtt_police import PoliceMqttConfig, PoliceMqttForwarder

FORWARDERS: dict[str, Callable[..., Forwarder]] = {f.kind: f for f in (PoliceMqttForwarder,)}

ForwarderConfigUnion = Annotated[PoliceMqttConfig, Field(discriminator="kind")]
