"""What the SMS say, in Chinese or English, and what a shop's SMS asks for.

Pure functions: the wording of an alert from a neighbour notice's JSON, of the
short confirmations, and the reading of an inbound text as a command.
"""

# ruff: noqa: RUF001 - Chinese text takes full-width punctuation

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any, Literal

Language = Literal["zh", "en"]

_SEPARATORS = re.compile(r"[\s\-().]")
_ZH_COMPASS = ("北", "东北", "东", "东南", "南", "西南", "西", "西北")
_ZH_KINDS = {
    "panic": "求救",
    "duress": "被胁迫求救",
    "silent_panic": "求救",
    "intrusion": "入侵报警",
    "fire": "火警",
}


class Command(StrEnum):
    """What an SMS from a shop's registered phone asks for."""

    PANIC = "panic"
    COMING = "coming"
    SAFE = "safe"
    CANCEL = "cancel"
    UNKNOWN = "unknown"


ANSWERS = {
    Command.COMING: ("1", "来"),
    Command.SAFE: ("0", "安全"),
    Command.CANCEL: ("取消", "cancel"),
}


def e164(phone: str, country_code: str) -> str | None:
    """``phone`` as ``+<digits>``: separators dropped, a national number given ``country_code``.

    None when it is no phone number at all.
    """
    bare = _SEPARATORS.sub("", phone)
    if bare.startswith("00"):
        bare = "+" + bare[2:]
    digits = bare[1:] if bare.startswith("+") else country_code + bare.removeprefix("0")
    if not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return "+" + digits


def command_of(text: str, panic_words: list[str]) -> Command:
    """The command ``text`` gives: full-width characters and case folded, spaces ignored."""
    said = "".join(unicodedata.normalize("NFKC", text).split()).casefold()
    if said in {"".join(w.split()).casefold() for w in panic_words}:
        return Command.PANIC
    for command, words in ANSWERS.items():
        if said in words:
            return command
    return Command.UNKNOWN


def alert_text(notice: bytes, language: Language, zone: tzinfo | None) -> str:
    """The SMS for one neighbour notice: who, how far and which way, until when, how to answer."""
    body: dict[str, Any] = json.loads(notice)
    until = datetime.fromisoformat(body["expires_at"]).astimezone(zone).strftime("%H:%M")
    if body["kind"] == "area_alert":
        if language == "zh":
            return f"【联防】区域{body['cell']}多起报警，请注意安全。{until}前有效。"
        return f"Lianfang: several alarms in area {body['cell']}; take care. Until {until}."
    name = body["from_shop_name"]
    distance = round(float(body["distance_m"]))
    if language == "zh":
        kind = _ZH_KINDS.get(body["kind"], body["kind"])
        way = _ZH_COMPASS[round(float(body["bearing_deg"]) / 45) % 8]
        return f"【联防】{name}{kind}！在您{way}方{distance}米，{until}前有效。回1=我来，0=安全"
    kind = body["kind"].replace("_", " ")
    return (
        f"Lianfang: {name} {kind}! {distance} m {body['bearing']} of you, until {until}. "
        "Reply 1 coming, 0 safe"
    )


def confirmation(command: Command, language: Language, *, done: bool) -> str:
    """The short answer to an inbound SMS, so the shopkeeper knows it worked (or did not)."""
    zh = language == "zh"
    if command is Command.PANIC:
        return (
            "【联防】已收到求救，正在通知附近商户和警方。"
            if zh
            else ("Lianfang: help call received; your neighbours and the police are being told.")
        )
    if command in (Command.COMING, Command.SAFE) and not done:
        return "【联防】没有可回复的警报。" if zh else "Lianfang: no alert to answer."
    if command is Command.COMING:
        return "【联防】已回复：我来。" if zh else "Lianfang: answered 'coming'."
    if command is Command.SAFE:
        return "【联防】已回复：安全。" if zh else "Lianfang: answered 'safe'."
    if command is Command.CANCEL:
        return "【联防】已取消您的报警。" if zh else "Lianfang: your alarm is cancelled."
    return (
        "【联防】未识别。发9#求救，1=我来，0=安全，取消=撤销报警。"
        if zh
        else "Lianfang: not understood. Send 9# for help, 1 coming, 0 safe, cancel."
    )


def stranger_text(language: Language) -> str:
    """The answer to a number no shop has registered."""
    if language == "zh":
        return "【联防】此号码未登记，无法报警。请拨打110。"
    return "Lianfang: this number is not registered; call 110 for the police."
