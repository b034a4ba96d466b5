"""Rules as data: what a rule matches (``when``/``if``) and what it does (``do``).

Rules come from YAML (the ``rules`` section of ``lianfang.yaml`` or a
``rules.yaml`` beside it) and are validated here, so that a bad rule is named
with its field and line before the gateway starts.
"""

from __future__ import annotations

import base64
import binascii
from datetime import time
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.events import EventClass, EventKind
from rules.expr import Condition, ExpressionError

RuleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,59}$")]
ShopId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")]


class Level(StrEnum):
    """The city's alert level (等级防控), set by the police platform."""

    EVERYDAY = "everyday"
    HEIGHTENED = "heightened"
    EXTRAORDINARY = "extraordinary"


class GridLevel(StrEnum):
    """One level of the police three-level grid."""

    LARGE = "large"
    MEDIUM = "medium"
    SMALL = "small"


class Strict(BaseModel):
    """Unknown keys are errors; values never change after validation."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, defer_build=True
    )  # built at first use (decision 86)


class TimeWindow(Strict):
    """A daily local time window; ``from`` after ``to`` wraps past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: time = Field(alias="from", description="Start, HH:MM local.")
    end: time = Field(alias="to", description="End, HH:MM local (exclusive).")

    def contains(self, moment: time) -> bool:
        """Whether ``moment`` lies in the window."""
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class When(Strict):
    """What an event must be for the rule to fire; every given condition must hold."""

    kinds: list[EventKind] = Field(min_length=1, description="Event kinds the rule handles.")
    device_kinds: list[str] | None = Field(
        default=None, description="Only events from devices of these kinds (as in shops[].devices)."
    )
    shops: list[ShopId] | None = Field(default=None, description="Only events of these shops.")
    cells: list[str] | None = Field(
        default=None, description="Only shops in these grid cells (large, medium or small ids)."
    )
    armed: bool | None = Field(
        default=None, description="Only while the shop is armed (true) or disarmed (false)."
    )
    levels: list[Level] | None = Field(default=None, description="Only at these alert levels.")
    between: list[TimeWindow] | None = Field(
        default=None, description="Only at local times inside one of these windows."
    )


class NotifyNearest(Strict):
    """Alert the nearest shops of the event's shop on their devices."""

    action: Literal["notify_nearest"] = Field(description="Action type.")
    count: int | None = Field(
        default=None, ge=1, le=100, description="How many shops; default neighbour_alert.count."
    )
    radius_m: float | None = Field(
        default=None,
        gt=0,
        le=5000,
        description="Farthest shop, m; default neighbour_alert.radius_m.",
    )
    other_gateways: bool = Field(
        default=True,
        description="Include shops of neighbouring gateways (through the police broker).",
    )


class Forward(Strict):
    """Forward the event to the police (through the outbox)."""

    action: Literal["forward"] = Field(description="Action type.")
    to: list[str] | None = Field(
        default=None, description="Forwarder names; default every forwarder."
    )
    priority: EventClass | None = Field(
        default=None, description="alarm, trouble, status or routine; default the kind's class."
    )


class Siren(Strict):
    """Sound a shop's siren through the driver that drives it."""

    action: Literal["siren"] = Field(description="Action type.")
    shop: ShopId | Literal["origin"] = Field(
        default="origin", description="Shop whose siren sounds; 'origin' is the event's shop."
    )
    seconds: float = Field(default=60, gt=0, le=900, description="How long it sounds.")


class AreaAlert(Strict):
    """When enough alarms came from one grid cell within a window, alert every shop of the cell."""

    action: Literal["area_alert"] = Field(description="Action type.")
    grid: GridLevel = Field(default=GridLevel.MEDIUM, description="Grid level of the cell.")
    alarms: int = Field(
        default=2, ge=1, le=100, description="Alarms from distinct shops of the cell that fire it."
    )
    window_s: float = Field(
        default=86_400, gt=0, le=30 * 86_400, description="Window the alarms must fall in, s."
    )


class Escalate(Strict):
    """Tell a destination when nobody acknowledged the event within ``after_s``."""

    action: Literal["escalate"] = Field(description="Action type.")
    after_s: float = Field(gt=0, le=86_400, description="Seconds to wait for an acknowledgement.")
    to: list[str] | None = Field(
        default=None, description="Forwarder names; default every forwarder."
    )


class Raise(Strict):
    """Raise a new event of another kind from this one (a door open while armed is an intrusion)."""

    action: Literal["raise"] = Field(description="Action type.")
    kind: EventKind = Field(description="Kind of the new event; it goes through the rules too.")


Action = Annotated[
    NotifyNearest | Forward | Siren | AreaAlert | Escalate | Raise,
    Field(discriminator="action"),
]


class Rule(Strict):
    """One rule: ``when`` (and ``if``) an event matches, ``do`` the actions."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: RuleName = Field(description="Unique rule name; a rule named as a default replaces it.")
    description: str | None = Field(default=None, max_length=300, description="What it is for.")
    when: When = Field(description="What the event must be.")
    condition: str | None = Field(
        default=None,
        alias="if",
        min_length=1,
        description="Optional safe expression over the event, e.g. attrs['battery'] < 3.1.",
    )
    do: list[Action] = Field(min_length=1, description="Actions, in order.")

    @field_validator("condition")
    @classmethod
    def _parses(cls, text: str | None) -> str | None:
        if text is not None:
            try:
                Condition(text)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return text


class RulesConfig(BaseModel):
    """The rules section (or ``rules.yaml``): settings and the installer's own rules."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at first use (decision 86)

    defaults: bool = Field(default=True, description="Use the built-in default rules.")
    disable: list[RuleName] = Field(
        default_factory=list, description="Names of default rules to switch off."
    )
    rules: list[Rule] = Field(
        default_factory=list, description="Own rules; one named as a default replaces it."
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone of opening hours and time windows, e.g. Asia/Shanghai; "
        "default the system's.",
    )
    cancel_window_s: float = Field(
        default=30, ge=0, le=600, description="How long after an alert its shop may cancel it."
    )
    max_notices_per_s: float = Field(
        default=200, gt=0, le=100_000, description="Global cap on neighbour notices sent per s."
    )
    level: Level = Field(
        default=Level.EVERYDAY,
        description="Alert level at first start; the platform's signed commands change it.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> RulesConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is repeated")
            seen.add(rule.name)
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {name!r}") from None
        return name


class CommandsConfig(BaseModel):
    """Signed commands from the police platform."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at first use (decision 86)

    keys: dict[str, str] = Field(
        default_factory=dict,
        description="The platform's Ed25519 public keys by key id, raw 32 bytes in base64.",
    )
    max_age_s: float = Field(
        default=600, gt=0, le=86_400, description="Commands issued longer ago are refused."
    )

    @field_validator("keys")
    @classmethod
    def _ed25519_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        for key_id, text in keys.items():
            try:
                raw = base64.b64decode(text, validate=True)
            except binascii.Error:
                raise ValueError(f"key {key_id!r} is not base64") from None
            if len(raw) != 32:
                raise ValueError(f"key {key_id!r} is {len(raw)} bytes; an Ed25519 key is 32")
        return keys
