"""Upstream forwarders, each reading the outbox through its own cursor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from gateway.forwarders.base import Forwarder
from gateway.forwarders.dc09 import Dc09Config, Dc09Forwarder
from gateway.forwarders.mqtt_police import PoliceMqttConfig, PoliceMqttForwarder
from gateway.forwarders.webhook import WebhookConfig, WebhookForwarder

FORWARDERS: dict[str, Callable[..., Forwarder]] = {
    f.kind: f for f in (PoliceMqttForwarder, Dc09Forwarder, WebhookForwarder)
}

ForwarderConfigUnion = Annotated[
    PoliceMqttConfig | Dc09Config | WebhookConfig, Field(discriminator="kind")
]
