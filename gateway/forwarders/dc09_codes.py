"""Which DC-09 code each event kind is sent as: the one table, overridable in config.

A kind with no entry is not sent over DC-09 (its forwarder does not route it).
The SIA DC-03 letters follow the Contact ID → SIA mapping that receivers use
(the same as pysiaalarm's ``ADM_MAPPING``), so both formats read alike at the centre.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from gateway.events import RESTORES_ATTR, TEST_ATTR, Event, EventKind
from protocols.dc09 import EventData


class CodeEntry(BaseModel):
    """How one event kind reads at the alarm receiving centre."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cid: int = Field(ge=100, le=999, description="Contact ID event code (three digits).")
    qualifier: int = Field(
        default=1,
        description="Contact ID qualifier: 1 new event, 3 restore (or closing), 6 status.",
    )
    sia: str = Field(pattern=r"^[A-Z]{2}$", description="SIA DC-03 event code.")
    sia_restore: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{2}$",
        description="SIA DC-03 code of its restore; none if the kind has no restore.",
    )


def _entry(cid: int, sia: str, sia_restore: str | None = None, qualifier: int = 1) -> CodeEntry:
    return CodeEntry(cid=cid, sia=sia, sia_restore=sia_restore, qualifier=qualifier)


DEFAULT_CODES: dict[str, CodeEntry] = {
    EventKind.PANIC: _entry(120, "PA", "PH"),
    EventKind.DURESS: _entry(121, "HA", "HH"),
    EventKind.SILENT_PANIC: _entry(122, "HA", "HH"),
    EventKind.INTRUSION: _entry(130, "BA", "BH"),
    EventKind.TAMPER: _entry(137, "TA", "TR"),
    EventKind.FIRE: _entry(110, "FA", "FH"),
    EventKind.SUPERVISION_LOST: _entry(381, "YC", "YK"),
    EventKind.DEVICE_FAULT: _entry(380, "YX", "YZ"),
    EventKind.LOW_BATTERY: _entry(302, "YT", "YR"),
    EventKind.AC_LOSS: _entry(301, "AT", "AR"),
    EventKind.WATER_LEAK: _entry(154, "WA", "WH"),
    EventKind.ARM: _entry(401, "CL", qualifier=3),
    EventKind.DISARM: _entry(401, "OP"),
    EventKind.TEST: _entry(602, "RP"),
    EventKind.CANCEL: _entry(406, "OC"),
    # The rules raise it when a siren could not be sounded: sounder/relay trouble.
    EventKind.ACTION_FAILED: _entry(320, "YA", "YH"),
    # The gateway's clock is wrong (no RTC, NTP not synchronised): time/date inaccurate.
    EventKind.CLOCK_SUSPECT: _entry(626, "JT"),
    # The gateway's own storage: its event log overflowing, and a damaged log started afresh.
    EventKind.STORAGE_FULL: _entry(624, "JO", "JO"),
    EventKind.JOURNAL_DAMAGED: _entry(304, "YX"),
    # Walk test mode: Contact ID 607 opens it (qualifier 1) and closes it (3); SIA TS / TE.
    EventKind.WALK_TEST_STARTED: _entry(607, "TS"),
    EventKind.WALK_TEST_ENDED: _entry(607, "TE", qualifier=3),
}
"""Kinds and codes as DESIGN.md lists them. ``door_open``/``door_close`` are not
alarms by themselves (the rules raise ``intrusion`` when armed) and heartbeats
only feed supervision: none of them is sent."""

TEST_REPORT = _entry(601, "TX")
"""Any event of a shop under walk test reads as a manual test report (Contact ID 601,
SIA ``TX``) whatever its kind: the centre sees the installer working, not a robbery."""


@dataclass(frozen=True)
class CodeTable:
    """Kinds to codes: the defaults, with the config's overrides (``null`` unmaps a kind)."""

    entries: dict[str, CodeEntry]

    @classmethod
    def with_overrides(cls, overrides: dict[str, CodeEntry | None]) -> CodeTable:
        """The default table changed by ``overrides``."""
        entries = {str(k): v for k, v in DEFAULT_CODES.items()}
        for kind, entry in overrides.items():
            if entry is None:
                entries.pop(kind, None)
            else:
                entries[kind] = entry
        return cls(entries)

    def sends(self, kind: str) -> bool:
        """Whether events of ``kind`` are sent."""
        if kind == EventKind.RESTORE:
            return bool(self.entries)
        return kind in self.entries

    def unmapped(self) -> list[str]:
        """Known kinds that are not sent (heartbeats excepted)."""
        return [
            k.value for k in EventKind if k is not EventKind.HEARTBEAT and not self.sends(k.value)
        ]

    def event_data(self, event: Event, *, partition: int) -> EventData | None:
        """Code, qualifier and zone of ``event``; None when its kind is not sent."""
        zone = zone_number(event.zone)
        if event.attrs.get(TEST_ATTR) is True:
            return EventData(
                TEST_REPORT.qualifier, TEST_REPORT.cid, partition, zone, TEST_REPORT.sia
            )
        if event.kind is EventKind.RESTORE:
            restored = str(event.attrs.get(RESTORES_ATTR, EventKind.DEVICE_FAULT))
            entry = self.entries.get(restored)
            if entry is None:
                return None
            sia = entry.sia_restore or entry.sia
            return EventData(3, entry.cid, partition, zone, sia)
        entry = self.entries.get(event.kind.value)
        if entry is None:
            return None
        return EventData(entry.qualifier, entry.cid, partition, zone, entry.sia)


def zone_number(zone: str | None) -> int:
    """The zone as Contact ID's three digits: the digits of the device's zone, else 0."""
    digits = re.sub(r"\D", "", zone or "")
    return int(digits[-3:]) if digits else 0


def shop_account(shop_id: str, surveyed: str | None) -> str:
    """A shop's DC-09 account: the surveyed one, else the digits of its id (3 to 16)."""
    if surveyed:
        return surveyed.upper()
    digits = re.sub(r"\D", "", shop_id)[-16:]
    return digits.rjust(3, "0")
