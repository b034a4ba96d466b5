"""The wired line protocol's framing: ``$LF,<addr>,<seq>,<type>,<data>*<CRC16>`` and CRLF.

Pure code, no I/O: the driver and the firmware stubs both use it. ``LineReader``
takes bytes as they arrive and returns whole, checked frames; anything else is
counted by reason and skipped, and the reader resynchronises on the next ``$``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MAX_LINE = 80
"""A frame is at most this many bytes, line end included."""

_CRC = re.compile(rb"[0-9A-F]{4}")
_BODY = re.compile(rb"LF,(\d{1,3}),(\d{1,3}),([A-Z]{1,8})(?:,([\x21-\x29\x2b-\x7e]{0,40}))?")


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); ``b"123456789"`` gives 0x4B37."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@dataclass(frozen=True, slots=True)
class LineFrame:
    """One checked frame: device address, sequence number, type and data."""

    addr: int
    seq: int
    type: str
    data: str | None = None

    def encode(self) -> bytes:
        """The frame on the wire, CRC and line end included."""
        body = f"LF,{self.addr},{self.seq},{self.type}"
        if self.data is not None:
            body += f",{self.data}"
        raw = body.encode("ascii")
        return b"$" + raw + b"*" + f"{crc16_modbus(raw):04X}".encode() + b"\r\n"

    def ack(self) -> LineFrame:
        """The gateway's acknowledgement of this frame."""
        return LineFrame(self.addr, self.seq, "ACK")


class LineReader:
    """Splits a byte stream into checked frames; counts what it drops in ``rejected``."""

    def __init__(self) -> None:
        """Start with an empty buffer, waiting for a ``$``."""
        self.rejected: Counter[str] = Counter()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[LineFrame]:
        """Add ``data``; return every frame it completes, in order."""
        self._buffer += data
        frames: list[LineFrame] = []
        while True:
            start = self._buffer.find(b"$")
            if start < 0:
                if self._buffer.strip(b"\r\n"):
                    self.rejected["noise"] += 1
                self._buffer.clear()
                return frames
            if self._buffer[:start].strip(b"\r\n"):
                self.rejected["noise"] += 1
            del self._buffer[:start]
            end = self._buffer.find(b"\n")
            # A new '$' before the line end means the line was cut short: resync there.
            restart = self._buffer.find(b"$", 1, end if end >= 0 else len(self._buffer))
            if restart > 0:
                self.rejected["truncated"] += 1
                del self._buffer[:restart]
                continue
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self.rejected["overlong"] += 1
                    self._buffer.clear()
                return frames
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            frame = self._parse(line)
            if frame is not None:
                frames.append(frame)

    def _parse(self, line: bytes) -> LineFrame | None:  # noqa: PLR0911 - one verdict a check
        if len(line) > MAX_LINE:
            self.rejected["overlong"] += 1
            return None
        text = line.rstrip(b"\r\n")
        star = text.rfind(b"*")
        if star < 0 or len(text) - star != 5:
            self.rejected["malformed"] += 1
            return None
        body, crc = text[1:star], text[star + 1 :]
        # Exactly four upper-case hex digits: int() alone would also take "+0AB" or "0_AB".
        if _CRC.fullmatch(crc) is None:
            self.rejected["malformed"] += 1
            return None
        if int(crc, 16) != crc16_modbus(body):
            self.rejected["bad_crc"] += 1
            return None
        match = _BODY.fullmatch(body)
        if match is None:
            self.rejected["malformed"] += 1
            return None
        addr, seq = int(match[1]), int(match[2])
        if not (1 <= addr <= 247 and 0 <= seq <= 255):
            self.rejected["malformed"] += 1
            return None
        data = match[4]
        return LineFrame(addr, seq, match[3].decode(), None if data is None else data.decode())
