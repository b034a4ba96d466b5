"""The built-in rules: the scheme as it works on the street, overridable by name."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from rules.models import Rule

# Python data, not YAML: the daemon imports this module and keeps no YAML parser (decision 101).
_RULES: list[dict[str, Any]] = [
    {
        "name": "panic-neighbours",
        "description": "A panic or duress alerts the nearest shops (neighbour_alert.count of "
        "them).",
        "when": {"kinds": ["panic", "duress"], "levels": ["everyday"]},
        "do": [{"action": "notify_nearest"}],
    },
    {
        "name": "panic-neighbours-heightened",
        "description": "At a raised alert level a panic alerts twice as many shops.",
        "when": {"kinds": ["panic", "duress"], "levels": ["heightened", "extraordinary"]},
        "do": [{"action": "notify_nearest", "count": 20}],
    },
    {
        "name": "alarms-forward",
        "description": "Alarms go to the police at top priority.",
        "when": {
            "kinds": [
                "panic",
                "duress",
                "silent_panic",
                "intrusion",
                "fire",
                "area_alert",
                "escalation",
            ]
        },
        "do": [{"action": "forward", "priority": "alarm"}],
    },
    {
        "name": "intrusion-when-armed",
        "description": "A door opening while its shop is armed is an intrusion, and sounds its "
        "siren.",
        "when": {"kinds": ["door_open"], "armed": True},
        "do": [
            {"action": "raise", "kind": "intrusion"},
            {"action": "siren", "shop": "origin", "seconds": 120},
        ],
    },
    {
        "name": "robbery-area-alert",
        "description": "Two robbery or panic alarms in one medium grid cell within 24 h alert "
        "the cell.",
        "when": {"kinds": ["panic", "duress", "silent_panic"]},
        "do": [{"action": "area_alert", "grid": "medium", "alarms": 2, "window_s": 86400}],
    },
    {
        "name": "troubles-forward",
        "description": "Tamper, faults, supervision loss, low battery and water leaks go to the "
        "police as trouble.",
        "when": {
            "kinds": [
                "tamper",
                "supervision_lost",
                "device_fault",
                "low_battery",
                "ac_loss",
                "action_failed",
                "command_refused",
                "clock_suspect",
                "water_leak",
                "storage_full",
                "journal_damaged",
            ]
        },
        "do": [{"action": "forward", "priority": "trouble"}],
    },
    {
        "name": "status-forward",
        "description": "Doors, arming, cancels, responses and tests reach the police too.",
        "when": {
            "kinds": [
                "door_open",
                "door_close",
                "restore",
                "arm",
                "disarm",
                "cancel",
                "test",
                "response",
                "command_ack",
            ]
        },
        "do": [{"action": "forward"}],
    },
]

DEFAULT_RULES: tuple[Rule, ...] = tuple(TypeAdapter(list[Rule]).validate_python(_RULES))
