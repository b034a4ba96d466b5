"""Settings of the ingest of shop panels' events from the block's broker.

Apart from the driver: the daemon imports every driver's settings for its config, and
a driver's code only when the config runs it (decision 102).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.base import DriverConfig
from gateway.storage import MAX_REFUSED_PER_SHORTAGE

# Refused messages may hold a quarter of the window at most: reading pauses at the
# full window and resumes at half, so more would stop the reading for the shortage.
MIN_RECEIVE_MAXIMUM = 4 * MAX_REFUSED_PER_SHORTAGE


class MqttIngestConfig(DriverConfig):
    """Shop panels publishing on the block's broker."""

    kind: Literal["mqtt_ingest"] = Field(description="Driver type.")
    topic: str = Field(
        default="lianfang/v1/shop/+/event",
        description="Topic filter; the '+' level is the shop id. The gateway subscribes to "
        "it once per shop it serves, so gateways can share a broker.",
    )
    max_payload_bytes: int = Field(
        default=4096, ge=256, le=65536, description="Larger payloads are dropped and counted."
    )
    receive_maximum: int = Field(
        default=500,
        ge=MIN_RECEIVE_MAXIMUM,
        le=65535,
        description="Unacknowledged messages at most; past it the gateway stops reading "
        "and the broker keeps the rest (memory stays flat under any backlog). At least "
        f"{MIN_RECEIVE_MAXIMUM}: during a storage shortage up to "
        f"{MAX_REFUSED_PER_SHORTAGE} refused messages stay unacknowledged, and reading "
        "resumes only at half the window.",
    )
    shop_event_cap: int = Field(
        default=300,
        ge=1,
        description="Non-alarm events one shop may send per shop_event_window_s; the rest "
        "are dropped and counted as throttled (alarms and trouble never are). Events the "
        "device stamped while the gateway's link was down are a backlog and also counted "
        "at those stamps, so that a backlog sent at a fair pace passes whole.",
    )
    shop_event_window_s: float = Field(
        default=10.0, gt=0, le=3600, description="The window of shop_event_cap, seconds."
    )
