"""Upstream forwarders, each reading the outbox through its own cursor.

The tables name modules rather than import them: a config's validation needs
every kind's settings (``gateway.config.kinds``), the daemon only the
forwarders it runs (decision 108).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, cast

from pydantic import BaseModel, Field

from gateway.forwarders.base import Forwarder

if TYPE_CHECKING:
    from gateway.forwarders.dc09 import Dc09Config
    from gateway.forwarders.mqtt_police import PoliceMqttConfig
    from gateway.forwarders.webhook import WebhookConfig

    ForwarderConfigUnion = Annotated[
        PoliceMqttConfig | Dc09Config | WebhookConfig, Field(discriminator="kind")
    ]
    """What a config's ``forwarders`` list holds; built at run time by ``gateway.config.kinds``."""

FORWARDERS: dict[str, tuple[str, str, str]] = {
    "police_mqtt": ("gateway.forwarders.mqtt_police", "PoliceMqttForwarder", "PoliceMqttConfig"),
    "dc09": ("gateway.forwarders.dc09", "Dc09Forwarder", "Dc09Config"),
    "webhook": ("gateway.forwarders.webhook", "WebhookForwarder", "WebhookConfig"),
}
"""Each forwarder kind's module, its forwarder class and its settings class."""


def _imported(kind: str, part: int) -> object:
    module = FORWARDERS[kind][0]
    name = FORWARDERS[kind][part]
    return getattr(__import__(module, fromlist=[name]), name)


def forwarder_class(kind: str) -> Callable[..., Forwarder]:
    """The forwarder of ``kind``, its module imported now."""
    return cast("Callable[..., Forwarder]", _imported(kind, 1))


def settings_class(kind: str) -> type[BaseModel]:
    """The settings of the forwarder ``kind``, its module imported now."""
    return cast("type[BaseModel]", _imported(kind, 2))
