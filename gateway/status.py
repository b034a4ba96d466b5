"""The gateway's status message: retained, refreshed, and ``offline`` by will or on exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from gateway.mqtt_link import MqttLink

StatusSnapshot = Callable[[], dict[str, Any]]


def status_payload(state: str, snapshot: StatusSnapshot) -> bytes:
    """The status JSON: ``state`` (online/offline) and the gateway's counters."""
    return json.dumps({"state": state, **snapshot()}, separators=(",", ":")).encode()


def offline_will(topic: str, snapshot: StatusSnapshot) -> tuple[str, bytes]:
    """The last will the broker publishes (retained) if the gateway vanishes."""
    return topic, status_payload("offline", snapshot)


async def keep_status(
    link: MqttLink,
    topic: str,
    snapshot: StatusSnapshot,
    *,
    interval_s: float,
) -> None:
    """Publish ``online`` status every ``interval_s``; say ``offline`` when cancelled."""
    try:
        while True:
            await link.publish(topic, status_payload("online", snapshot), retain=True)
            await asyncio.sleep(interval_s)
    except asyncio.CancelledError:
        # A clean stop does not fire the will, so say it ourselves, briefly.
        with contextlib.suppress(Exception):
            offline = link.publish(topic, status_payload("offline", snapshot), retain=True)
            await asyncio.wait_for(offline, timeout=1.0)
        raise
