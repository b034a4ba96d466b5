"""One way for tests to make an `Event` without a driver."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.events import Event, EventKind, Source, new_event_id, utc_now


def make_event(
    kind: EventKind | str,
    *,
    shop: str | None = "S00011",
    zone: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
    gateway_id: str = "GW-T",
    **attrs: Any,
) -> Event:
    """An event of ``kind`` from ``shop``'s panel, occurring ``at`` (default now)."""
    when = at or utc_now()
    return Event(
        id=event_id or new_event_id(),
        gateway_id=gateway_id,
        shop_id=shop,
        device_id="panel-1",
        zone=zone,
        kind=EventKind(kind),
        occurred_at=when,
        received_at=when,
        source=Source(driver="test", ref="t"),
        attrs=attrs,
    )
