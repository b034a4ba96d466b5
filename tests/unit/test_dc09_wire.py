"""DC-09 framing: golden wire bytes, CRC and length checked by an independent computation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.dc09 import (
    FrameError,
    Message,
    Token,
    crc16,
    decode,
    encode,
    key_bytes,
    parse_data,
    split_frame,
)

STAMP = datetime(2026, 11, 22, 4, 5, 6, tzinfo=UTC)


def reference_crc(data: bytes) -> int:
    """CRC-16/ARC the long way: MSB-first polynomial 0x8005 on bit-reversed input, reversed out."""

    def reverse(value: int, bits: int) -> int:
        return int(f"{value:0{bits}b}"[::-1], 2)

    crc = 0
    for byte in data:
        crc ^= reverse(byte, 8) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return reverse(crc, 16)


def independent_frame(body: str) -> bytes:
    raw = body.encode()
    return b"\n" + f"{reference_crc(raw):04X}{len(raw):04X}".encode() + raw + b"\r"


def test_crc_check_value() -> None:
    """CRC-16/ARC of '123456789' is the catalogue's check value 0xBB3D, by both computations."""
    assert crc16(b"123456789") == 0xBB3D
    assert reference_crc(b"123456789") == 0xBB3D


GOLDEN = [
    (
        Message(Token.ADM_CID, 1, "1234", data="#1234|1120 01 000", timestamp=STAMP),
        '"ADM-CID"0001L0#1234[#1234|1120 01 000]_04:05:06,11-22-2026',
    ),
    (
        Message(Token.ADM_CID, 9999, "00011", data="#00011|3130 01 005", receiver="12", line="3"),
        '"ADM-CID"9999R12L3#00011[#00011|3130 01 005]',
    ),
    (
        Message(Token.SIA_DCS, 42, "ABC", data="#ABC|Nri1/BA005", line=None, timestamp=STAMP),
        '"SIA-DCS"0042#ABC[#ABC|Nri1/BA005]_04:05:06,11-22-2026',
    ),
    (
        Message(Token.NULL, 7, "1234", timestamp=STAMP),
        '"NULL"0007L0#1234[]_04:05:06,11-22-2026',
    ),
    (
        Message(Token.NAK, 0, None, receiver="0", line="0", timestamp=STAMP),
        '"NAK"0000R0L0A0[]_04:05:06,11-22-2026',
    ),
]


@pytest.mark.parametrize(("message", "body"), GOLDEN)
def test_golden_frames(message: Message, body: str) -> None:
    """Each message encodes to exactly the frame built independently, and decodes back."""
    assert encode(message) == independent_frame(body)
    assert decode(independent_frame(body)) == message


def test_known_frame_from_the_field() -> None:
    """A frame written out by hand, CRC included, as a receiver would see it."""
    frame = b'\n7147003B"ADM-CID"0001L0#1234[#1234|1130 01 005]_03:04:05,01-02-2026\r'
    assert reference_crc(frame[9:-1]) == 0x7147
    message = decode(frame)
    assert (message.token, message.account, message.data) == (
        Token.ADM_CID,
        "1234",
        "#1234|1130 01 005",
    )
    assert parse_data(message.token, message.data) == {
        "qualifier": 1,
        "code": "130",
        "partition": 1,
        "zone": 5,
    }


@pytest.mark.parametrize("size", [16, 24, 32])
def test_encrypted_layout(size: int) -> None:
    """AES-CBC, zero IV: pad (no '|') then '|' then data, ']' and timestamp, whole blocks."""
    key = bytes(range(size))
    message = Message(Token.ADM_CID, 3, "1234", data="#1234|1120 01 000", timestamp=STAMP)
    frame = encode(message, key)
    body = frame[9:-1].decode()
    assert body.startswith('"*ADM-CID"0003L0#1234[')
    assert int(frame[1:5], 16) == reference_crc(frame[9:-1])
    assert int(frame[5:9], 16) == len(body)
    hex_part = body.split("[", 1)[1]
    decryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).decryptor()
    plain = (decryptor.update(bytes.fromhex(hex_part)) + decryptor.finalize()).decode()
    pad, _, rest = plain.partition("|")
    assert len(plain) % 16 == 0
    assert not set(pad) & set("|[]")
    assert rest == "#1234|1120 01 000]_04:05:06,11-22-2026"
    assert decode(frame, {"": key}) == Message(
        Token.ADM_CID, 3, "1234", data="#1234|1120 01 000", timestamp=STAMP, encrypted=True
    )


def test_key_formats() -> None:
    """Hex keys are decoded, ascii keys are their own bytes; wrong sizes are named."""
    assert key_bytes("00" * 16, "hex") == bytes(16)
    assert key_bytes("0123456789ABCDEF", "ascii") == b"0123456789ABCDEF"
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        key_bytes("00" * 15, "hex")
    with pytest.raises(ValueError, match="not hex"):
        key_bytes("zz" * 16, "hex")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'\n0000001A"NULL"0001L0#1234[]\r', "crc"),
        (
            independent_frame('"NULL"0001L0#1234[]')[:5] + b"0099" + b'"NULL"0001L0#1234[]\r',
            "length",
        ),
        (b"\nhello\r", "format"),
        (independent_frame("garbage without quotes"), "format"),
        (independent_frame('"FOO"0001L0#1234[]'), "token"),
        (independent_frame('"*NULL"0001L0#1234[00112233445566778899AABBCCDDEEFF'), "key"),
        (b"\n" + b"A" * 1200 + b"\r", "size"),
    ],
)
def test_malformed_frames(frame: bytes, reason: str) -> None:
    """Every unusable frame raises FrameError with a reason, never anything else."""
    with pytest.raises(FrameError) as caught:
        decode(frame)
    assert caught.value.reason == reason


def test_wrong_key_is_refused() -> None:
    """A frame encrypted with another key is refused, not misread."""
    frame = encode(Message(Token.NULL, 1, "1234", timestamp=STAMP), bytes(16))
    with pytest.raises(FrameError) as caught:
        decode(frame, {"": bytes(range(16))})
    assert caught.value.reason in {"key", "format"}


def test_split_frames_from_a_stream() -> None:
    """Frames come out of a byte stream one by one; junk before LF is dropped; no CR in time fails."""
    one = encode(Message(Token.NULL, 1, "1234"))
    two = encode(Message(Token.NULL, 2, "1234"))
    buffer = bytearray(b"junk" + one + two[:5])
    assert split_frame(buffer) == one
    assert split_frame(buffer) is None
    buffer += two[5:]
    assert split_frame(buffer) == two
    huge = bytearray(b"x" * 2000)
    with pytest.raises(FrameError):
        split_frame(huge)
    assert not huge


def test_pysiaalarm_nak_forms_are_read() -> None:
    """The NAKs of pysiaalarm ("L0R0A0[]" for what it cannot parse) carry its clock to us."""
    for body in (
        '"NAK"0000L0R0A0[]_04:05:06,11-22-2026',
        '"NAK"0000NoneL0A0[]_04:05:06,11-22-2026',
    ):
        nak = decode(independent_frame(body))
        assert (nak.token, nak.sequence, nak.timestamp) == (Token.NAK, 0, STAMP)
