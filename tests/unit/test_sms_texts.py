"""What shops' SMS say and ask: phone numbers, commands, the alert's wording, the SIM PIN file."""

# ruff: noqa: RUF001 - Chinese text takes full-width punctuation

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import DriverUnavailable
from gateway.sms.modem import pin_from
from gateway.sms.texts import Command, alert_text, command_of, e164

PANIC_WORDS = ["9#", "99", "救命"]


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("+86-754-87368886", "+8675487368886"),
        ("0754 8736 8886", "+8675487368886"),
        ("13800138000", "+8613800138000"),
        ("0086 138 0013 8000", "+8613800138000"),
        ("(0754) 87368886", "+8675487368886"),
        ("n/a", None),
        ("123", None),
    ],
)
def test_survey_phones_become_e164(written, number):
    """Separators go, a national number gets the country code without its trunk 0."""
    assert e164(written, "86") == number


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("9#", Command.PANIC),
        (" 9 # ", Command.PANIC),
        ("９＃", Command.PANIC),  # a phone's full-width keyboard
        ("救命", Command.PANIC),
        ("99", Command.PANIC),
        ("1", Command.COMING),
        ("来", Command.COMING),
        ("0", Command.SAFE),
        ("安全", Command.SAFE),
        ("取消", Command.CANCEL),
        ("CANCEL", Command.CANCEL),
        ("9", Command.UNKNOWN),
        ("hello", Command.UNKNOWN),
    ],
)
def test_texts_read_as_commands(text, command):
    """9#, 99 and 救命 are panics; 1/来, 0/安全, 取消/cancel answer; anything else is not understood."""
    assert command_of(text, PANIC_WORDS) is command


def notice(**extra):
    body = {
        "alert_id": "A1",
        "from_shop_id": "S00011",
        "from_shop_name": "No.21 Gold",
        "kind": "panic",
        "distance_m": 24.6,
        "bearing_deg": 91.0,
        "bearing": "east",
        "expires_at": datetime(2026, 12, 2, 10, 5, tzinfo=UTC).isoformat(),
        **extra,
    }
    return json.dumps(body).encode()


def test_the_alert_says_who_how_far_which_way_until_when_and_how_to_answer():
    """Chinese: name, kind, direction and metres from the reader, expiry in local time, the answers."""
    text = alert_text(notice(), "zh", ZoneInfo("Asia/Shanghai"))
    assert text == "【联防】No.21 Gold求救！在您东方25米，18:05前有效。回1=我来，0=安全"
    english = alert_text(notice(kind="fire", bearing="north-west", bearing_deg=315), "en", UTC)
    assert english == (
        "Lianfang: No.21 Gold fire! 25 m north-west of you, until 10:05. Reply 1 coming, 0 safe"
    )


def test_a_pin_file_others_may_read_is_refused(tmp_path):
    """The SIM PIN is read from a mode-600 file only; a readable one is refused naming the file."""
    pin = tmp_path / "sim.pin"
    pin.write_text("1234\n")
    pin.chmod(0o600)
    assert pin_from(pin) == "1234"
    pin.chmod(0o644)
    with pytest.raises(DriverUnavailable, match=r"sim\.pin .*chmod 600"):
        pin_from(pin)
    pin.chmod(0o600)
    pin.write_text("12ab")
    with pytest.raises(DriverUnavailable, match="4-8 digits"):
        pin_from(pin)
