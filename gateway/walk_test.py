"""Walk test: shops whose events reach the police as tests and alert nobody.

While a shop is under test the intake marks each of its events ``attrs.test``
(``mark``); the rule actions then skip every local effect (neighbours, sirens,
area alerts, arm state) and the forwarders send it as a test report. The test
ends by itself once every device listed for its shops has been heard from, or
when its time is up; ``walk_test_started`` and ``walk_test_ended`` tell the
police, one per shop. The state is kept in ``state_dir/walktest.json``, so a
restart neither ends a test early nor leaves a shop silent after its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config.model import GatewayConfig
from gateway.control import CommandError
from gateway.device_state import DeviceStates
from gateway.events import (
    EVENT_CLASS,
    TEST_ATTR,
    Event,
    EventClass,
    EventKind,
    Source,
    new_event_id,
    utc_now,
)
from gateway.ratelimit import RateLimitedLog
from gateway.state_file import StateFile

logger = logging.getLogger(__name__)

MAX_MINUTES = 24 * 60
"""The longest walk test: a forgotten one must end on its own."""
STATE_FILE = "walktest.json"
MAX_SHOWN = 100
"""Alarms from shops under test listed for the installer (a stuck button must not grow it)."""

Emit = Callable[[Event], Awaitable[None]]


class WalkTestError(CommandError):
    """A walk-test request that cannot be carried out; the message says why."""


@dataclass
class Heard:
    """The first event of a device during the test."""

    at: str
    kind: str
    battery_v: float | None = None


@dataclass
class _Running:
    started_at: datetime
    ends_at: datetime
    shops: dict[str, dict[str, Heard]]
    real_alarms: list[dict[str, str]] = field(default_factory=list)
    """Alarm kinds that came from shops under test: shown to the installer as such."""


class WalkTest:
    """The walk test of one gateway: at most one at a time, over any of its shops."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        emit: Emit,
        device_states: DeviceStates,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """Test ``config``'s shops; tell the police through ``emit``; resume a saved test."""
        self._gid = config.gateway.id
        self._file = StateFile(config.state_dir / STATE_FILE)
        self._emit = emit
        self._device_states = device_states
        self._now = now
        self._changed = asyncio.Event()
        self._log = RateLimitedLog(logger, interval_s=300)
        self.configure(config)
        self.last_result: dict[str, Any] | None = None
        self._running = self._load(self._file.path)

    def configure(self, config: GatewayConfig) -> None:
        """Take the shops and devices of ``config`` (at start and on reload)."""
        self._names = {s.id: s.name for s in config.shops}
        self._devices = {s.id: {d.id: d.kind for d in s.devices} for s in config.shops}

    # --- the hot path --------------------------------------------------------------------

    def mark(self, event: Event) -> Event:
        """``event`` as a test if its shop is under test (and note its device heard)."""
        running = self._running
        if running is None or event.shop_id not in running.shops:
            return event
        # A heartbeat proves the radio, not the button: only other events pass a device.
        if event.kind is not EventKind.HEARTBEAT:
            heard = running.shops[event.shop_id]
            if event.device_id not in heard:
                battery = event.attrs.get("battery_v")
                heard[event.device_id] = Heard(
                    event.received_at.isoformat(),
                    event.kind.value,
                    battery if isinstance(battery, int | float) else None,
                )
                self._changed.set()
            if EVENT_CLASS[event.kind] is EventClass.ALARM and len(running.real_alarms) < MAX_SHOWN:
                running.real_alarms.append(
                    {"shop_id": event.shop_id, "kind": event.kind.value, "event_id": event.id}
                )
        return event.model_copy(update={"attrs": {**event.attrs, TEST_ATTR: True}})

    # --- control ------------------------------------------------------------------------

    async def start(self, shops: Iterable[str] | None, minutes: float) -> dict[str, Any]:
        """Put ``shops`` (None: all) under test for ``minutes``; the status."""
        if self._running is not None:
            raise WalkTestError(
                f"a walk test is already running ({', '.join(sorted(self._running.shops))}); "
                "stop it first"
            )
        if not 0 < minutes <= MAX_MINUTES:
            raise WalkTestError(f"minutes must be more than 0 and at most {MAX_MINUTES}")
        chosen = list(self._names) if shops is None else list(dict.fromkeys(shops))
        unknown = [s for s in chosen if s not in self._names]
        if unknown:
            raise WalkTestError(f"not shops of this gateway: {', '.join(unknown)}")
        if not chosen:
            raise WalkTestError("no shops to test")
        now = self._now()
        self._running = _Running(now, now + timedelta(minutes=minutes), {s: {} for s in chosen})
        self._save()
        logger.info("walk test started: %d shops for %g min", len(chosen), minutes)
        for shop in chosen:
            await self._tell(EventKind.WALK_TEST_STARTED, shop, {"minutes": minutes})
        self._changed.set()
        return self.status()

    async def stop(self, reason: str) -> dict[str, Any]:
        """End the running test (``reason``: done, time up, stopped); its final status."""
        running = self._running
        if running is None:
            raise WalkTestError("no walk test is running")
        result = self.status()
        result["running"] = False
        result["ended_because"] = reason
        result["ended_at"] = self._now().isoformat()
        self._running = None
        self.last_result = result
        self._save()
        logger.info(
            "walk test ended (%s): %d of %d shops passed",
            reason,
            sum(s["passed"] for s in result["shops"]),
            len(result["shops"]),
        )
        for shop in running.shops:
            passed = next(s["passed"] for s in result["shops"] if s["shop_id"] == shop)
            await self._tell(EventKind.WALK_TEST_ENDED, shop, {"reason": reason, "passed": passed})
        return result

    def status(self) -> dict[str, Any]:
        """Per shop and device: heard at, kind, battery and supervision, pass or fail."""
        running = self._running
        if running is None:
            return self.last_result or {"running": False, "shops": []}
        shops = [self._shop_status(shop, heard) for shop, heard in running.shops.items()]
        remaining = max(0.0, (running.ends_at - self._now()).total_seconds())
        return {
            "running": True,
            "started_at": running.started_at.isoformat(),
            "ends_at": running.ends_at.isoformat(),
            "remaining_s": round(remaining, 1),
            "shops": shops,
            "passed": all(s["passed"] for s in shops),
            "real_alarms": list(running.real_alarms),
        }

    def _shop_status(self, shop: str, heard: dict[str, Heard]) -> dict[str, Any]:
        listed = self._devices.get(shop, {})
        devices = []
        for device in [*listed, *(d for d in heard if d not in listed)]:
            state = self._device_states.last(shop, device)
            got = heard.get(device)
            battery = got.battery_v if got and got.battery_v is not None else None
            devices.append(
                {
                    "device_id": device,
                    "device_kind": listed.get(device, "unlisted"),
                    "heard_at": got.at if got else None,
                    "kind": got.kind if got else None,
                    "battery_v": battery if battery is not None else state and state.battery_v,
                    "fault": state.fault if state else None,
                    "passed": got is not None,
                }
            )
        # A shop with no device listed passes on any device heard.
        passed = all(d["passed"] for d in devices) if devices else False
        return {
            "shop_id": shop,
            "name": self._names.get(shop, shop),
            "devices": devices,
            "passed": passed,
        }

    def summary(self) -> dict[str, Any] | None:
        """The running test in a few fields, for the status file and the retained status."""
        running = self._running
        if running is None:
            return None
        return {
            "shops": sorted(running.shops),
            "ends_at": running.ends_at.isoformat(),
            "remaining_min": round(
                max(0.0, (running.ends_at - self._now()).total_seconds()) / 60, 1
            ),
        }

    # --- the task -------------------------------------------------------------------------

    async def run(self) -> None:
        """End the test when every device is heard or the time is up; keep the file current."""
        while True:
            self._changed.clear()
            running = self._running
            if running is not None:
                if all(s["passed"] for s in self.status()["shops"]):
                    await self.stop("done")
                    continue
                if self._now() >= running.ends_at:
                    await self.stop("time up")
                    continue
                await self._save_in_thread()
            wait = None if running is None else (running.ends_at - self._now()).total_seconds()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else max(wait, 0.05)):
                    await self._changed.wait()

    async def _tell(self, kind: EventKind, shop: str, attrs: dict[str, Any]) -> None:
        now = utc_now()
        await self._emit(
            Event(
                id=new_event_id(),
                gateway_id=self._gid,
                shop_id=shop,
                device_id="walk-test",
                kind=kind,
                occurred_at=now,
                received_at=now,
                source=Source(driver="gateway", ref="walk-test"),
                attrs=attrs,
            )
        )

    def _save(self) -> None:
        try:
            self._file.save(self._state_text())
        except OSError as exc:
            self._cannot_save(exc)

    async def _save_in_thread(self) -> None:
        try:
            await self._file.save_in_thread(self._state_text())
        except OSError as exc:
            self._cannot_save(exc)

    def _state_text(self) -> str:
        running = self._running
        data: dict[str, Any] = {"last_result": self.last_result}
        if running is not None:
            data["running"] = {
                "started_at": running.started_at.isoformat(),
                "ends_at": running.ends_at.isoformat(),
                "shops": {
                    s: {d: asdict(h) for d, h in hs.items()} for s, hs in running.shops.items()
                },
                "real_alarms": running.real_alarms,
            }
        return json.dumps(data)

    def _cannot_save(self, exc: OSError) -> None:
        # The test goes on; only its memory across a restart is lost.
        self._log.warning("save", "cannot write %s: %s", self._file.path, exc)

    def _load(self, path: Path) -> _Running | None:
        try:
            data = json.loads(path.read_text())
            self.last_result = data.get("last_result")
            saved = data.get("running")
            if saved is None:
                return None
            running = _Running(
                datetime.fromisoformat(saved["started_at"]),
                datetime.fromisoformat(saved["ends_at"]),
                {s: {d: Heard(**h) for d, h in hs.items()} for s, hs in saved["shops"].items()},
                list(saved.get("real_alarms", [])),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            logger.warning("ignoring %s: %s", path, exc)
            return None
        logger.info("walk test resumed: %d shops until %s", len(running.shops), running.ends_at)
        return running
