"""Wired panic buttons and keypads on one serial bus (RS-485 or USB), line protocol.

Each frame is acknowledged once its event is in the journal (frames that make
no event, such as a heartbeat or a single key, at once). The last frame of an
address, sent again to the letter within ``repeat_window_s``, is a
retransmission: it is not emitted again, and once the first copy is durable it
is acknowledged again, since the device evidently missed the ACK. Garbled
input is counted by reason and skipped.

A keypad's keys are collected per address; a configured sequence (default
``9#``) typed within ``sequence_timeout_s`` becomes its event kind. Single keys
make no event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from drivers.base import DriverContext, Emit
from drivers.line_serial_config import MAX_KEYS, LineDeviceConfig, LineSerialConfig
from drivers.serial_port import open_serial, read_some
from drivers.supervision import Supervision
from gateway.events import EventKind
from gateway.ratelimit import RateLimitedLog
from protocols.line_frames import LineFrame, LineReader

logger = logging.getLogger(__name__)

KIND = "line_serial"
# RS-485 is half duplex: an ACK waits until the bus has been quiet for 3.5
# character times (as Modbus RTU does), but no longer than this behind a chatty bus.
MAX_ACK_WAIT_S = 0.5

# Frame types that are one event each, and its kind.
FRAME_KINDS = {"PANIC": EventKind.PANIC, "TAMPER": EventKind.TAMPER, "RESTORE": EventKind.RESTORE}


@dataclass
class _LastFrame:
    frame: LineFrame
    at: float
    durable: bool


@dataclass
class _Keys:
    typed: str = ""
    at: float = 0.0


class LineSerialDriver:
    """Reads one bus, emits each device's events, acknowledges them once durable."""

    kind: ClassVar[str] = KIND

    def __init__(self, config: LineSerialConfig, *, context: DriverContext) -> None:
        """Serve the devices in ``config`` on its port."""
        self.config = config
        self._context = context
        self.link_up = asyncio.Event()
        self.rejected: Counter[str] = Counter()
        self._log = RateLimitedLog(logger)
        self._devices = {d.address: d for d in config.devices}
        self._last: dict[int, _LastFrame] = {}
        self._keys: dict[int, _Keys] = {}
        self._low_battery: set[int] = set()
        # Longest first: with '9#' and '1239#' configured, typing 1239# is the latter.
        self._sequences = sorted(config.key_sequences, key=len, reverse=True)
        self._writer: asyncio.StreamWriter | None = None
        self._acks: asyncio.Queue[tuple[LineFrame, asyncio.StreamWriter | None]] = asyncio.Queue()
        self._heard_at = 0.0
        self._quiet_s = max(0.002, 3.5 * 11 / config.baudrate)
        self.supervision = Supervision(
            config.name,
            context,
            [(d, d.supervision_s or config.supervision_s) for d in config.devices],
        )
        for device in config.devices:
            # Low before a restart: low_battery is not raised again, and a new battery restores.
            last = self.supervision.last(device)
            if (
                last is not None
                and last.battery_v is not None
                and last.battery_v < config.low_battery_v
            ):
                self._low_battery.add(device.address)

    async def run(self, emit: Emit) -> None:
        """Read the bus until cancelled; raise ``DriverUnavailable`` when the port fails."""
        reader, writer = await open_serial(self.config.port, self.config.baudrate)
        self._writer = writer
        frames = LineReader()
        self.link_up.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.supervision.watch(emit), name=f"{self.config.name}.supervise")
                tg.create_task(self._transmit(), name=f"{self.config.name}.acks")
                while True:
                    data = await read_some(reader, self.config.port)
                    self._heard_at = time.monotonic()
                    for frame in frames.feed(data):
                        await self._handle(frame, emit)
                    self._count(frames)
        finally:
            self._writer = None
            writer.close()

    def _count(self, frames: LineReader) -> None:
        if not frames.rejected:
            return
        for reason, n in frames.rejected.items():
            self.rejected[reason] += n
            self._log.warning(reason, "%s: dropped %d %s input(s)", self.config.name, n, reason)
        frames.rejected.clear()

    def _send(self, frame: LineFrame, writer: asyncio.StreamWriter | None) -> None:
        self._acks.put_nowait((frame, writer))

    async def _transmit(self) -> None:
        """Write queued ACKs once no device is talking (or after ``MAX_ACK_WAIT_S``).

        Every ACK queued by then goes out in that one quiet gap, so a busy bus
        cannot make them pile up.
        """
        while True:
            pending = [await self._acks.get()]
            latest = time.monotonic() + MAX_ACK_WAIT_S
            while True:  # each byte heard meanwhile moves the quiet time on
                wait = min(self._heard_at + self._quiet_s, latest) - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            while not self._acks.empty():
                pending.append(self._acks.get_nowait())
            for frame, writer in pending:
                # After a reconnect, an ACK for a frame read on the old port is dropped:
                # the device sends the frame again and the repeat is acknowledged.
                if writer is not None and writer is self._writer and not writer.is_closing():
                    writer.write(frame.encode())

    async def _handle(self, frame: LineFrame, emit: Emit) -> None:
        device = self._devices.get(frame.addr)
        if device is None:
            self.rejected["unknown_address"] += 1
            self._log.warning(
                "unknown", "%s: frame from unknown address %d", self.config.name, frame.addr
            )
            return
        battery = _volts(frame.data) if frame.type == "HB" else None
        if self.supervision.heard(device, battery_v=battery):
            await self.supervision.restored(emit, device, self._ref(frame))
        now = time.monotonic()
        last = self._last.get(frame.addr)
        window = self.config.repeat_window_s
        # A retransmission is the same frame to the letter; a device that restarts its
        # numbering after a power cut sends a different frame, or one much later.
        if last is not None and last.frame == frame and now - last.at < window:
            last.at = now  # a device retrying while the journal is slow stays one event
            if last.durable:
                self._send(frame.ack(), self._writer)
            return
        record = _LastFrame(frame, now, durable=False)
        self._last[frame.addr] = record
        kind, zone, attrs = self._meaning(frame, device, battery, now)
        writer = self._writer

        def acknowledge() -> None:
            record.durable = True
            self._send(frame.ack(), writer)

        if kind is None:
            acknowledge()
            return
        event = self._context.event(
            self.config.name, device, kind, ref=self._ref(frame), zone=zone, attrs=attrs
        )
        try:
            await emit(event, on_durable=acknowledge)
        except BaseException:
            # Not taken (cancelled while the journal was backed up): the device's next
            # copy must be a new frame, not a repeat of one that is never acknowledged.
            if self._last.get(frame.addr) is record:
                del self._last[frame.addr]
            raise

    def _ref(self, frame: LineFrame) -> str:
        return f"{self.config.port}#{frame.addr}/{frame.seq}"

    def _meaning(
        self, frame: LineFrame, device: LineDeviceConfig, battery: float | None, now: float
    ) -> tuple[EventKind | None, str | None, dict[str, object]]:
        """The event kind a frame makes (None for none), its zone and attributes."""
        attrs: dict[str, object] = {"addr": frame.addr, "seq": frame.seq}
        if frame.type in FRAME_KINDS:
            return FRAME_KINDS[frame.type], frame.data or None, attrs
        if frame.type == "HB":
            return self._battery(frame.addr, battery), None, {**attrs, "battery_v": battery}
        if frame.type == "KEY" and frame.data is not None and len(frame.data) == 1:
            matched = self._typed(frame.addr, frame.data, now)
            if matched is None:
                return None, None, attrs
            return self.config.key_sequences[matched], None, {**attrs, "keys": matched}
        self.rejected["unknown_type"] += 1
        self._log.warning(
            "type",
            "%s: address %d (%s) sent unknown frame type %s",
            self.config.name,
            frame.addr,
            device.device_id,
            frame.type,
        )
        return None, None, attrs

    def _battery(self, addr: int, volts: float | None) -> EventKind | None:
        """``low_battery`` once when a battery falls low, ``restore`` once it is well again."""
        if volts is None:
            return None
        if volts < self.config.low_battery_v and addr not in self._low_battery:
            self._low_battery.add(addr)
            return EventKind.LOW_BATTERY
        # A little hysteresis, so a battery at the threshold does not flap.
        if volts >= self.config.low_battery_v + 0.1 and addr in self._low_battery:
            self._low_battery.discard(addr)
            return EventKind.RESTORE
        return None

    def _typed(self, addr: int, key: str, now: float) -> str | None:
        """Add a key press; the configured sequence it completes, if any."""
        keys = self._keys.setdefault(addr, _Keys())
        if now - keys.at > self.config.sequence_timeout_s:
            keys.typed = ""
        keys.typed = (keys.typed + key)[-MAX_KEYS:]
        keys.at = now
        for sequence in self._sequences:
            if keys.typed.endswith(sequence):
                keys.typed = ""
                return sequence
        return None


def _volts(data: str | None) -> float | None:
    try:
        return float(data) if data else None
    except ValueError:
        return None
