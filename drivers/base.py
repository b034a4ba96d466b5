"""The one small interface every southbound driver implements."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from gateway.events import Event
from gateway.journal import OnDurable
from gateway.mqtt import BrokerConfig


class Emit(Protocol):
    """Hand an event to the gateway.

    Returns once the event is queued (it waits only when the journal is backed up).
    ``on_durable`` runs once the event is in the journal: the moment a driver may
    acknowledge it to a device or broker. ``origin_key`` is the device's own
    identity of the message (such as shop, device and sequence number): a repeat
    of a recent key is not journalled, alerted or forwarded again.
    """

    def __call__(
        self,
        event: Event,
        *,
        on_durable: OnDurable | None = None,
        origin_key: str | None = None,
    ) -> Awaitable[None]:
        """Queue ``event``; call ``on_durable`` once it is journalled."""
        ...


class DriverConfig(BaseModel):
    """Settings every driver has; each driver module subclasses it with a ``kind`` literal."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$",
        description="Name of this driver instance, used in logs and event sources.",
    )


@dataclass(frozen=True)
class DriverContext:
    """What the gateway tells a driver about its surroundings."""

    gateway_id: str
    block_broker: BrokerConfig
    devices: dict[str, frozenset[str]] = field(default_factory=dict)
    """Device ids by shop id: the devices this gateway accepts events from."""


class Driver(Protocol):
    """A southbound driver: bytes in, ``Event`` out."""

    kind: ClassVar[str]
    link_up: asyncio.Event
    """Set while the driver's link (port, bus, broker) is up."""

    async def run(self, emit: Emit) -> None:
        """Run until cancelled; raise ``DriverUnavailable`` when the link is down."""
        ...


@runtime_checkable
class SirenDriver(Protocol):
    """A driver that also drives outputs: the sirens (and strobes) of some shops."""

    def siren_shops(self) -> frozenset[str]:
        """Ids of the shops whose siren this driver drives."""
        ...

    async def sound_siren(self, shop_id: str, seconds: float) -> None:
        """Sound ``shop_id``'s siren for ``seconds``, then switch it off.

        The switch-off must survive a restart of the gateway in between (the
        deadline is kept on disk). Raises ``DriverUnavailable`` if the output
        cannot be reached now.
        """
        ...
