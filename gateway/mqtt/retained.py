"""Retained messages on the topics the gateway reads are replays, never new events.

A broker hands a subscriber the topic's retained message each time it
subscribes (MQTT 5, retain handling 0) with the retain flag set, and clears the
flag on messages it forwards live. So a retained message seen by a reader is an
old one replayed at its (re)subscription: a panel that published its panic with
retain would otherwise raise that panic again at every gateway restart.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

from paho.mqtt.client import MQTTMessage

logger = logging.getLogger(__name__)


def replayed(message: MQTTMessage, rejected: MutableMapping[str, int], reader: str) -> bool:
    """Whether ``message`` is a retained replay; counts it as ``retained``, logs the first."""
    if not message.retain:
        return False
    if not rejected.get("retained"):
        logger.warning(
            "%s: ignoring retained messages (first on %r): a retained message is replayed at "
            "every subscription, so it is never taken as a new event; publish without retain",
            reader,
            message.topic[:120],
        )
    rejected["retained"] = rejected.get("retained", 0) + 1
    return True
