"""Payload mappings for devices shops already buy, and the presets that name them.

A mapping reads one value from a message (a JSON pointer such as
``/RfReceived/Data``, a top-level key such as ``contact``, or ``""`` for the
whole payload, which may be plain text such as ``offline``), matches it
(``equals``, ``in``, ``lt``, ``gt`` or ``present``) and says which event kind
that is. Devices report state, not changes: Zigbee2MQTT repeats
``"contact": true`` in every battery report. So a mapping raises its kind only
when its state changes (``when: change``, the default); its ``restore`` match
clears the state with a ``restore`` event (hysteresis where the two matches
leave a gap, as for battery levels). Button presses (``when: every``) raise on
each message, one per burst. A retained message at subscribe is the device's
state at that moment: it seeds the states and raises nothing.

The presets below are data: the same mappings an installer could write.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    model_validator,
)

from gateway.events import RESTORES_ATTR, EventKind

Scalar = StrictStr | StrictBool | int | float
TOPIC_FIELDS = ("topic", "code")
"""What a mapping's topic may name in braces: the device's ``topic`` and ``code``."""


def _placeholders(template: str) -> list[str]:
    """The names in braces in ``template``; raise ``ValueError`` if its braces are unbalanced."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


class Match(BaseModel):
    """One test of a value: exactly one of the fields."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, defer_build=True
    )  # built at first use (decision 86)

    equals: Scalar | None = Field(default=None, description="The value is exactly this.")
    one_of: list[Scalar] | None = Field(
        default=None, alias="in", min_length=1, description="The value is one of these."
    )
    lt: float | None = Field(default=None, description="The value is a number below this.")
    gt: float | None = Field(default=None, description="The value is a number above this.")
    present: Literal[True] | None = Field(
        default=None, description="true: any value at all (the key is in the message)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Match:
        given = [
            n for n in ("equals", "one_of", "lt", "gt", "present") if getattr(self, n) is not None
        ]
        if len(given) != 1:
            names = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of equals, in, lt, gt, present (given: {names})")
        return self

    def holds(self, value: object) -> bool:
        """Whether ``value`` passes this test."""
        if self.present:
            return True
        if self.equals is not None:
            return _same(value, self.equals)
        if self.one_of is not None:
            return any(_same(value, wanted) for wanted in self.one_of)
        if not _is_number(value):
            return False
        number = float(value)  # type: ignore[arg-type]  # _is_number checked it
        return number < self.lt if self.lt is not None else number > float(self.gt or 0)


class Mapping(Match):
    """One value of a device's messages and the event it means."""

    topic: str = Field(
        default="{topic}",
        min_length=1,
        description="Topic the value comes on; '{topic}' is the device's topic.",
    )
    key: str = Field(
        description="JSON pointer ('/RfReceived/Data'), top-level key ('contact'), "
        "or '' for the whole payload."
    )
    kind: EventKind = Field(description="Event kind the match means.")
    zone: str | None = Field(default=None, max_length=40, description="Zone of the event.")
    when: Literal["change", "every"] = Field(
        default="change",
        description="change: raise once when the state changes to this (device states); "
        "every: raise on each message, one per burst (button presses).",
    )
    restore: Match | None = Field(
        default=None, description="Match that clears this state with a 'restore' event."
    )
    state: str | None = Field(
        default=None,
        description="Name of the state this mapping sets; mappings that report the same "
        "fact on several topics share one (default: topic and key).",
    )

    @model_validator(mode="after")
    def _sound(self) -> Mapping:
        try:
            names = set(_placeholders(self.topic))
        except ValueError as exc:
            raise ValueError(f"topic {self.topic!r}: {exc}") from None
        unknown = names - set(TOPIC_FIELDS)
        if unknown:
            raise ValueError(
                f"topic {self.topic!r} names {{{min(unknown)}}}; it may name {{topic}}, {{code}}"
            )
        if "+" in self.topic or "#" in self.topic:
            raise ValueError(f"topic {self.topic!r}: no MQTT wildcards, name the device's topic")
        if self.key.startswith("/") or self.key == "":
            return self
        if "/" in self.key:
            raise ValueError(f"key {self.key!r}: a JSON pointer starts with '/'")
        return self

    @property
    def state_key(self) -> str:
        """The state this mapping reads and sets."""
        return self.state or f"{self.topic}#{self.key}"


@dataclass(frozen=True)
class Preset:
    """A named list of mappings for one kind of device."""

    name: str
    description: str
    mappings: tuple[Mapping, ...]
    code_key: str | None = None
    """Where a message says which device it is from (RF bridges: one topic, many codes)."""


class _PresetData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str
    code_key: str | None = None
    include: list[str] = Field(default_factory=list)
    mappings: list[Mapping] = Field(default_factory=list)


# Shared parts, named with a leading underscore: not presets by themselves. Python data, not
# YAML: the daemon imports this module and keeps no YAML parser (decision 101).
_PRESETS: dict[str, dict[str, Any]] = {
    "_zigbee2mqtt.common": {
        "description": "Battery with hysteresis, tamper, and Zigbee2MQTT's device availability.",
        "mappings": [
            {"key": "battery", "lt": 20, "kind": "low_battery", "restore": {"gt": 25}},
            {"key": "tamper", "equals": True, "kind": "tamper", "restore": {"equals": False}},
            # Availability is retained: JSON {"state": "offline"}, or plain text with the
            # legacy payload.
            {
                "topic": "{topic}/availability",
                "key": "/state",
                "equals": "offline",
                "kind": "supervision_lost",
                "restore": {"equals": "online"},
                "state": "availability",
            },
            {
                "topic": "{topic}/availability",
                "key": "",
                "equals": "offline",
                "kind": "supervision_lost",
                "restore": {"equals": "online"},
                "state": "availability",
            },
        ],
    },
    "zigbee2mqtt.contact": {
        "description": "Zigbee door/window contact (contact false = open).",
        "include": ["_zigbee2mqtt.common"],
        "mappings": [
            {"key": "contact", "equals": False, "kind": "door_open"},
            {"key": "contact", "equals": True, "kind": "door_close"},
        ],
    },
    "zigbee2mqtt.sos": {
        "description": "Zigbee SOS/emergency button (an 'emergency' action, or an 'sos' alarm "
        "state).",
        "include": ["_zigbee2mqtt.common"],
        "mappings": [
            {
                "key": "action",
                "in": ["emergency", "sos", "panic"],
                "kind": "panic",
                "when": "every",
            },
            {"key": "sos", "equals": True, "kind": "panic"},
        ],
    },
    "zigbee2mqtt.water_leak": {
        "description": "Zigbee water leak sensor.",
        "include": ["_zigbee2mqtt.common"],
        "mappings": [
            {
                "key": "water_leak",
                "equals": True,
                "kind": "water_leak",
                "restore": {"equals": False},
            }
        ],
    },
    "zigbee2mqtt.smoke": {
        "description": "Zigbee smoke detector.",
        "include": ["_zigbee2mqtt.common"],
        "mappings": [
            {"key": "smoke", "equals": True, "kind": "fire", "restore": {"equals": False}}
        ],
    },
    "tasmota.rf_bridge": {
        "description": "A 433 MHz button heard by a Sonoff RF Bridge running Tasmota; 'code' is "
        "its Data.",
        "code_key": "/RfReceived/Data",
        "mappings": [
            {"key": "/RfReceived/Data", "present": True, "kind": "panic", "when": "every"}
        ],
    },
    "tasmota.switch": {
        "description": "A contact on a Tasmota device's input or relay (ON = open); 'topic' is "
        "its Topic.",
        "mappings": [
            {
                "topic": "stat/{topic}/POWER",
                "key": "",
                "equals": "ON",
                "kind": "door_open",
                "state": "power",
            },
            {
                "topic": "stat/{topic}/POWER",
                "key": "",
                "equals": "OFF",
                "kind": "door_close",
                "state": "power",
            },
            {
                "topic": "stat/{topic}/RESULT",
                "key": "/POWER",
                "equals": "ON",
                "kind": "door_open",
                "state": "power",
            },
            {
                "topic": "stat/{topic}/RESULT",
                "key": "/POWER",
                "equals": "OFF",
                "kind": "door_close",
                "state": "power",
            },
            {
                "topic": "stat/{topic}/RESULT",
                "key": "/Switch1/Action",
                "equals": "ON",
                "kind": "door_open",
                "state": "switch",
            },
            {
                "topic": "stat/{topic}/RESULT",
                "key": "/Switch1/Action",
                "equals": "OFF",
                "kind": "door_close",
                "state": "switch",
            },
            {
                "topic": "tele/{topic}/SENSOR",
                "key": "/Switch1",
                "equals": "ON",
                "kind": "door_open",
                "state": "switch",
            },
            {
                "topic": "tele/{topic}/SENSOR",
                "key": "/Switch1",
                "equals": "OFF",
                "kind": "door_close",
                "state": "switch",
            },
            {
                "topic": "tele/{topic}/LWT",
                "key": "",
                "equals": "Offline",
                "kind": "supervision_lost",
                "restore": {"equals": "Online"},
            },
        ],
    },
    "shelly.door_window": {
        "description": "Shelly door/window sensor; 'topic' is its device id (Gen1 under "
        "shellies/, Gen2 input status under the id as prefix).",
        "mappings": [
            {
                "topic": "shellies/{topic}/sensor/state",
                "key": "",
                "equals": "open",
                "kind": "door_open",
                "state": "door",
            },
            {
                "topic": "shellies/{topic}/sensor/state",
                "key": "",
                "equals": "close",
                "kind": "door_close",
                "state": "door",
            },
            {
                "topic": "shellies/{topic}/sensor/battery",
                "key": "",
                "lt": 20,
                "kind": "low_battery",
                "restore": {"gt": 25},
            },
            {
                "topic": "{topic}/status/input:0",
                "key": "/state",
                "equals": True,
                "kind": "door_open",
                "state": "door",
            },
            {
                "topic": "{topic}/status/input:0",
                "key": "/state",
                "equals": False,
                "kind": "door_close",
                "state": "door",
            },
        ],
    },
}


def _load_presets(data: dict[str, dict[str, Any]]) -> dict[str, Preset]:
    raw = TypeAdapter(dict[str, _PresetData]).validate_python(data)

    def mappings_of(name: str) -> Iterator[Mapping]:
        for part in raw[name].include:
            yield from mappings_of(part)
        yield from raw[name].mappings

    return {
        name: Preset(name, data.description, tuple(mappings_of(name)), data.code_key)
        for name, data in raw.items()
        if not name.startswith("_")
    }


PRESETS: dict[str, Preset] = _load_presets(_PRESETS)
"""The presets by name."""


@dataclass(frozen=True)
class Outcome:
    """An event a message means: its kind, zone and details."""

    kind: EventKind
    zone: str | None
    attrs: dict[str, Any]


@dataclass
class DeviceMapper:
    """One device's mappings and the states they have seen."""

    mappings: Sequence[Mapping]
    fields: dict[str, str]
    """The device's ``topic`` and ``code``, filled into the mappings' topics."""
    burst_s: float = 1.0
    states: dict[str, str] = field(default_factory=dict)
    """Per state name, the kind last raised there, or '' once cleared."""
    _last_press: dict[int, float] = field(default_factory=dict)

    @property
    def topics(self) -> list[str]:
        """The topics this device's mappings read, each once."""
        return list(dict.fromkeys(self.topic_of(m) for m in self.mappings))

    def topic_of(self, mapping: Mapping) -> str:
        """``mapping``'s topic for this device."""
        return mapping.topic.format_map(self.fields)

    def about_link(self, topic: str) -> bool:
        """Whether ``topic`` says only whether the device is reachable (as availability does)."""
        kinds = {m.kind for m in self.mappings if self.topic_of(m) == topic}
        return kinds == {EventKind.SUPERVISION_LOST}

    def feed(
        self, topic: str, payload: object, *, now: float, retained: bool = False
    ) -> tuple[list[Outcome], bool]:
        """The events one message on ``topic`` means, and whether any mapping found its value.

        ``payload`` is the decoded message (JSON value, or text). A ``retained``
        message only updates the states.
        """
        outcomes: list[Outcome] = []
        understood = False
        by_state: dict[str, list[tuple[int, Mapping, object]]] = {}
        for index, mapping in enumerate(self.mappings):
            if self.topic_of(mapping) != topic:
                continue
            found, value = value_at(payload, mapping.key)
            if not found:
                continue
            understood = True
            if mapping.when == "every":
                if not retained and mapping.holds(value) and self._fresh(index, now):
                    outcomes.append(_outcome(mapping, mapping.kind, value))
                continue
            by_state.setdefault(mapping.state_key, []).append((index, mapping, value))
        for state, readings in by_state.items():
            outcome = self._change(state, readings)
            if outcome is not None and not retained:
                outcomes.append(outcome)
        return outcomes, understood

    def _change(self, state: str, found: list[tuple[int, Mapping, object]]) -> Outcome | None:
        """The event, if any, of the mappings of one state, and the state's new value."""
        now_state = self.states.get(state)
        raised = next(((m, v) for _, m, v in found if m.holds(v)), None)
        if raised is not None:
            mapping, value = raised
            self.states[state] = mapping.kind
            return None if now_state == mapping.kind else _outcome(mapping, mapping.kind, value)
        for _, mapping, value in found:
            if mapping.restore is not None and mapping.restore.holds(value):
                self.states[state] = ""
                if now_state == mapping.kind:
                    outcome = _outcome(mapping, EventKind.RESTORE, value)
                    outcome.attrs[RESTORES_ATTR] = mapping.kind.value
                    return outcome
                return None
        if all(m.restore is None for _, m, _ in found):
            self.states[state] = ""  # a value none of them matches ends the state silently
        return None

    def _fresh(self, index: int, now: float) -> bool:
        """Whether a press of mapping ``index`` at ``now`` starts a new burst."""
        last = self._last_press.get(index)
        self._last_press[index] = now  # a long burst stays one press
        return last is None or now - last >= self.burst_s


def _outcome(mapping: Mapping, kind: EventKind, value: object) -> Outcome:
    shown = value if isinstance(value, str | int | float | bool) else json.dumps(value)[:256]
    return Outcome(kind, mapping.zone, {"key": mapping.key, "value": shown})


def decode(payload: bytes | bytearray) -> object:
    """A message's payload as a JSON value, or as text when it is not JSON.

    Raises ``UnicodeDecodeError`` for bytes that are neither.
    """
    text = bytes(payload).decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def value_at(payload: object, key: str) -> tuple[bool, object]:
    """Whether ``payload`` has ``key`` (pointer, top-level key, or '' for all), and its value."""
    if key == "":
        return True, payload
    if not key.startswith("/"):
        if isinstance(payload, dict) and key in payload:
            return True, payload[key]
        return False, None
    value = payload
    for raw in key[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def code_of(payload: object, code_key: str) -> str | None:
    """The device code a message carries at ``code_key`` (upper case), if any."""
    found, value = value_at(payload, code_key)
    if not found or not isinstance(value, str | int) or isinstance(value, bool):
        return None
    return str(value).upper()[:32]


def _same(value: object, wanted: Scalar) -> bool:
    """Equal, without True == 1 or 1 == '1'."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, str) or isinstance(value, str):
        return value == wanted
    return _is_number(value) and float(value) == float(wanted)  # type: ignore[arg-type]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
