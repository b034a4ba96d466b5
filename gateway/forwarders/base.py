"""What every forwarder shares: its config base and what the gateway tells it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from gateway.events import EventKind
from gateway.journal_reader import OutboxRow
from gateway.mqtt.status import StatusSnapshot


class ForwarderConfig(BaseModel):
    """Settings every forwarder has."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at first use (decision 86)

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$",
        description="Name of this forwarder; its outbox cursor is kept under this name.",
    )

    def resolved(self, base: Path) -> Self:  # noqa: ARG002 - subclasses with paths use it
        """The same settings with relative paths taken from ``base``."""
        return self

    def accepts_kind(self, kind: EventKind) -> bool:
        """Whether this forwarder delivers events of ``kind``; heartbeats only feed supervision."""
        return kind is not EventKind.HEARTBEAT


@dataclass(frozen=True)
class ShopCard:
    """What a receiver is told about a shop with each of its events."""

    id: str
    name: str
    lat: float
    lon: float
    large: str
    medium: str
    small: str
    account: str | None = None
    """The shop's own DC-09 account, when surveyed."""

    def as_dict(self) -> dict[str, Any]:
        """The shop block of an upstream payload."""
        return {
            "id": self.id,
            "name": self.name,
            "lat": self.lat,
            "lon": self.lon,
            "grid": {"large": self.large, "medium": self.medium, "small": self.small},
        }

    @cached_property
    def json(self) -> str:
        """``as_dict()`` as compact JSON, made once."""
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ForwarderContext:
    """What the gateway tells a forwarder."""

    gateway_id: str
    large_grid: str
    shops: dict[str, ShopCard]
    status: StatusSnapshot
    status_interval_s: float


def upstream_payload(row: OutboxRow, shops: dict[str, ShopCard]) -> bytes:
    """The event JSON plus ``"shop"``: the shop's name, position and grid cells.

    Spliced into the journalled JSON object rather than parsed and dumped again:
    a backlog drains at the speed of string joins.
    """
    card = shops.get(row.shop_id) if row.shop_id else None
    if card is None:
        return row.body.encode()
    return f'{row.body[:-1]},"shop":{card.json}}}'.encode()


def trimmed_payload(row: OutboxRow, shops: dict[str, ShopCard]) -> bytes:
    """``upstream_payload`` without the event's free-form ``attrs``; ``attrs.trimmed`` says so.

    For a receiver whose size limit the whole event exceeds.
    """
    event = json.loads(row.body)
    event["attrs"] = {"trimmed": f"{len(row.body)}-byte event over the receiver's size limit"}
    body = json.dumps(event, separators=(",", ":"))
    return upstream_payload(dataclasses.replace(row, body=body), shops)


class Forwarder(Protocol):
    """An upstream forwarder: reads its outbox cursor, acknowledges per event."""

    kind: ClassVar[str]
    link_up: asyncio.Event

    async def run(self) -> None:
        """Forward until cancelled; raise a ``ForwardError`` when the link is down."""
        ...


@runtime_checkable
class TellsTime(Protocol):
    """A forwarder whose receiver states its time in its replies (a DC-09 centre's ACKs).

    The gateway sets ``on_centre_time`` to hear it; its clock check takes the time as exact.
    """

    on_centre_time: Callable[[datetime], None] | None
