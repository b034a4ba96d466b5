"""Neighbour alerts: who is told, what they are told, and storm control."""

from __future__ import annotations

import json

from gateway.events import Event, EventKind
from rules.geo import Neighbour
from rules.neighbour_alert import NeighbourAlerts
from tests.events import make_event


def event(kind: EventKind, shop: str = "A") -> Event:
    return make_event(kind, shop=shop)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


NEAR = [Neighbour("B", 12.0, 90.0), Neighbour("C", 20.0, 180.0)]


def alerts(clock: Clock) -> NeighbourAlerts:
    return NeighbourAlerts({"A": "No.1 Gold Exchange"}, cooldown_s=30, expires_s=300, clock=clock)


def test_panic_tells_each_neighbour_the_way_back_to_the_shop_in_trouble():
    """B lies east of A, so B is told to go west; C lies south, so C goes north."""
    alert = alerts(Clock()).alert_for(event(EventKind.PANIC), NEAR)
    assert alert is not None
    bodies = {n.shop_id: json.loads(n.payload) for n in alert.notices}
    assert bodies["B"]["bearing"] == "west"
    assert bodies["C"]["bearing"] == "north"
    assert bodies["B"]["distance_m"] == 12.0
    assert bodies["B"]["from_shop_name"] == "No.1 Gold Exchange"
    assert bodies["B"]["alert_id"] == alert.alert_id == bodies["C"]["alert_id"]


def test_no_neighbours_no_alert():
    """A shop with nobody within reach raises no alert, and starts no cool-down."""
    a = alerts(Clock())
    assert a.alert_for(event(EventKind.PANIC), []) is None
    assert a.alert_for(event(EventKind.PANIC), NEAR) is not None


def test_one_alert_per_shop_per_cooldown():
    """Presses within 30 s are suppressed and counted; after the cool-down a new alert goes out."""
    clock = Clock()
    a = alerts(clock)
    assert a.alert_for(event(EventKind.PANIC), NEAR) is not None
    clock.now += 29
    assert a.alert_for(event(EventKind.PANIC), NEAR) is None
    assert a.suppressed == 1
    clock.now += 2
    assert a.alert_for(event(EventKind.PANIC), NEAR) is not None
