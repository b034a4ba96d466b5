"""The one small interface every southbound driver implements."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from gateway.device_state import DeviceStates
from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.journal import OnDurable
from gateway.mqtt.client import BrokerConfig
from gateway.storage import StorageReserve

RETRY_MAX_S = 5.0
"""Longest wait between attempts to reopen a driver's link. A USB serial adapter
plugged back in is open again within seconds, not after a minute of backoff, while
its devices keep repeating their unacknowledged alarms."""


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

    model_config = ConfigDict(extra="forbid", defer_build=True)  # as the config's own sections

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$",
        description="Name of this driver instance, used in logs and event sources.",
    )

    def bound_devices(self) -> list[tuple[str, str, tuple[str | int, ...]]]:
        """Shop id, device id and config path of every device bound on this driver's bus."""
        return []

    def resolved(self, base: Path) -> Self:  # noqa: ARG002 - most drivers name no files
        """The same settings with relative file paths taken from ``base`` (the config's folder)."""
        return self


@dataclass(frozen=True)
class DriverContext:
    """What the gateway tells a driver about its surroundings."""

    gateway_id: str
    block_broker: BrokerConfig
    devices: dict[str, frozenset[str]] = field(default_factory=dict)
    """Device ids by shop id: the devices this gateway accepts events from."""
    state_dir: Path | None = None
    """Where a driver may keep what must survive a restart (such as siren deadlines)."""
    device_states: DeviceStates | None = None
    """Last seen, battery and fault of each field device, kept in the journal database."""
    storage: StorageReserve | None = None
    """The journal's storage reserve: tells when a shortage that refused events ends."""

    def event(
        self,
        driver: str,
        binding: DeviceBinding,
        kind: EventKind,
        *,
        ref: str,
        zone: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> Event:
        """A new event from the field device ``binding`` names, received now."""
        now = utc_now()
        return Event(
            id=new_event_id(),
            gateway_id=self.gateway_id,
            shop_id=binding.shop_id,
            device_id=binding.device_id,
            zone=zone,
            kind=kind,
            occurred_at=now,
            received_at=now,
            source=Source(driver=driver, ref=ref),
            attrs=attrs or {},
        )


class DeviceBinding(BaseModel):
    """Which shop's device a bus address, code or unit is."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, defer_build=True
    )  # built at first use (decision 86)

    shop_id: str = Field(description="Shop the device belongs to (one of 'shops').")
    device_id: str = Field(description="Device id within that shop (one of its 'devices').")


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
