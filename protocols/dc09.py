"""ANSI/SIA DC-09 wire format: framing, CRC, AES, Contact ID and SIA DC-03 data.

One module for both sides: the DC-09 forwarder builds messages and reads the
centre's replies with it, ``lianfang receiver`` reads messages and builds
replies with it. Nothing here does I/O.

A frame is ``LF crc(4 hex) 0LLL(4 hex) body CR``; the CRC (CRC-16/ARC) and the
length cover the body, from the opening ``"`` of the ID token to the last
character before CR. The body is::

    "ID"seq[Rrcvr]Lpref#acct[data]ext_HH:MM:SS,MM-DD-YYYY        clear
    "*ID"seq[Rrcvr]Lpref#acct[HEX                                  encrypted

where HEX is AES-CBC (zero IV) of ``pad|data]ext_timestamp``; pad is random
printable characters (never ``|``, ``[`` or ``]``) that bring the plain text to
a multiple of 16 bytes.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

MAX_FRAME = 1000
"""Receivers may reject longer messages; we never send one and never read one."""

TIMESTAMP_FORMAT = "%H:%M:%S,%m-%d-%Y"
ZERO_IV = bytes(16)
_PAD_CHARS = string.ascii_letters + string.digits

_BODY = re.compile(
    r'"(?P<star>\*?)(?P<token>[A-Z-]{3,7})"(?P<seq>\d{4})'
    # pysiaalarm 3.x writes Python's "None" in its replies when the message had no R.
    r"(?:R(?P<receiver>[0-9A-F]{1,6})|None)?"
    # Lazy, so that the NAK's "L0A0[" reads as line 0; "A0" only counts before "[".
    r"(?:L(?P<line>[0-9A-F]{1,6}?))?"
    # pysiaalarm's NAK to a message it cannot parse reads "L0R0A0[]".
    r"(?:R[0-9A-F]{1,6})?"
    r"(?:A0(?=\[))?"  # the standard's NAK reads "R0L0A0[]"
    r"(?:#(?P<account>[0-9A-Fa-f]{3,16}))?"
    r"\[(?P<rest>.*)\Z",
    re.DOTALL,
)
_TAIL = re.compile(r"(?P<ext>(?:\[[^\[\]]*\])*)(?:_(?P<ts>\d\d:\d\d:\d\d,\d\d-\d\d-\d{4}))?\Z")


class Token(StrEnum):
    """The ``"ID"`` token: what a message is."""

    ADM_CID = "ADM-CID"
    SIA_DCS = "SIA-DCS"
    NULL = "NULL"
    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"


class FrameError(GatewayError):
    """A frame that cannot be used; ``reason`` is a short word for counters."""

    def __init__(self, message: str, reason: str) -> None:
        """Keep the reason (``crc``, ``length``, ``format``, ``key``, ``size``)."""
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One DC-09 message, decrypted."""

    token: Token
    sequence: int
    account: str | None
    data: str = ""
    """What is between ``[`` and ``]``, without the pad (``#acct|1130 01 005``)."""
    receiver: str | None = None
    line: str | None = "0"
    extended: str = ""
    """Extended data blocks after ``]``, as sent (``[X...][Y...]``)."""
    timestamp: datetime | None = None
    encrypted: bool = False

    def reply(self, token: Token, timestamp: datetime | None) -> Message:
        """The receiver's reply to this message (ACK or DUH echo sequence and account)."""
        if token is Token.NAK:
            return Message(Token.NAK, 0, None, receiver="0", line="0", timestamp=timestamp)
        return replace(self, token=token, data="", extended="", timestamp=timestamp)


def crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005 reflected, initial value 0), as DC-09 specifies."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def key_bytes(key: str, key_format: str) -> bytes:
    """The AES key from its configured text: hex digits decoded, or the characters themselves.

    Raises ``ValueError`` naming what is wrong.
    """
    if key_format == "hex":
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raise ValueError("the key is not hex digits") from None
    else:
        raw = key.encode("ascii", errors="strict")
    if len(raw) not in (16, 24, 32):
        raise ValueError(
            f"an AES key is 16, 24 or 32 bytes, this one is {len(raw)}"
            f" ({'hex digits' if key_format == 'hex' else 'characters'}: {len(key)})"
        )
    return raw


def format_timestamp(moment: datetime) -> str:
    """``_HH:MM:SS,MM-DD-YYYY`` in UTC."""
    return "_" + moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def encode(message: Message, key: bytes | None = None) -> bytes:
    """The whole frame, LF to CR; encrypted when ``key`` is given (a timestamp is then required)."""
    head = f"{message.sequence:04d}"
    if message.receiver is not None:
        head += f"R{message.receiver}"
    if message.line is not None:
        head += f"L{message.line}"
    if message.token is Token.NAK:
        head += "A0"  # as the standard writes its NAK
    if message.account is not None:
        head += f"#{message.account}"
    stamp = format_timestamp(message.timestamp) if message.timestamp else ""
    inner = f"{message.data}]{message.extended}{stamp}"
    if key is None:
        body = f'"{message.token}"{head}[{inner}'
    else:
        if message.timestamp is None:
            raise ValueError("an encrypted DC-09 message must carry a timestamp")
        body = f'"*{message.token}"{head}[{_encrypt(inner, key)}'
    raw = body.encode("ascii")
    if len(raw) + 10 > MAX_FRAME:
        raise ValueError(f"DC-09 message of {len(raw) + 10} bytes; receivers take fewer than 1000")
    return b"\n%04X%04X%s\r" % (crc16(raw), len(raw), raw)


def _aes_cbc(key: bytes) -> Cipher[modes.CBC]:
    """AES in CBC with the standard's zero IV."""
    # Imported here: cryptography costs the daemon ~6 MB, paid only by gateways with a key.
    from cryptography.hazmat.primitives.ciphers import (  # noqa: PLC0415
        Cipher,
        algorithms,
        modes,
    )

    return Cipher(algorithms.AES(key), modes.CBC(ZERO_IV))


def _encrypt(inner: str, key: bytes) -> str:
    pad_len = -(len(inner) + 1) % 16
    pad = "".join(secrets.choice(_PAD_CHARS) for _ in range(pad_len))
    plain = f"{pad}|{inner}".encode("ascii")
    encryptor = _aes_cbc(key).encryptor()
    return (encryptor.update(plain) + encryptor.finalize()).hex().upper()


def _decrypt(hex_text: str, key: bytes) -> str:
    try:
        cipher_text = bytes.fromhex(hex_text)
    except ValueError:
        raise FrameError("encrypted block is not hex", "format") from None
    if not cipher_text or len(cipher_text) % 16:
        raise FrameError("encrypted block is not a whole number of AES blocks", "format")
    decryptor = _aes_cbc(key).decryptor()
    plain = decryptor.update(cipher_text) + decryptor.finalize()
    try:
        text = plain.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("decrypted block is not text: wrong key?", "key") from None
    end = text.find("]")
    if end < 0:
        raise FrameError("decrypted block has no ']': wrong key?", "key")
    bar = text.find("|", 0, end)
    # The standard's pad ends with '|'. Some receivers (pysiaalarm) pad their
    # replies with '0's and no '|': then everything before ']' is pad.
    return text[bar + 1 :] if bar >= 0 else text[end:]


def split_frame(buffer: bytearray) -> bytes | None:
    """Take the next LF...CR frame out of ``buffer`` (bytes before the LF are dropped)."""
    end = buffer.find(b"\r")
    if end < 0:
        if len(buffer) > MAX_FRAME:
            buffer.clear()
            raise FrameError(f"no CR within {MAX_FRAME} bytes", "size")
        return None
    frame = bytes(buffer[: end + 1])
    del buffer[: end + 1]
    start = frame.rfind(b"\n")
    return frame[start:] if start >= 0 else frame


def _checked_body(frame: bytes) -> str:
    """The body of ``frame`` once its size, CRC and length are right."""
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes, more than {MAX_FRAME}", "size")
    text = frame.strip(b"\n\r")
    try:
        header, body = text[:8].decode("ascii"), text[8:].decode("ascii")
        crc, length = int(header[:4], 16), int(header[4:8], 16)
    except (UnicodeDecodeError, ValueError):
        raise FrameError("not a DC-09 frame: no CRC and length header", "format") from None
    raw = text[8:]
    if crc != crc16(raw):
        raise FrameError(f"CRC {header[:4]} does not match {crc16(raw):04X}", "crc")
    if length != len(raw):
        raise FrameError(f"length {header[4:8]} but the body has {len(raw):04X}", "length")
    return body


def decode(frame: bytes, keys: dict[str, bytes] | None = None) -> Message:
    """Parse and check one frame; ``keys`` maps account to AES key ("" for any account).

    Raises ``FrameError`` with the reason: ``size``, ``format``, ``crc``,
    ``length``, ``key`` (encrypted for an account without a key, or the wrong key).
    """
    body = _checked_body(frame)
    match = _BODY.match(body)
    if match is None:
        raise FrameError(f"body is not DC-09: {body[:60]!r}", "format")
    try:
        token = Token(match["token"])
    except ValueError:
        raise FrameError(f"unknown ID token {match['token']!r}", "token") from None
    account = match["account"].upper() if match["account"] else None
    rest = match["rest"]
    encrypted = bool(match["star"])
    if encrypted:
        key = (keys or {}).get(account or "") or (keys or {}).get("")
        if key is None:
            raise FrameError(f"encrypted message for account {account} without a key", "key")
        rest = _decrypt(rest, key)
    data, _, tail = rest.partition("]")
    tail_match = _TAIL.match(tail)
    if tail_match is None:
        raise FrameError(f"bad extended data or timestamp {tail[:40]!r}", "format")
    stamp = None
    if tail_match["ts"]:
        try:
            stamp = datetime.strptime(tail_match["ts"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise FrameError(f"bad timestamp {tail_match['ts']!r}", "format") from None
    if encrypted and stamp is None and token is not Token.NAK:
        raise FrameError("encrypted message without a timestamp", "format")
    return Message(
        token,
        int(match["seq"]),
        account,
        data=data,
        receiver=match["receiver"],
        line=match["line"],
        extended=tail_match["ext"],
        timestamp=stamp,
        encrypted=encrypted,
    )


# --- event data: Contact ID and SIA DC-03 -----------------------------------------------


@dataclass(frozen=True)
class EventData:
    """What one alarm says: its code, whether it is new or a restore, partition and zone."""

    qualifier: int
    """Contact ID event qualifier: 1 new event, 3 restore, 6 status."""
    code: int
    """Contact ID event code, three digits."""
    partition: int
    zone: int
    sia_code: str
    """SIA DC-03 event code, two letters (its restore code for a restore)."""


def contact_id(account: str, event: EventData) -> str:
    """ADM-CID data: ``#acct|Qccc pp zzz``."""
    return f"#{account}|{event.qualifier}{event.code:03d} {event.partition:02d} {event.zone:03d}"


def sia_dcs(account: str, event: EventData) -> str:
    """SIA DC-03 data: ``#acct|Nri<partition>/<code><zone>``."""
    return f"#{account}|Nri{event.partition}/{event.sia_code}{event.zone:03d}"


_CID_DATA = re.compile(
    r"#?(?P<account>[0-9A-F]{3,16})?\|?(?P<q>[136])(?P<code>\d{3}) (?P<p>\d\d) (?P<z>\d{3})\Z"
)
_SIA_DATA = re.compile(
    r"#?(?P<account>[0-9A-F]{3,16})?\|?N?(?:ri(?P<p>\d+)/?)?(?P<code>[A-Z]{2})(?P<z>\d*)\Z"
)


def parse_data(token: Token, data: str) -> dict[str, str | int]:
    """The fields of ADM-CID or SIA-DCS data; raises ``FrameError`` ("data") if malformed."""
    if token is Token.ADM_CID:
        m = _CID_DATA.match(data)
        if m is None:
            raise FrameError(f"Contact ID data not understood: {data[:60]!r}", "data")
        return {
            "qualifier": int(m["q"]),
            "code": m["code"],
            "partition": int(m["p"]),
            "zone": int(m["z"]),
        }
    m = _SIA_DATA.match(data)
    if m is None:
        raise FrameError(f"SIA data not understood: {data[:60]!r}", "data")
    return {"code": m["code"], "partition": int(m["p"] or 0), "zone": int(m["z"] or 0)}
