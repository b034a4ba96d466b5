"""The running gateway: every component under one TaskGroup, every task named."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from drivers import DRIVERS
from drivers.base import RETRY_MAX_S, Driver, DriverContext, SirenDriver
from drivers.mqtt_ingest import MqttIngestDriver
from gateway import __version__, soft_state
from gateway.actions import RuleActions
from gateway.clock import ClockJudgement, GatewayClock
from gateway.config.model import GatewayConfig
from gateway.device_state import DeviceStates
from gateway.errors import ConfigError, JournalError
from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.forwarders import FORWARDERS
from gateway.forwarders.base import Forwarder, ForwarderContext, ShopCard
from gateway.forwarders.dc09 import Dc09Forwarder
from gateway.forwarders.dc09_codes import RESTORES_ATTR
from gateway.forwarders.mqtt_police import KIND as POLICE_MQTT
from gateway.inboxes import inboxes
from gateway.intake import Intake
from gateway.journal import Journal
from gateway.mqtt.notify import BlockPublisher
from gateway.outbox import OutboxCursor
from gateway.ratelimit import RateLimitedLog
from gateway.rule_engine import rule_engine
from gateway.sms.service import SmsService
from gateway.state_lock import StateDirError, lock_state_dir
from gateway.status_page import StatusPage
from gateway.supervise import supervise
from gateway.systemd import SystemdNotifier, pet_watchdog, process_age_s
from gateway.waiting_alarms import WaitingAlarms

logger = logging.getLogger(__name__)

READY_WAIT_S = 10.0
"""How long READY waits for field links (a serial adapter may be plugged in later)."""
READY_STATUS_EVERY_S = 2.0


class Gateway:
    """One street block's gateway, built from its config."""

    def __init__(self, config: GatewayConfig) -> None:
        """Open the journal and build every component; connect nothing yet."""
        self.config = config
        self.started = time.monotonic()
        self._routes = {
            kind: tuple(f.name for f in config.forwarders if f.accepts_kind(kind))
            for kind in EventKind
        }
        gid = config.gateway.id
        self.journal = Journal(
            config.journal_path,
            route=self._route,
            max_size_bytes=int(config.journal.max_size_mb * 1_000_000),
        )
        self.publisher = BlockPublisher(
            config.broker,
            gateway_id=gid,
            status=self.snapshot,
            status_interval_s=config.status_interval_s,
        )
        engine = rule_engine(config)
        self.clock = GatewayClock()
        self.clock.on_change = self._clock_changed
        self.actions = RuleActions(
            config,
            engine.rules,
            schedule=engine.schedule,
            publisher=self.publisher,
            routes=self._routes,
            arming_file=config.state_dir / "arming.json",
            wall_clock=self.clock.now,
        )
        self.intake = Intake(self.journal, engine, self.actions)
        self.actions.emit = self.intake.gateway_event
        self.actions.siren = self.sound_siren
        self.inboxes = {i.name: i for i in inboxes(config, self.intake, self.actions, self.clock)}
        # After the inboxes: the mesh must be there for the notices rebuilt alerts still owe.
        rebuilt = soft_state.rebuild(self.actions, config, engine.rules)
        if rebuilt:
            logger.info("rebuilt from the journal: %s", rebuilt)
        # After the rebuild: shops already texted before a restart are not texted again.
        self.sms = SmsService(config, self.intake, self.actions) if config.sms else None
        self.actions.sms = self.sms
        self.device_states = DeviceStates(config.journal_path)
        context = DriverContext(
            gateway_id=gid,
            block_broker=config.broker,
            devices={s.id: frozenset(d.id for d in s.devices) for s in config.shops},
            state_dir=config.state_dir,
            device_states=self.device_states,
        )
        self.drivers: dict[str, Driver] = {
            c.name: DRIVERS[c.kind](c, context=context) for c in config.drivers
        }
        cards = {
            s.id: ShopCard(
                s.id, s.name, s.lat, s.lon, s.grid.large, s.grid.medium, s.grid.small, s.account
            )
            for s in config.shops
        }
        fcontext = ForwarderContext(
            gid, config.gateway.large_grid, cards, self.snapshot, config.status_interval_s
        )
        self.cursors = {f.name: OutboxCursor(self.journal, f.name) for f in config.forwarders}
        self.forwarders: dict[str, Forwarder] = {
            f.name: FORWARDERS[f.kind](f, context=fcontext, cursor=self.cursors[f.name])
            for f in config.forwarders
        }
        for forwarder in self.forwarders.values():
            if isinstance(forwarder, Dc09Forwarder):
                forwarder.on_centre_time = functools.partial(
                    self.clock.told, by="alarm centre", exact=True
                )
        # The police link always retries quickly; another while alarms wait for it.
        self.waiting_alarms = {
            f.name: WaitingAlarms(self.journal, f.name, always=f.kind == POLICE_MQTT)
            for f in config.forwarders
        }
        self.links: dict[str, bool] = {}
        self.link_errors: dict[str, str] = {}
        self._status_changed = asyncio.Event()
        self.status_page = (
            StatusPage(config, config.status_page, self.snapshot) if config.status_page else None
        )

    async def sound_siren(self, shop_id: str, seconds: float) -> bool:
        """Sound ``shop_id``'s siren through the driver that drives it; False if none does."""
        for driver in self.drivers.values():
            if isinstance(driver, SirenDriver) and shop_id in driver.siren_shops():
                await driver.sound_siren(shop_id, seconds)
                return True
        return False

    def _route(self, event: Event) -> tuple[str, ...]:
        return self._routes[event.kind]

    def snapshot(self) -> dict[str, Any]:
        """Counters for status messages, ``status.json`` and ``lianfang status``."""
        js = self.journal.stats
        warnings = []
        cap = self.config.journal.max_size_mb
        if js.over_cap:
            warnings.append(
                f"journal is over its {cap:g} MB cap ({js.size_bytes / 1e6:.1f} MB) with only "
                "alarms and undelivered records left; alarms are never evicted"
            )
        elif js.evicted:
            warnings.append(
                f"journal reached its {cap:g} MB cap: {js.evicted} low-value records evicted "
                "since start, alarms kept"
            )
        clock = self.clock.judgement
        if clock.suspect:
            warnings.append(f"clock suspect: {'; '.join(clock.reasons)}")
        rejected = {
            f"{name}.{reason}": n
            for name, driver in [*self.drivers.items(), *self.inboxes.items()]
            for reason, n in getattr(driver, "rejected", {}).items()
        }
        return {
            "gateway_id": self.config.gateway.id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "events": js.appended,
            "duplicates": js.duplicates,
            "rejected": rejected,
            "neighbour_notices": self.publisher.notices_sent,
            "neighbour_notices_refused": self.publisher.notices_refused,
            "alerts_dropped": self.publisher.alerts_dropped,
            "acknowledged": js.acked,
            "alerts_suppressed": self.actions.alerts.suppressed,
            "level": self.intake.engine.level.value,
            "notices_capped": self.actions.notices_capped,
            "notices_cap_expired": self.actions.notices_cap_expired,
            "area_alerts": self.actions.area_alerts,
            "mesh_notices_relayed": self.actions.relayed,
            "forged_kinds_refused": self.intake.refused,
            "rule_errors": self.intake.engine.failed,
            "rules_crashed": self.intake.rules_crashed,
            "alerts_expired": self.publisher.alerts_expired,
            "journal_mb": round(js.size_bytes / 1e6, 2),
            "evicted": js.evicted,
            "links": dict(self.links),
            "link_errors": dict(self.link_errors),
            "device_faults": {
                f"{d.shop_id}/{d.device_id}": d.fault for d in self.device_states.all() if d.fault
            },
            "unknown_codes": {
                f"{name}.{code}": at
                for name, driver in self.drivers.items()
                for code, at in getattr(driver, "unknown_codes", {}).items()
            },
            "clock": clock.attrs(),
            "warnings": warnings,
            **({"sms": self.sms.status()} if self.sms else {}),
            **({"status_page": self.status_page.counters()} if self.status_page else {}),
        }

    async def _link_changed(self, name: str, *, up: bool, detail: str) -> None:
        """Journal (and so forward) a trouble event about one of the gateway's own links."""
        self._note_link(name, up=up, detail=detail)
        now = utc_now()
        await self.intake(
            Event(
                id=new_event_id(),
                gateway_id=self.config.gateway.id,
                shop_id=None,
                device_id=f"link:{name}",
                kind=EventKind.RESTORE if up else EventKind.DEVICE_FAULT,
                occurred_at=now,
                received_at=now,
                source=Source(driver="gateway", ref=name),
                attrs={"detail": detail[:256]},
            )
        )

    async def _clock_changed(self, judgement: ClockJudgement) -> None:
        """Forward ``clock_suspect`` when the clock turns suspect, its restore when it is good."""
        now = utc_now()
        attrs = judgement.attrs()
        if not judgement.suspect:
            attrs[RESTORES_ATTR] = EventKind.CLOCK_SUSPECT.value
        self._status_changed.set()
        await self.intake.gateway_event(
            Event(
                id=new_event_id(),
                gateway_id=self.config.gateway.id,
                shop_id=None,
                device_id="clock",
                kind=EventKind.CLOCK_SUSPECT if judgement.suspect else EventKind.RESTORE,
                occurred_at=self.clock.now(),
                received_at=now,
                source=Source(driver="gateway", ref="clock"),
                attrs=attrs,
            )
        )

    async def _inbox_link_changed(self, name: str, *, up: bool, detail: str) -> None:
        """Shown in the status only: the forwarder and publisher on the same brokers journal it."""
        self._note_link(name, up=up, detail=detail)

    def _note_retry(self, name: str, error: str) -> None:
        """A link's latest failure while it stays down: the reason shown stays current."""
        self._note_link(name, up=False, detail=error)

    def _note_link(self, name: str, *, up: bool, detail: str) -> None:
        """Record a link's state and why it is down, and refresh ``status.json`` now."""
        self.links[name] = up
        if up:
            self.link_errors.pop(name, None)
        else:
            self.link_errors[name] = detail[:256]
        self._status_changed.set()

    async def run(self, notifier: SystemdNotifier) -> None:
        """Run every component until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.journal.run(), name="journal")
            tg.create_task(self.actions.run(), name="rule-actions")
            tg.create_task(self.device_states.run(), name="device-states")
            tg.create_task(self.clock.run(), name="clock")
            tg.create_task(
                supervise(
                    "block-publisher",
                    self.publisher.run,
                    link=self.publisher,
                    on_change=self._link_changed,
                    on_retry=self._note_retry,
                ),
                name="block-publisher",
            )
            for name, forwarder in self.forwarders.items():
                tg.create_task(
                    supervise(
                        f"forwarder[{name}]",
                        forwarder.run,
                        link=forwarder,
                        on_change=self._link_changed,
                        on_retry=self._note_retry,
                        urgency=self.waiting_alarms[name],
                    ),
                    name=f"forwarder[{name}]",
                )
            for name, inbox in self.inboxes.items():
                tg.create_task(
                    supervise(
                        name,
                        inbox.run,
                        link=inbox,
                        on_change=self._inbox_link_changed,
                        on_retry=self._note_retry,
                    ),
                    name=name,
                )
            for name, driver in self.drivers.items():
                tg.create_task(
                    supervise(
                        f"driver[{name}]",
                        functools.partial(driver.run, self.intake),
                        link=driver,
                        on_change=self._link_changed,
                        on_retry=self._note_retry,
                        max_delay=RETRY_MAX_S,
                    ),
                    name=f"driver[{name}]",
                )
            if self.sms is not None:
                tg.create_task(
                    supervise(
                        "sms",
                        self.sms.run,
                        link=self.sms,
                        on_change=self._link_changed,
                        on_retry=self._note_retry,
                        max_delay=RETRY_MAX_S,
                    ),
                    name="sms",
                )
            if self.status_page is not None:
                # Supervised like a link, shown in the status only: no trouble event goes to
                # the police about a page that is not on the alarm path.
                tg.create_task(
                    supervise(
                        "status-page",
                        self.status_page.run,
                        link=self.status_page,
                        on_change=self._inbox_link_changed,
                        on_retry=self._note_retry,
                        max_delay=RETRY_MAX_S,
                    ),
                    name="status-page",
                )
            tg.create_task(self._announce_ready(notifier), name="ready")
            tg.create_task(pet_watchdog(notifier), name="watchdog")
            tg.create_task(self._write_status(), name="status-file")

    async def _announce_ready(self, notifier: SystemdNotifier) -> None:
        """READY=1 once the block broker's links have come up, never before.

        Until then no panic is received or reaches a neighbour, so systemd shows
        ``activating`` with STATUS= naming the link and why. Field links (a USB
        adapter plugged in later) are waited for ``READY_WAIT_S`` at most.
        """
        block: dict[str, Driver | BlockPublisher] = {
            "block-publisher": self.publisher,
            **{
                f"driver[{n}]": d
                for n, d in self.drivers.items()
                if isinstance(d, MqttIngestDriver)
            },
        }
        started = time.monotonic()
        while waiting := [n for n, link in block.items() if not link.link_up.is_set()]:
            why = "; ".join(f"{n}: {self.link_errors.get(n, 'connecting')}" for n in waiting)
            notifier.notify(f"STATUS=waiting for the block broker ({why})")
            if time.monotonic() - started > READY_WAIT_S:
                logger.warning("not ready: waiting for the block broker (%s)", why)
                started = time.monotonic()
            waits = [asyncio.create_task(block[n].link_up.wait(), name=n) for n in waiting]
            try:
                await asyncio.wait(waits, timeout=READY_STATUS_EVERY_S)
            finally:
                for wait in waits:
                    wait.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WAIT_S):
                for link in self.drivers.values():
                    await link.link_up.wait()
        down = [n for n, d in self.drivers.items() if not d.link_up.is_set()]
        state = f"waiting for {', '.join(down)}" if down else "serving"
        notifier.notify(f"READY=1\nSTATUS={state}")
        age = process_age_s()
        logger.info(
            "gateway %s ready %.2f s after process start (%s)",
            self.config.gateway.id,
            age if age is not None else time.monotonic() - self.started,
            state,
        )

    async def _write_status(self) -> None:
        """Refresh ``state_dir/status.json`` for ``lianfang status``."""
        status_file = self.config.state_dir / "status.json"
        limited = RateLimitedLog(logger, interval_s=300)
        while True:
            try:
                _write_atomically(status_file, json.dumps(self.snapshot(), indent=2))
            except OSError as exc:  # a full or read-only disk must not stop the alarms
                limited.warning("status-file", "cannot write %s: %s", status_file, exc)
            self._status_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval_s):
                    await self._status_changed.wait()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def _serve(config: GatewayConfig) -> int:
    notifier = SystemdNotifier()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        gateway = Gateway(config)
    except JournalError as exc:
        logger.error("%s", exc)  # noqa: TRY400 - the message says it all; no traceback for installers
        return 1
    try:
        await gateway.run(notifier)
    except asyncio.CancelledError:
        notifier.notify("STOPPING=1")
        logger.info("gateway %s stopped", config.gateway.id)
    finally:
        gateway.journal.close()
        for cursor in gateway.cursors.values():
            cursor.close()
        for waiting in gateway.waiting_alarms.values():
            waiting.close()
        notifier.close()
    return 0


def run_from_file(path: Path) -> int:
    """Load ``path`` and run the gateway until SIGTERM; the process exit code."""
    from gateway.config.file import load_config  # noqa: PLC0415 - not needed by tests of Gateway

    logging.basicConfig(
        level=os.environ.get("LIANFANG_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - the installer reads this
        return 2
    try:
        lock = lock_state_dir(config.state_dir)
    except StateDirError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - one line for the installer, before any link
        return 1
    try:
        return asyncio.run(_serve(config))
    finally:
        os.close(lock)
