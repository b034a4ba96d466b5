"""The neighbour alerts a gateway sent lately: who was told, who answered."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.events import Event

RECENT_ALERTS = 10_000
"""Alerts remembered by id, oldest forgotten first: a bounded memory under a flood."""


@dataclass
class OpenAlert:
    """One alert: its origin shop and event, when it went out, the shops told, their answers."""

    alert_id: str
    event_id: str
    shop_id: str
    at: float
    alerted: frozenset[str]
    responses: dict[str, str] = field(default_factory=dict)


class OpenAlerts:
    """The latest alert of each origin shop (its cancel window) and the recent ones by id."""

    def __init__(self) -> None:
        """Remember nothing yet."""
        self._latest: dict[str, OpenAlert] = {}
        self._by_id: OrderedDict[str, OpenAlert] = OrderedDict()

    def remember(self, alert: OpenAlert) -> None:
        """Keep ``alert`` as its shop's latest and by its id."""
        self._latest[alert.shop_id] = alert
        self._by_id[alert.alert_id] = alert
        if len(self._by_id) > RECENT_ALERTS:
            self._by_id.popitem(last=False)

    def get(self, alert_id: str) -> OpenAlert | None:
        """The alert ``alert_id``, if it is recent enough to be remembered."""
        return self._by_id.get(alert_id)

    def latest(self, shop_id: str) -> OpenAlert | None:
        """The latest alert ``shop_id`` sent, if any."""
        return self._latest.get(shop_id)

    def reanswer(self, response: Event) -> None:
        """Count a journalled answer to a reopened alert again (after a restart)."""
        alert = self._by_id.get(str(response.attrs.get("alert_id")))
        if alert is not None and response.shop_id and response.attrs.get("alerted") is True:
            alert.responses[response.shop_id] = str(response.attrs.get("response"))
