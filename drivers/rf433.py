"""433 MHz fixed-code buttons (EV1527 style) through a UART receiver module.

The module prints one line per decoded frame, ``RX:<6 hex digits>`` by
default (other modules by ``line_pattern``). One press sends a burst of
identical frames: frames of a code closer together than ``burst_s`` are one
press, one event. Codes are bound to shop devices by ``lianfang learn``;
unknown codes are counted and listed (with when they were last heard) for the
installer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from typing import ClassVar

from drivers.base import DriverContext, Emit
from drivers.rf433_config import Rf433Config
from drivers.serial_port import open_serial, read_some
from drivers.supervision import Supervision
from gateway.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

KIND = "rf433"
MAX_LINE = 120
MAX_UNKNOWN = 64


class CodeReader:
    """Turns the receiver's output into presses: one per burst, by code."""

    def __init__(self, pattern: str, burst_s: float) -> None:
        """Match lines with ``pattern``; frames closer than ``burst_s`` are one press."""
        self._pattern = re.compile(pattern)
        self._burst_s = burst_s
        self._buffer = b""
        self._last: dict[str, float] = {}
        self.noise = 0

    def feed(self, data: bytes, now: float) -> list[str]:
        """Codes newly pressed in ``data`` (upper-case hex)."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            self.noise += 1
            self._buffer = b""
        pressed = []
        for raw in lines:
            match = self._pattern.fullmatch(raw.strip().decode("ascii", errors="replace"))
            if match is None:
                self.noise += raw.strip() != b""
                continue
            code = match["code"].upper()
            self._forget_before(now - self._burst_s)
            last = self._last.get(code)
            self._last[code] = now  # a long burst stays one press
            if last is None or now - last >= self._burst_s:
                pressed.append(code)
        return pressed

    def _forget_before(self, since: float) -> None:
        """Drop codes last heard before ``since``: they can no longer be part of a burst.

        A receiver hears many strangers' codes (neighbours' remotes, rolling-code car keys).
        """
        if len(self._last) > MAX_UNKNOWN:
            self._last = {code: at for code, at in self._last.items() if at >= since}


class Rf433Driver:
    """Reads a receiver module; one event per press of a learned button."""

    kind: ClassVar[str] = KIND

    def __init__(self, config: Rf433Config, *, context: DriverContext) -> None:
        """Serve the buttons in ``config``."""
        self.config = config
        self._context = context
        self.link_up = asyncio.Event()
        self.rejected: Counter[str] = Counter()
        self.unknown_codes: dict[str, float] = {}
        """Codes heard but not learned, with the wall-clock time each was last pressed."""
        self._buttons = {b.code: b for b in config.buttons}
        self._log = RateLimitedLog(logger)
        self.supervision = Supervision(config.name, context, [(b, None) for b in config.buttons])

    def relearn(self, config: Rf433Config) -> None:
        """Serve the buttons of a reloaded ``config`` (same receiver); the link stays open."""
        self.config = config
        self._buttons = {b.code: b for b in config.buttons}
        for code in self._buttons:
            self.unknown_codes.pop(code, None)

    async def run(self, emit: Emit) -> None:
        """Read the receiver until cancelled; raise ``DriverUnavailable`` when the port fails."""
        reader, writer = await open_serial(self.config.port, self.config.baudrate)
        codes = CodeReader(self.config.line_pattern, self.config.burst_s)
        self.link_up.set()
        try:
            while True:
                data = await read_some(reader, self.config.port)
                for code in codes.feed(data, time.monotonic()):
                    await self._pressed(code, emit)
                if codes.noise:
                    self.rejected["noise"] += codes.noise
                    codes.noise = 0
        finally:
            writer.close()

    async def _pressed(self, code: str, emit: Emit) -> None:
        button = self._buttons.get(code)
        if button is None:
            self.rejected["unknown_code"] += 1
            self.unknown_codes[code] = time.time()
            if len(self.unknown_codes) > MAX_UNKNOWN:
                oldest = min(self.unknown_codes, key=self.unknown_codes.__getitem__)
                del self.unknown_codes[oldest]
            self._log.warning("unknown", "%s: unknown code %s", self.config.name, code)
            return
        self.supervision.heard(button)
        await emit(
            self._context.event(
                self.config.name,
                button,
                button.event,
                ref=f"{self.config.port}#{code}",
                attrs={"code": code},
            )
        )
