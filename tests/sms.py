"""SMS in the tests: the modem emulator on a pty with a stable link, and a decoder of the test's own.

The decoder reads SMS-SUBMIT PDUs the way TS 23.040 lays them out, written apart
from ``protocols.sms_pdu`` so that a test checks the codec rather than repeats it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware_stubs.process import StubProcess
from tests.clients import survey_rows, wait_until
from tests.harness import READY_S, TestGateway

GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


@dataclass(frozen=True)
class Sent:
    """One SMS the emulator was handed: message reference, recipient, text."""

    reference: int
    number: str
    text: str


def read_submit(pdu: str) -> tuple[str, str, tuple[int, int, int] | None]:
    """(recipient, text, (reference, parts, part) or None) of an SMS-SUBMIT with the SIM's SMSC."""
    octets = bytes.fromhex(pdu)
    assert octets[0] == 0, "the SIM's SMSC"
    first, digits, kind = octets[1], octets[3], octets[4]
    assert first & 0x03 == 1, "SMS-SUBMIT"
    assert first & 0x18 == 0x10, "relative validity"
    size = (digits + 1) // 2
    nibbles = "".join(f"{b:02X}"[::-1] for b in octets[5 : 5 + size])[:digits]
    number = ("+" if kind == 0x91 else "") + nibbles
    at = 5 + size
    dcs, length, data = octets[at + 1], octets[at + 3], octets[at + 4 :]
    part = None
    header = 0
    if first & 0x40:
        header = data[0] + 1
        assert data[1:3] == b"\x00\x03", "8-bit reference concatenation"
        part = (data[3], data[4], data[5])
    if dcs == 0x08:
        return number, data[header:length].decode("utf-16-be"), part
    assert dcs == 0x00
    bits = "".join(format(b, "08b")[::-1] for b in data)
    skip = -(-header * 8 // 7)  # the UDH and its fill bits, in whole septets
    septets = [int(bits[7 * i : 7 * i + 7][::-1], 2) for i in range(skip, length)]
    return number, "".join(GSM7[s] for s in septets), part


def sent_messages(modem: StubProcess) -> list[Sent]:
    """Every SMS the emulator was handed, in order; concatenated parts joined."""
    found: list[Sent] = []
    partial: dict[tuple[str, int], list[str]] = {}
    for line in list(modem.lines):
        if m := re.fullmatch(r"SMS (\d+) ([0-9A-F]+)", line):
            number, text, part = read_submit(m[2])
            if part is None:
                found.append(Sent(int(m[1]), number, text))
                continue
            texts = partial.setdefault((number, part[0]), [])
            texts.append(text)
            if part[2] == part[1]:
                found.append(Sent(int(m[1]), number, "".join(texts)))
                del partial[number, part[0]]
    return found


def survey_phone(shop_id: str) -> str:
    """The shop's surveyed phone in E.164: '+' and its digits."""
    row = next(r for r in survey_rows() if r["shop_id"] == shop_id)
    return "+" + re.sub(r"\D", "", row["phone"])


@contextmanager
def gsm_modem(tmp_path: Path, *args: str) -> Iterator[tuple[StubProcess, Path]]:
    """The emulator on a fresh pty, reached through a stable link; stopped by PID at the end."""
    link = tmp_path / "ttyGSM"
    modem = StubProcess(
        "gsm_modem", "--pty", "--link", str(link), *args, log=tmp_path / "modem.log"
    )
    try:
        modem.start(READY_S)
        yield modem, link
    finally:
        modem.stop()


def sms_overrides(link: Path, **alert: object) -> dict[str, object]:
    """Config overrides for the gateway to text shops through the modem at ``link``."""
    return {
        "status_interval_s": 0.5,
        "sms": {"port": str(link)},
        "neighbour_alert": {"channels": ["mqtt", "sms"], **alert},
    }


async def modem_registered(gateway: TestGateway) -> None:
    """Wait until the gateway's status shows its modem registered on the network."""
    await wait_until(
        lambda: gateway.status().get("sms", {}).get("registration") == "home",
        20,
        "the modem registered",
    )


async def given(modem: StubProcess, command: str) -> None:
    """Give the emulator ``command`` and wait until it has taken it."""
    modem.send(command)
    await asyncio.to_thread(modem.expect, f"DONE {command}", 10)
