"""The gateway's status message: retained, refreshed, and ``offline`` by will or on exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from gateway.errors import PlatformNak
from gateway.mqtt.link import MqttLink

logger = logging.getLogger(__name__)

StatusSnapshot = Callable[[], dict[str, Any]]


def status_payload(state: str, snapshot: StatusSnapshot, *, reason: str | None = None) -> bytes:
    """The status JSON: ``state`` (online/offline), why if offline, and the counters."""
    why = {"reason": reason} if reason else {}
    return json.dumps({"state": state, **why, **snapshot()}, separators=(",", ":")).encode()


def offline_will(topic: str, snapshot: StatusSnapshot) -> tuple[str, bytes]:
    """The last will the broker publishes (retained) if the gateway vanishes."""
    return topic, status_payload("offline", snapshot, reason="connection lost")


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
            try:
                await link.publish(topic, status_payload("online", snapshot), retain=True)
            except PlatformNak as refused:  # an ACL on the status topic must not stop alarms
                logger.warning("status on %s refused: %s", topic, refused)
            await asyncio.sleep(interval_s)
    except asyncio.CancelledError:
        # A clean stop does not fire the will, so say it ourselves, briefly.
        with contextlib.suppress(Exception):
            offline = link.publish(
                topic, status_payload("offline", snapshot, reason="stopped"), retain=True
            )
            await asyncio.wait_for(offline, timeout=1.0)
        raise
