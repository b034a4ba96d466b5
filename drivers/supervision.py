"""Supervision of field devices that send heartbeats: a silent device is a trouble.

A device with a supervision interval must be heard from (any frame) within
each interval. When it is not, ``watch`` emits ``supervision_lost`` (forwarded
to the police as a trouble) once; the next frame from it emits ``restore``.
The device's last seen time, battery and fault go to ``DeviceStates``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from drivers.base import DeviceBinding, DriverContext, Emit
from gateway.device_state import DeviceState
from gateway.events import EventKind

SUPERVISION_LOST = EventKind.SUPERVISION_LOST.value


@dataclass
class _Watched:
    binding: DeviceBinding
    interval_s: float
    heard_at: float
    lost: bool = False


class Supervision:
    """Tracks when each device was last heard; raises and clears supervision troubles."""

    def __init__(
        self,
        driver: str,
        context: DriverContext,
        intervals: Iterable[tuple[DeviceBinding, float | None]],
    ) -> None:
        """Watch the devices that have an interval (seconds); others are only recorded."""
        self._driver = driver
        self._context = context
        now = time.monotonic()
        # A device never heard since start is given one whole interval. One already
        # lost before a restart stays lost: its trouble is not raised twice, and its
        # next frame is its restore.
        self._watched = {
            (b.shop_id, b.device_id): _Watched(b, s, now, lost=self.fault_of(b) == SUPERVISION_LOST)
            for b, s in intervals
            if s is not None
        }
        self._reported_lost: set[tuple[str, str]] = set()

    def last(self, binding: DeviceBinding) -> DeviceState | None:
        """What was recorded of ``binding``, also before a restart (None without a record)."""
        states = self._context.device_states
        return None if states is None else states.last(binding.shop_id, binding.device_id)

    def fault_of(self, binding: DeviceBinding) -> str | None:
        """The fault recorded for ``binding``, also before a restart (None without a record)."""
        last = self.last(binding)
        return None if last is None else last.fault

    def heard(self, binding: DeviceBinding, *, battery_v: float | None = None) -> bool:
        """Record a frame from ``binding``; True if it was lost and is back (emit ``restore``)."""
        states = self._context.device_states
        if states is not None:
            states.seen(
                binding.shop_id, binding.device_id, driver=self._driver, battery_v=battery_v
            )
        self._reported_lost.discard((binding.shop_id, binding.device_id))
        watched = self._watched.get((binding.shop_id, binding.device_id))
        if watched is None:
            return False
        watched.heard_at = time.monotonic()
        if not watched.lost:
            return False
        watched.lost = False
        self.set_fault(binding, None)
        return True

    def is_lost(self, binding: DeviceBinding) -> bool:
        """Whether ``binding`` is lost now: silent past its interval, or reported lost."""
        key = (binding.shop_id, binding.device_id)
        watched = self._watched.get(key)
        return (
            key in self._reported_lost
            or (watched is not None and watched.lost)
            or self.fault_of(binding) == SUPERVISION_LOST
        )

    def report(self, binding: DeviceBinding, *, lost: bool) -> bool:
        """Record what another watcher (such as Zigbee2MQTT's availability) says of ``binding``.

        True if that changes it, so the caller emits ``supervision_lost`` or its
        ``restore``; False if the device already was as reported.
        """
        if self.is_lost(binding) == lost:
            return False
        key = (binding.shop_id, binding.device_id)
        watched = self._watched.get(key)
        if watched is not None:
            watched.lost = lost
            watched.heard_at = time.monotonic()
        if lost:
            self._reported_lost.add(key)
        else:
            self._reported_lost.discard(key)
        self.set_fault(binding, SUPERVISION_LOST if lost else None)
        return True

    def set_fault(self, binding: DeviceBinding, fault: str | None) -> None:
        """Record that ``binding`` is in trouble (``fault``) or no longer (None)."""
        states = self._context.device_states
        if states is not None:
            states.fault(binding.shop_id, binding.device_id, driver=self._driver, fault=fault)

    async def watch(self, emit: Emit) -> None:
        """Emit ``supervision_lost`` for each device silent past its interval, until cancelled."""
        if not self._watched:
            return
        period = min(1.0, min(w.interval_s for w in self._watched.values()) / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for watched in self._watched.values():
                silent = now - watched.heard_at
                if watched.lost or silent <= watched.interval_s:
                    continue
                watched.lost = True
                self.set_fault(watched.binding, SUPERVISION_LOST)
                await emit(
                    self._context.event(
                        self._driver,
                        watched.binding,
                        EventKind.SUPERVISION_LOST,
                        ref="supervision",
                        attrs={"silent_s": round(silent, 1), "interval_s": watched.interval_s},
                    )
                )

    async def restored(self, emit: Emit, binding: DeviceBinding, ref: str) -> None:
        """Emit the ``restore`` of a device that was lost and is heard again."""
        await emit(
            self._context.event(
                self._driver, binding, EventKind.RESTORE, ref=ref, attrs={"of": SUPERVISION_LOST}
            )
        )
