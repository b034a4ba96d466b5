"""Where every driver's events enter: neighbour alert first, then the journal."""

from __future__ import annotations

from gateway.events import Event
from gateway.journal import Journal, OnDurable
from gateway.notify import BlockPublisher
from rules.neighbour_alert import NeighbourAlerts


class Intake:
    """The ``Emit`` the drivers call.

    A neighbour alert goes out as soon as the event is parsed, without waiting
    for the disk or the police link; the durable append follows.
    """

    def __init__(
        self, journal: Journal, alerts: NeighbourAlerts, publisher: BlockPublisher
    ) -> None:
        """Feed ``journal`` and alert through ``publisher``."""
        self._journal = journal
        self._alerts = alerts
        self._publisher = publisher

    async def __call__(
        self,
        event: Event,
        *,
        on_durable: OnDurable | None = None,
        origin_key: str | None = None,
    ) -> None:
        """Accept ``event`` from a driver; repeats of a recent ``origin_key`` are dropped."""
        if origin_key is not None and not self._journal.claim(origin_key, on_durable):
            return
        alert = self._alerts.alert_for(event)
        if alert is not None:
            self._publisher.submit(alert)
        try:
            await self._journal.append(event, origin_key=origin_key, on_durable=on_durable)
        except BaseException:
            # Cancelled while the journal was backed up: the broker sends it again.
            if origin_key is not None:
                self._journal.release(origin_key)
            raise
