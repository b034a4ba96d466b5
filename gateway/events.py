"""The normalised event every driver produces and every wire carries."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID


class EventKind(StrEnum):
    """What happened; the names are the contract in DESIGN.md."""

    PANIC = "panic"
    DURESS = "duress"
    SILENT_PANIC = "silent_panic"
    INTRUSION = "intrusion"
    DOOR_OPEN = "door_open"
    DOOR_CLOSE = "door_close"
    TAMPER = "tamper"
    FIRE = "fire"
    SUPERVISION_LOST = "supervision_lost"
    DEVICE_FAULT = "device_fault"
    LOW_BATTERY = "low_battery"
    AC_LOSS = "ac_loss"
    WATER_LEAK = "water_leak"
    RESTORE = "restore"
    ARM = "arm"
    DISARM = "disarm"
    TEST = "test"
    CANCEL = "cancel"
    HEARTBEAT = "heartbeat"
    RESPONSE = "response"
    AREA_ALERT = "area_alert"
    ESCALATION = "escalation"
    ACTION_FAILED = "action_failed"
    COMMAND_ACK = "command_ack"
    COMMAND_REFUSED = "command_refused"
    CLOCK_SUSPECT = "clock_suspect"
    SMS = "sms"
    STORAGE_FULL = "storage_full"
    JOURNAL_DAMAGED = "journal_damaged"
    WALK_TEST_STARTED = "walk_test_started"
    WALK_TEST_ENDED = "walk_test_ended"


class EventClass(StrEnum):
    """How much an event matters when links or disk run short."""

    ALARM = "alarm"
    TROUBLE = "trouble"
    STATUS = "status"
    ROUTINE = "routine"


EVENT_CLASS: dict[EventKind, EventClass] = {
    EventKind.PANIC: EventClass.ALARM,
    EventKind.DURESS: EventClass.ALARM,
    EventKind.SILENT_PANIC: EventClass.ALARM,
    EventKind.INTRUSION: EventClass.ALARM,
    EventKind.FIRE: EventClass.ALARM,
    EventKind.TAMPER: EventClass.TROUBLE,
    EventKind.SUPERVISION_LOST: EventClass.TROUBLE,
    EventKind.DEVICE_FAULT: EventClass.TROUBLE,
    EventKind.LOW_BATTERY: EventClass.TROUBLE,
    EventKind.AC_LOSS: EventClass.TROUBLE,
    EventKind.WATER_LEAK: EventClass.TROUBLE,
    EventKind.DOOR_OPEN: EventClass.STATUS,
    EventKind.DOOR_CLOSE: EventClass.STATUS,
    EventKind.RESTORE: EventClass.STATUS,
    EventKind.ARM: EventClass.STATUS,
    EventKind.DISARM: EventClass.STATUS,
    EventKind.CANCEL: EventClass.STATUS,
    EventKind.TEST: EventClass.ROUTINE,
    EventKind.HEARTBEAT: EventClass.ROUTINE,
    EventKind.RESPONSE: EventClass.STATUS,
    EventKind.AREA_ALERT: EventClass.ALARM,
    EventKind.ESCALATION: EventClass.ALARM,
    EventKind.ACTION_FAILED: EventClass.TROUBLE,
    EventKind.COMMAND_ACK: EventClass.STATUS,
    EventKind.COMMAND_REFUSED: EventClass.TROUBLE,
    EventKind.CLOCK_SUSPECT: EventClass.TROUBLE,
    EventKind.SMS: EventClass.STATUS,
    EventKind.STORAGE_FULL: EventClass.TROUBLE,
    EventKind.JOURNAL_DAMAGED: EventClass.TROUBLE,
    EventKind.WALK_TEST_STARTED: EventClass.TROUBLE,
    EventKind.WALK_TEST_ENDED: EventClass.TROUBLE,
}

# Kinds whose place among a shop's events is part of their meaning (an alarm's
# cancel or restore, the shop's answer, its arm state): a later alarm of the same
# shop never overtakes one of them on its way out (decision 87).
ORDER_BOUND_KINDS = frozenset(
    {EventKind.CANCEL, EventKind.RESTORE, EventKind.RESPONSE, EventKind.ARM, EventKind.DISARM}
)

# Kinds only the gateway itself makes (rules, commands, responses); never taken from a device.
GATEWAY_MADE_KINDS = frozenset(
    {
        EventKind.RESPONSE,
        EventKind.AREA_ALERT,
        EventKind.ESCALATION,
        EventKind.ACTION_FAILED,
        EventKind.COMMAND_ACK,
        EventKind.COMMAND_REFUSED,
        EventKind.CLOCK_SUSPECT,
        EventKind.SMS,
        EventKind.STORAGE_FULL,
        EventKind.JOURNAL_DAMAGED,
        EventKind.WALK_TEST_STARTED,
        EventKind.WALK_TEST_ENDED,
    }
)

TEST_ATTR = "test"
"""``attrs.test`` is true on an event from a shop under walk test: it alerts nobody."""

RESTORES_ATTR = "restores"
"""A ``restore`` event names the kind it restores in this attribute; without it,
it restores a device fault (the gateway's own link restores carry none)."""


def new_event_id() -> str:
    """A new time-sortable event id (ULID, 26 characters)."""
    return str(ULID())


def utc_now() -> datetime:
    """The gateway's wall clock in UTC."""
    return datetime.now(UTC)


class Source(BaseModel):
    """Where an event entered the gateway, for audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    driver: str = Field(description="Name of the driver instance that produced the event.")
    ref: str = Field(description="Reference to the raw frame, such as the MQTT topic.")


class Event(BaseModel):
    """One thing that happened at a shop (or at the gateway itself), immutable once made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="ULID assigned once at ingest; the idempotency key everywhere.")
    gateway_id: str = Field(description="The gateway that accepted the event.")
    shop_id: str | None = Field(description="Shop it came from; null for the gateway's own links.")
    device_id: str = Field(description="Device (or gateway link) it came from.")
    zone: str | None = Field(default=None, description="Zone on the device, if any.")
    kind: EventKind = Field(description="What happened.")
    occurred_at: datetime = Field(description="Device time if it has a clock, else receive time.")
    received_at: datetime = Field(description="Gateway wall clock at ingest (UTC).")
    source: Source = Field(description="Driver and raw frame reference.")
    attrs: dict[str, Any] = Field(default_factory=dict, description="Free-form details.")

    @property
    def event_class(self) -> EventClass:
        """Alarm, trouble, status or routine."""
        return EVENT_CLASS[self.kind]
