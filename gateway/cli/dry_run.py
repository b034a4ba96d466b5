"""Dry run: what an event would trigger, in words, without doing any of it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.events import EVENT_CLASS, Event, EventKind, Source
from gateway.rule_engine import notice_places
from rules.engine import RuleEngine
from rules.geo import nearest_shops
from rules.models import AreaAlert, Escalate, Forward, NotifyNearest, Raise, Siren

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig


def dry_run(
    config: GatewayConfig, engine: RuleEngine, event: Event, at: datetime, *, depth: int = 0
) -> list[dict[str, Any]]:
    """One row per action ``event`` would fire (derived events' actions follow, indented)."""
    rows: list[dict[str, Any]] = []
    for firing in engine.evaluate(event, at=at):
        action = firing.action
        row: dict[str, Any] = {
            "rule": firing.rule,
            "action": action.action,
            "depth": depth,
            "does": _words(config, event, action),
        }
        if isinstance(action, NotifyNearest):
            row["shops"] = [n.shop_id for n in _nearest(config, event, action)]
        rows.append(row)
        if isinstance(action, Raise) and depth < 2:
            derived = event.model_copy(update={"kind": action.kind, "id": f"{event.id}-raised"})
            rows += dry_run(config, engine, derived, at, depth=depth + 1)
    return rows


def _nearest(config: GatewayConfig, event: Event, action: NotifyNearest) -> list[Any]:
    places = notice_places(config, other_gateways=action.other_gateways)
    origin = next((s for s in config.shops if s.id == event.shop_id), None)
    if origin is None:
        return []
    return nearest_shops(
        origin,
        places,
        count=action.count or config.neighbour_alert.count,
        radius_m=action.radius_m or config.neighbour_alert.radius_m,
    )


def _words(config: GatewayConfig, event: Event, action: object) -> str:
    if isinstance(action, NotifyNearest):
        found = _nearest(config, event, action)
        away = {o.id: o.gateway_id for o in config.other_shops}
        shown = ", ".join(
            f"{n.shop_id}{f' (via {away[n.shop_id]})' if n.shop_id in away else ''}"
            f" {n.distance_m:.0f} m"
            for n in found
        )
        return f"alert {len(found)} nearest shops: {shown}" if found else "no shop within reach"
    if isinstance(action, Forward):
        to = action.to or [f.name for f in config.forwarders if f.accepts_kind(event.kind)]
        priority = action.priority or EVENT_CLASS[event.kind]
        return f"forward to {', '.join(to) or '(no forwarder configured)'} at {priority} priority"
    if isinstance(action, Raise):
        return f"raise a {action.kind} event (its rules follow)"
    if isinstance(action, Siren):
        shop = event.shop_id if action.shop == "origin" else action.shop
        return f"sound the siren of {shop} for {action.seconds:g} s"
    if isinstance(action, AreaAlert):
        origin = next((s for s in config.shops if s.id == event.shop_id), None)
        cell = getattr(origin.grid, action.grid.value) if origin else "?"
        return (
            f"count toward {action.grid} cell {cell}: {action.alarms} alarms from distinct shops"
            f" within {action.window_s:g} s alert every shop of the cell"
        )
    assert isinstance(action, Escalate)
    whom = ", ".join(action.to or ["every forwarder"])
    return f"escalate to {whom} unless acknowledged within {action.after_s:g} s"


def event_from_json(config: GatewayConfig, data: object, at: datetime) -> Event:
    """An event as a device would send it: ``kind`` and ``shop_id``; the rest is optional.

    Raises:
        ValueError: when ``data`` is not such an object.
    """
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError("--event must be a JSON object with at least 'kind'")
    known = {"kind", "shop_id", "device_id", "zone"}
    shop = next((s for s in config.shops if s.id == data.get("shop_id")), None)
    device = data.get("device_id") or (shop.devices[0].id if shop and shop.devices else "panel-1")
    return Event(
        id="dry-run",
        gateway_id=config.gateway.id,
        shop_id=data.get("shop_id"),
        device_id=device,
        zone=data.get("zone"),
        kind=EventKind(data["kind"]),
        occurred_at=at,
        received_at=at,
        source=Source(driver="dry-run", ref="lianfang rules test"),
        attrs={k: v for k, v in data.items() if k not in known},
    )
