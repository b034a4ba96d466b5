"""SMS in PDU mode (3GPP TS 23.040, alphabets of TS 23.038): what a GSM modem sends and reads.

- ``submit_pdus(number, text)``: the SMS-SUBMIT PDUs of one message, GSM 7-bit
  when every character is in the GSM default alphabet, UCS-2 otherwise (Chinese),
  split into concatenated parts with an 8-bit-reference UDH when it does not fit
  one SMS. Each comes with the TPDU length ``AT+CMGS=<n>`` needs.
- ``decode(hex)``: an SMS-DELIVER (a message received), SMS-STATUS-REPORT (a
  delivery report) or SMS-SUBMIT (what a modem was given), SMSC address first,
  as ``AT+CMGR`` and ``+CMT``/``+CDS`` show them.
- ``deliver_pdu``: an SMS-DELIVER, for the modem emulator and the tests.

Worked example (as modem manuals show it): ``"hellohello"`` to +46708251358 is
``0011000B916407281553F80000AA0AE8329BFD4697D9EC37`` with the SIM's SMSC,
validity 4 days (``AA``; this encoder asks 24 h, ``A7``) and no status report.
Years in time stamps are taken as 20yy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 7-bit default alphabet (TS 23.038 6.2.1), by septet value; 0x1B escapes."""
ESCAPE = 0x1B
GSM7_EXTENSION = {
    "\x0c": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
"""Characters sent as ESC then this septet (TS 23.038 6.2.1.1)."""
_GSM7_INDEX = {c: i for i, c in enumerate(GSM7_BASIC) if i != ESCAPE}
_GSM7_EXTENSION_CHAR = {v: k for k, v in GSM7_EXTENSION.items()}

GSM7_SINGLE = 160
GSM7_PART = 153  # 160 less the 7 septets of a concatenation UDH
UCS2_SINGLE = 70
UCS2_PART = 67
MAX_PARTS = 255

VALIDITY_24H = 0xA7  # relative: 12 h + (167 - 143) x 30 min (TS 23.040 9.2.3.12.1)

MTI_DELIVER = 0
MTI_SUBMIT = 1
MTI_STATUS_REPORT = 2


class PduError(ValueError):
    """A PDU that cannot be decoded, or a message that cannot be encoded; says what and where."""


@dataclass(frozen=True, slots=True)
class SubmitPdu:
    """One SMS-SUBMIT ready for ``AT+CMGS=<tpdu_length>``: the hex to send after the prompt."""

    hex: str
    tpdu_length: int


@dataclass(frozen=True, slots=True)
class Part:
    """Where a part of a concatenated message belongs: reference, how many, which one (1-based)."""

    reference: int
    total: int
    number: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """An SMS-DELIVER: a message from ``sender`` (E.164 with ``+`` when international)."""

    smsc: str
    sender: str
    text: str
    sent_at: datetime
    part: Part | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    """An SMS-SUBMIT as a modem receives it."""

    smsc: str
    recipient: str
    text: str
    status_report: bool
    part: Part | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """An SMS-STATUS-REPORT: what became of the message with reference ``reference``."""

    smsc: str
    reference: int
    recipient: str
    status: int

    @property
    def delivered(self) -> bool:
        """Whether the message reached the phone (TP-ST 0x00-0x1F, TS 23.040 9.2.3.15)."""
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """Whether the network has stopped trying (0x20-0x3F means it is still trying)."""
        return not 0x20 <= self.status < 0x40


# --- alphabets ----------------------------------------------------------------------------


def gsm7_septets(text: str) -> list[int] | None:
    """``text`` as GSM 7-bit septets (extension characters as two), or None if it has others."""
    septets: list[int] = []
    for char in text:
        if char in _GSM7_INDEX:
            septets.append(_GSM7_INDEX[char])
        elif char in GSM7_EXTENSION:
            septets += (ESCAPE, GSM7_EXTENSION[char])
        else:
            return None
    return septets


def gsm7_text(septets: list[int]) -> str:
    """Septets back to text; an unknown extension reads as a space (TS 23.038 6.2.1.1)."""
    chars: list[str] = []
    escaped = False
    for septet in septets:
        if escaped:
            chars.append(_GSM7_EXTENSION_CHAR.get(septet, " "))
            escaped = False
        elif septet == ESCAPE:
            escaped = True
        else:
            chars.append(GSM7_BASIC[septet])
    return "".join(chars)


def pack_septets(septets: Sequence[int], fill_bits: int = 0) -> bytes:
    """Pack septets least significant bit first, after ``fill_bits`` zero bits (for a UDH)."""
    value = 0
    for i, septet in enumerate(septets):
        value |= septet << (fill_bits + 7 * i)
    size = (fill_bits + 7 * len(septets) + 7) // 8
    return value.to_bytes(size, "little")


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    """The first ``count`` septets of ``data`` after ``fill_bits``."""
    value = int.from_bytes(data, "little") >> fill_bits
    return [(value >> (7 * i)) & 0x7F for i in range(count)]


# --- addresses ------------------------------------------------------------------------------


def _semi_octets(digits: str) -> bytes:
    """BCD with swapped nibbles, padded with F (TS 23.040 9.1.2.3)."""
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex("".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2)))


def _digits(data: bytes) -> str:
    swapped = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data)
    return swapped.rstrip("F")


def encode_address(number: str) -> bytes:
    """A TP-DA: digit count, type (international with ``+``, else unknown), the digits."""
    international = number.startswith("+")
    digits = number.removeprefix("+")
    if not digits.isdigit() or len(digits) > 20:
        raise PduError(f"phone number {number!r}: only digits after an optional '+', at most 20")
    kind = 0x91 if international else 0x81
    return bytes((len(digits), kind)) + _semi_octets(digits)


def encode_smsc(number: str | None) -> bytes:
    """The SMSC field in front of a PDU: ``00`` (the SIM's SMSC) or the given number."""
    if number is None:
        return b"\x00"
    address = encode_address(number)[1:]
    return bytes((len(address),)) + address


class _Reader:
    """Reads a PDU octet by octet, naming the field that runs short."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int, field: str) -> bytes:
        if self.at + n > len(self.data):
            raise PduError(f"PDU ends inside {field} (octet {self.at}, {len(self.data)} octets)")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def octet(self, field: str) -> int:
        return self.take(1, field)[0]

    def address(self, field: str) -> str:
        digits = self.octet(field)
        kind = self.octet(field)
        raw = self.take((digits + 1) // 2, field)
        if kind & 0x70 == 0x50:  # alphanumeric sender (a bank, an operator), TS 23.040 9.1.2.5
            return gsm7_text(unpack_septets(raw, digits * 4 // 7))
        number = _digits(raw)
        return f"+{number}" if kind & 0x70 == 0x10 else number

    def smsc(self) -> str:
        size = self.octet("SMSC length")
        if size == 0:
            return ""
        kind = self.octet("SMSC type")
        number = _digits(self.take(size - 1, "SMSC address"))
        return f"+{number}" if kind & 0x70 == 0x10 else number

    def timestamp(self, field: str) -> datetime:
        raw = _digits(self.take(7, field)).ljust(14, "0")
        try:
            # Bit 3 of the tens digit is the sign (TS 23.040 9.2.3.11).
            tens = int(raw[12], 16)
            quarters = (tens & 0x07) * 10 + int(raw[13])
            negative = tens & 0x08
            offset = timedelta(minutes=15 * quarters) * (-1 if negative else 1)
            return datetime(
                2000 + int(raw[0:2]),
                int(raw[2:4]),
                int(raw[4:6]),
                int(raw[6:8]),
                int(raw[8:10]),
                int(raw[10:12]),
                tzinfo=timezone(offset),
            )
        except ValueError as exc:
            raise PduError(f"{field} {raw!r} is no date: {exc}") from None


def _alphabet(dcs: int) -> str:
    """``gsm7``, ``8bit`` or ``ucs2`` from a TP-DCS (TS 23.038 4)."""
    if dcs & 0xC0 == 0x00 or dcs & 0xC0 == 0x40:  # general data coding (compression unsupported)
        if dcs & 0x20:
            raise PduError(f"DCS {dcs:02X}: compressed text is not supported")
        return ("gsm7", "8bit", "ucs2", "8bit")[(dcs >> 2) & 3]
    if dcs & 0xF0 == 0xF0:
        return "8bit" if dcs & 0x04 else "gsm7"
    if dcs & 0xF0 == 0xE0:
        return "ucs2"
    if dcs & 0xF0 in (0xC0, 0xD0):
        return "gsm7"
    raise PduError(f"DCS {dcs:02X} is reserved")


def _user_data(reader: _Reader, dcs: int, *, has_udh: bool) -> tuple[str, Part | None]:
    alphabet = _alphabet(dcs)
    length = reader.octet("TP-UDL")
    size = (length * 7 + 7) // 8 if alphabet == "gsm7" else length
    data = reader.take(size, "TP-UD")
    part = None
    header = 0
    if has_udh:
        if not data:
            raise PduError("TP-UDHI set but the user data is empty")
        header = data[0] + 1
        part = _concatenation(data[1:header])
    if alphabet == "gsm7":
        fill = (7 - header * 8 % 7) % 7 if header else 0
        skip = (header * 8 + fill) // 7
        return gsm7_text(unpack_septets(data[header:], length - skip, fill)), part
    body = data[header:]
    if alphabet == "ucs2":
        return body.decode("utf-16-be", errors="replace"), part
    return body.decode("latin-1"), part


def _concatenation(header: bytes) -> Part | None:
    """The concatenation element of a UDH (8- or 16-bit reference), if there is one."""
    at = 0
    while at + 2 <= len(header):
        iei, size = header[at], header[at + 1]
        value = header[at + 2 : at + 2 + size]
        if iei == 0x00 and size == 3:
            return Part(value[0], value[1], value[2])
        if iei == 0x08 and size == 4:
            return Part(int.from_bytes(value[:2], "big"), value[2], value[3])
        at += 2 + size
    return None


def decode(pdu_hex: str) -> Deliver | Submit | StatusReport:
    """Decode one PDU as ``AT+CMGR`` shows it (SMSC field first)."""
    try:
        reader = _Reader(bytes.fromhex(pdu_hex.strip()))
    except ValueError:
        raise PduError(f"PDU is not hex: {pdu_hex[:40]!r}") from None
    smsc = reader.smsc()
    first = reader.octet("first octet")
    mti = first & 0x03
    if mti == MTI_DELIVER:
        sender = reader.address("TP-OA")
        reader.octet("TP-PID")
        dcs = reader.octet("TP-DCS")
        sent_at = reader.timestamp("TP-SCTS")
        text, part = _user_data(reader, dcs, has_udh=bool(first & 0x40))
        return Deliver(smsc, sender, text, sent_at, part)
    if mti == MTI_SUBMIT:
        reader.octet("TP-MR")
        recipient = reader.address("TP-DA")
        reader.octet("TP-PID")
        dcs = reader.octet("TP-DCS")
        validity = (first >> 3) & 0x03
        reader.take({0: 0, 2: 1}.get(validity, 7), "TP-VP")
        text, part = _user_data(reader, dcs, has_udh=bool(first & 0x40))
        return Submit(smsc, recipient, text, bool(first & 0x20), part)
    if mti == MTI_STATUS_REPORT:
        reference = reader.octet("TP-MR")
        recipient = reader.address("TP-RA")
        reader.timestamp("TP-SCTS")
        reader.timestamp("TP-DT")
        return StatusReport(smsc, reference, recipient, reader.octet("TP-ST"))
    raise PduError(f"first octet {first:02X}: message type 3 is reserved")


# --- encoding -------------------------------------------------------------------------------


def _split_gsm7(septets: list[int], size: int) -> list[list[int]]:
    """Parts of at most ``size`` septets, never splitting an escape from its character."""
    parts: list[list[int]] = []
    at = 0
    while at < len(septets):
        end = min(at + size, len(septets))
        if end < len(septets) and septets[end - 1] == ESCAPE and _escape_opens(septets, end - 1):
            end -= 1
        parts.append(septets[at:end])
        at = end
    return parts


def _escape_opens(septets: list[int], index: int) -> bool:
    """Whether the ESC at ``index`` starts an extension pair (not the second half of one)."""
    run = 0
    while index - run >= 0 and septets[index - run] == ESCAPE:
        run += 1
    return run % 2 == 1


def _split_ucs2(text: str, size: int) -> list[bytes]:
    """Parts of at most ``size`` UTF-16 units, never splitting a surrogate pair."""
    parts: list[bytes] = []
    current = b""
    for char in text:
        encoded = char.encode("utf-16-be")
        if len(current) + len(encoded) > size * 2:
            parts.append(current)
            current = b""
        current += encoded
    return [*parts, current]


def submit_pdus(
    number: str,
    text: str,
    *,
    smsc: str | None = None,
    status_report: bool = True,
    reference: int = 0,
) -> list[SubmitPdu]:
    """The SMS-SUBMIT PDUs of ``text`` to ``number``; concatenated parts share ``reference``."""
    address = encode_address(number)
    septets = gsm7_septets(text)
    pieces: list[list[int]] | list[bytes]
    if septets is not None:
        pieces = [septets] if len(septets) <= GSM7_SINGLE else _split_gsm7(septets, GSM7_PART)
    else:
        ucs2 = text.encode("utf-16-be")
        pieces = [ucs2] if len(ucs2) <= UCS2_SINGLE * 2 else _split_ucs2(text, UCS2_PART)
    if len(pieces) > MAX_PARTS:
        raise PduError(f"message of {len(text)} characters needs more than {MAX_PARTS} parts")
    concatenated = len(pieces) > 1
    first = 0x01 | 0x10 | (0x20 if status_report else 0) | (0x40 if concatenated else 0)
    result = []
    for i, piece in enumerate(pieces):
        udh = bytes((5, 0x00, 3, reference & 0xFF, len(pieces), i + 1)) if concatenated else b""
        if isinstance(piece, bytes):
            dcs, body, udl = 0x08, udh + piece, len(udh) + len(piece)
        else:
            fill = (7 - len(udh) * 8 % 7) % 7 if udh else 0
            dcs, body = 0x00, udh + pack_septets(piece, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(piece)
        tpdu = bytes((first, 0x00)) + address + bytes((0x00, dcs, VALIDITY_24H, udl)) + body
        result.append(SubmitPdu((encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu)))
    return result


def deliver_pdu(
    sender: str, text: str, *, sent_at: datetime | None = None, smsc: str = "+8613800754500"
) -> str:
    """An SMS-DELIVER of ``text`` from ``sender`` (one part), as a network would hand it over."""
    sent_at = (sent_at or datetime.now(UTC)).astimezone(UTC)
    septets = gsm7_septets(text)
    if septets is not None:
        dcs, udl, body = 0x00, len(septets), pack_septets(septets)
    else:
        body = text.encode("utf-16-be")
        dcs, udl = 0x08, len(body)
    if udl > (GSM7_SINGLE if dcs == 0 else UCS2_SINGLE * 2):
        raise PduError(f"{len(text)} characters do not fit one SMS-DELIVER")
    stamp = _semi_octets(sent_at.strftime("%y%m%d%H%M%S") + "00")
    tpdu = bytes((0x04,)) + encode_address(sender) + bytes((0x00, dcs)) + stamp
    return (encode_smsc(smsc) + tpdu + bytes((udl,)) + body).hex().upper()


def status_report_pdu(reference: int, recipient: str, status: int = 0) -> str:
    """An SMS-STATUS-REPORT for message ``reference``, as a network hands it over."""
    stamp = _semi_octets(datetime.now(UTC).strftime("%y%m%d%H%M%S") + "00")
    tpdu = bytes((0x06, reference & 0xFF)) + encode_address(recipient) + stamp + stamp
    return (b"\x00" + tpdu + bytes((status,))).hex().upper()
