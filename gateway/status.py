"""The gateway's status message: retained, refreshed, and ``offline`` by will or on exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiomqtt

from gateway.mqtt import publish

StatusSnapshot = Callable[[], dict[str, Any]]


def status_payload(state: str, snapshot: StatusSnapshot) -> bytes:
    """The status JSON: ``state`` (online/offline) and the gateway's counters."""
    return json.dumps({"state": state, **snapshot()}, separators=(",", ":")).encode()


def offline_will(topic: str, snapshot: StatusSnapshot) -> aiomqtt.Will:
    """The last will the broker publishes if the gateway vanishes."""
    return aiomqtt.Will(topic, status_payload("offline", snapshot), qos=1, retain=True)


async def keep_status(
    client: aiomqtt.Client,
    topic: str,
    snapshot: StatusSnapshot,
    *,
    interval_s: float,
) -> None:
    """Publish ``online`` status every ``interval_s``; say ``offline`` when cancelled."""
    try:
        while True:
            await publish(client, topic, status_payload("online", snapshot), retain=True)
            await asyncio.sleep(interval_s)
    except asyncio.CancelledError:
        # A clean stop does not fire the will, so say it ourselves, briefly.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                client.publish(topic, status_payload("offline", snapshot), qos=1, retain=True),
                timeout=1.0,
            )
        raise
