"""The running gateway: every component under one TaskGroup, every task named."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from drivers import driver_class
from drivers.base import RETRY_MAX_S, Driver, DriverConfig, DriverContext, SirenDriver
from drivers.mqtt_ingest_config import MqttIngestConfig
from drivers.rf433_config import Rf433Config
from gateway import __version__, soft_state
from gateway.actions import RuleActions
from gateway.clock import ClockJudgement, GatewayClock
from gateway.config.model import GatewayConfig
from gateway.control import CommandError, ControlServer
from gateway.device_state import DeviceStates
from gateway.errors import ConfigError, JournalError
from gateway.events import RESTORES_ATTR, Event, EventKind, Source, new_event_id, utc_now
from gateway.forwarders import forwarder_class
from gateway.forwarders.base import Forwarder, ForwarderContext, ShopCard, TellsTime
from gateway.forwarders.mqtt_police import KIND as POLICE_MQTT
from gateway.inboxes import Keyring, inboxes
from gateway.intake import Intake
from gateway.journal import Journal
from gateway.mqtt.notify import BlockPublisher
from gateway.outbox import OutboxCursor
from gateway.ratelimit import RateLimitedLog
from gateway.rule_engine import rule_engine
from gateway.state_file import write_atomically
from gateway.state_lock import StateDirError, lock_state_dir
from gateway.supervise import supervise
from gateway.systemd import SystemdNotifier, pet_watchdog, process_age_s
from gateway.waiting_alarms import WaitingAlarms
from gateway.walk_test import WalkTest

if TYPE_CHECKING:
    from drivers.mqtt_ingest import MqttIngestDriver
    from drivers.rf433 import Rf433Driver

logger = logging.getLogger(__name__)

READY_WAIT_S = 10.0
"""How long READY waits for field links (a serial adapter may be plugged in later)."""
READY_STATUS_EVERY_S = 2.0
STORAGE_CHECK_S = 1.0
"""How often a storage shortage is reported and the disk looked at for room again."""
DEFAULT_WALK_TEST_MINUTES = 30.0


class Gateway:
    """One street block's gateway, built from its config."""

    def __init__(self, config: GatewayConfig, *, config_path: Path | None = None) -> None:
        """Open the journal and build every component; connect nothing yet.

        ``config_path`` is the file ``reload`` reads again (none: reload refused).
        """
        self.config = config
        self.config_path = config_path
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
            reserve_bytes=int(config.journal.reserve_mb * 1_000_000),
        )
        self.publisher = BlockPublisher(
            config.broker,
            gateway_id=gid,
            status=self.snapshot,
            status_interval_s=config.status_interval_s,
            confirmed_file=config.state_dir / "notices-confirmed.json",
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
        self.keyring = Keyring()
        self.inboxes = {
            i.name: i for i in inboxes(config, self.intake, self.actions, self.clock, self.keyring)
        }
        # After the inboxes: the mesh must be there for the notices rebuilt alerts still owe.
        rebuilt = soft_state.rebuild(self.actions, config, engine.rules)
        if rebuilt:
            logger.info("rebuilt from the journal: %s", rebuilt)
        # After the rebuild: shops already texted before a restart are not texted again.
        if config.sms:
            from gateway.sms.service import SmsService  # noqa: PLC0415 - only with a modem
        self.sms = SmsService(config, self.intake, self.actions) if config.sms else None
        self.actions.notices.sms = self.sms
        self.device_states = DeviceStates(config.journal_path)
        self.walk_test = WalkTest(config, emit=self._tell_police, device_states=self.device_states)
        self.intake.mark = self.walk_test.mark
        self.control = ControlServer(
            config.state_dir,
            {
                "walktest.start": self._walk_test_start,
                "walktest.stop": self._walk_test_stop,
                "walktest.status": self._walk_test_status,
                "reload": self._reload_command,
            },
        )
        self.reload_requested = asyncio.Event()
        self._reloading = asyncio.Lock()
        # Kept by reference: a reload changes them in place for the drivers and forwarders.
        self._devices = _shop_devices(config)
        self._cards = _shop_cards(config)
        context = DriverContext(
            gateway_id=gid,
            block_broker=config.broker,
            devices=self._devices,
            state_dir=config.state_dir,
            device_states=self.device_states,
            storage=self.journal.reserve,
        )
        self.drivers: dict[str, Driver] = {
            c.name: driver_class(c.kind)(c, context=context) for c in config.drivers
        }
        fcontext = ForwarderContext(
            gid, config.gateway.large_grid, self._cards, self.snapshot, config.status_interval_s
        )
        self.cursors = {f.name: OutboxCursor(self.journal, f.name) for f in config.forwarders}
        self.forwarders: dict[str, Forwarder] = {
            f.name: forwarder_class(f.kind)(f, context=fcontext, cursor=self.cursors[f.name])
            for f in config.forwarders
        }
        for forwarder in self.forwarders.values():
            if isinstance(forwarder, TellsTime):
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
        if config.status_page:
            from gateway.status_page import StatusPage  # noqa: PLC0415 - only when it is served
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

    def _running(self, settings: type[DriverConfig]) -> dict[str, Driver]:
        """The drivers of one kind, told by their settings: their modules may not be imported."""
        return {
            c.name: self.drivers[c.name] for c in self.config.drivers if isinstance(c, settings)
        }

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
        if (damage := self.journal.damage) is not None:
            lost = "an unknown number" if damage.lost is None else f"at most {damage.lost}"
            warnings.append(
                f"journal was damaged ({damage.problem[:120]}): moved to {damage.moved_to.name}; "
                f"{damage.salvaged} events salvaged, {lost} lost"
            )
        reserve = self.journal.reserve
        if reserve.short:
            warnings.append(
                f"storage full ({reserve.reason}): alarms journalled from the reserve, "
                f"{reserve.refused} other events left waiting with their senders"
            )
        for driver in self.drivers.values():
            warnings += getattr(driver, "warnings", ())
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
            "notices_capped": self.actions.notices.capped,
            "notices_cap_expired": self.actions.notices.cap_expired,
            "area_alerts": self.actions.area_alerts,
            "mesh_notices_relayed": self.actions.relayed,
            "forged_kinds_refused": self.intake.refused,
            "rule_errors": self.intake.engine.failed,
            "rules_crashed": self.intake.rules_crashed,
            "alerts_expired": self.publisher.alerts_expired,
            "journal_mb": round(js.size_bytes / 1e6, 2),
            "evicted": js.evicted,
            "storage": {
                "short": reserve.short,
                "reason": reserve.reason,
                "refused": reserve.refused,
            },
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
            "walk_test": self.walk_test.summary(),
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

    async def _tell_police(self, event: Event) -> None:
        """Journal a walk test's start or end for every forwarder that takes its kind."""
        self._status_changed.set()  # the shops under test, in status.json at once
        await self.intake.gateway_event(event, routes=self._routes[event.kind])

    async def _walk_test_start(self, args: dict[str, Any]) -> dict[str, Any]:
        shops = args.get("shops")
        if shops is not None and not (
            isinstance(shops, list) and all(isinstance(s, str) for s in shops)
        ):
            raise CommandError("shops must be a list of shop ids, or null for all")
        minutes = args.get("minutes", DEFAULT_WALK_TEST_MINUTES)
        if not isinstance(minutes, int | float) or isinstance(minutes, bool):
            raise CommandError("minutes must be a number")
        return await self.walk_test.start(shops, float(minutes))

    async def _walk_test_stop(self, _args: dict[str, Any]) -> dict[str, Any]:
        return await self.walk_test.stop("stopped by the installer")

    async def _walk_test_status(self, _args: dict[str, Any]) -> dict[str, Any]:
        return self.walk_test.status()

    async def _reload_command(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"restart_needed": await self.reload()}

    async def _reload_on_request(self) -> None:
        """Reload on SIGHUP; a refused config is logged by ``reload`` and the old one kept."""
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            try:
                await self.reload()
            except CommandError:
                pass  # refused: ``reload`` logged why, the running config stays
            except Exception:  # a reload bug must not stop the gateway
                logger.exception("reload failed")

    async def reload(self) -> list[str]:
        """Read the config file again and apply shops, devices, rules and learned 433 codes.

        Links stay up and events in flight are not touched. What only a restart
        applies is logged and returned. Raises ``CommandError`` (the reason is
        logged too) when the file does not pass ``lianfang check``: the running
        config stays.
        """
        if self.config_path is None:
            raise CommandError("this gateway was not started from a config file")
        async with self._reloading:  # SIGHUP and the socket at once: one after the other
            pending = await self._reload(self.config_path)
            _return_freed_heap()  # the old config and tables: garbage from here on
        return pending

    async def _reload(self, path: Path) -> list[str]:
        try:
            new = await asyncio.to_thread(_checked_config, path)
        except ConfigError as exc:
            logger.error("reload refused, the running config is kept:\n%s", exc)  # noqa: TRY400
            raise CommandError(f"reload refused, the running config is kept:\n{exc}") from None
        pending = _restart_needed(self.config, new)
        # What only a restart applies stays as it runs (the state dir, the forwarders...).
        new = new.model_copy(
            update={
                name: getattr(self.config, name)
                for name in pending
                if name in GatewayConfig.model_fields and name != "drivers"
            }
        )
        old = self.intake.engine
        engine = rule_engine(new, level=old.level)
        engine.schedule.restore(old.schedule.saved())
        self.actions.reconfigure(new, engine.rules, schedule=engine.schedule)
        self.intake.engine = engine
        self.walk_test.configure(new)
        self.keyring.rekey(new)
        self._cards.clear()
        self._cards.update(_shop_cards(new))
        self._devices.clear()
        self._devices.update(_shop_devices(new))
        learned = {c.name: c for c in new.drivers if isinstance(c, Rf433Config)}
        for driver in self._running(MqttIngestConfig).values():
            cast("MqttIngestDriver", driver).shops_changed()
        for name, driver in self._running(Rf433Config).items():
            if name in learned:
                cast("Rf433Driver", driver).relearn(learned[name])
        self.config = new
        logger.info(
            "config reloaded: %d shops, %d rules, %d learned 433 MHz buttons",
            len(new.shops),
            len(engine.rules),
            sum(len(c.buttons) for c in learned.values()),
        )
        if pending:
            logger.warning("reload: %s changed; applied at the next restart", ", ".join(pending))
        return pending

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
            tg.create_task(self.walk_test.run(), name="walk-test")
            tg.create_task(supervise("control", self.control.run), name="control")
            tg.create_task(self._reload_on_request(), name="reload")
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
            tg.create_task(self._report_journal_troubles(), name="journal-troubles")

    async def _announce_ready(self, notifier: SystemdNotifier) -> None:
        """READY=1 once the block broker's links have come up, never before.

        Until then no panic is received or reaches a neighbour, so systemd shows
        ``activating`` with STATUS= naming the link and why. Field links (a USB
        adapter plugged in later) are waited for ``READY_WAIT_S`` at most.
        """
        block: dict[str, Driver | BlockPublisher] = {
            "block-publisher": self.publisher,
            **{f"driver[{n}]": d for n, d in self._running(MqttIngestConfig).items()},
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
        _return_freed_heap()

    async def _write_status(self) -> None:
        """Refresh ``state_dir/status.json`` for ``lianfang status``."""
        status_file = self.config.state_dir / "status.json"
        limited = RateLimitedLog(logger, interval_s=300)
        while True:
            try:
                write_atomically(status_file, json.dumps(self.snapshot(), indent=2), durable=False)
            except OSError as exc:  # a full or read-only disk must not stop the alarms
                limited.warning("status-file", "cannot write %s: %s", status_file, exc)
            self._status_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval_s):
                    await self._status_changed.wait()

    async def _report_journal_troubles(self) -> None:
        """Forward the journal's troubles: damage found on open, a full disk, room again.

        ``journal_damaged`` once if the journal was salvaged on open; ``storage_full``
        when the disk is short, and its restore once the reserve is back.
        """
        if (damage := self.journal.damage) is not None:
            await self._journal_event(
                EventKind.JOURNAL_DAMAGED,
                {
                    "detail": damage.problem[:256],
                    "moved_to": damage.moved_to.name,
                    "salvaged": damage.salvaged,
                    "lost": damage.lost,
                },
            )
        reported = False
        while True:
            reserve = self.journal.reserve
            if reserve.short and not reported:
                reported = True
                await self._journal_event(EventKind.STORAGE_FULL, {"detail": reserve.reason})
            elif reserve.short and await asyncio.to_thread(reserve.try_resume):
                reported = False
                await self._journal_event(EventKind.RESTORE, {"restores": EventKind.STORAGE_FULL})
            await asyncio.sleep(STORAGE_CHECK_S)

    async def _journal_event(self, kind: EventKind, attrs: dict[str, Any]) -> None:
        self._status_changed.set()
        now = utc_now()
        await self.intake.gateway_event(
            Event(
                id=new_event_id(),
                gateway_id=self.config.gateway.id,
                shop_id=None,
                device_id="journal" if kind is EventKind.JOURNAL_DAMAGED else "storage",
                kind=kind,
                occurred_at=now,
                received_at=now,
                source=Source(driver="gateway", ref=str(self.config.state_dir)),
                attrs=attrs,
            )
        )


def _return_freed_heap() -> None:
    """Hand the heap's free pages back to the system once start-up's garbage is gone.

    Start-up (the config handed over by the child, the neighbour tables, the links'
    first exchanges) leaves free memory inside the heap that glibc keeps for good;
    ``malloc_trim`` returns it. Nothing to do where the C library has no such call.

    What is left lives as long as the gateway (modules, config, tables): frozen, so
    that the collector's full passes under load no longer walk it (about 8 ms a pass
    at 87 shops, more for a city, a stall for every event in flight; decision 104).
    After a reload the old config is unfrozen first, for this pass to free it.
    """
    gc.unfreeze()
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    gc.freeze()


def _shop_devices(config: GatewayConfig) -> dict[str, frozenset[str]]:
    return {s.id: frozenset(d.id for d in s.devices) for s in config.shops}


def _shop_cards(config: GatewayConfig) -> dict[str, ShopCard]:
    return {
        s.id: ShopCard(
            s.id, s.name, s.lat, s.lon, s.grid.large, s.grid.medium, s.grid.small, s.account
        )
        for s in config.shops
    }


RELOADED = frozenset({"shops", "other_shops", "rules", "drivers", "commands", "other_gateways"})
"""The config sections a reload applies: of the drivers only learned 433 MHz buttons, of
the signed commands only their keys."""


def _restart_needed(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The sections changed from ``old`` to ``new`` that only a restart applies."""
    changed = [
        name
        for name in GatewayConfig.model_fields
        if name not in RELOADED and getattr(old, name) != getattr(new, name)
    ]
    if [_unlearned(d) for d in old.drivers] != [_unlearned(d) for d in new.drivers]:
        changed.append("drivers")
    if old.commands.max_age_s != new.commands.max_age_s:
        changed.append("commands.max_age_s")
    return changed


def _unlearned(driver: DriverConfig) -> DriverConfig:
    """``driver`` without its learned buttons: what a reload cannot change."""
    if isinstance(driver, Rf433Config):
        return driver.model_copy(update={"buttons": []})
    return driver


def _checked_config(path: Path) -> GatewayConfig:
    """The config at ``path`` if ``lianfang check`` (offline) passes it; raises ConfigError."""
    from gateway.config.file import file_locator, load_config  # noqa: PLC0415
    from gateway.config.preflight import preflight  # noqa: PLC0415

    config = load_config(path)
    errors = [f.problem for f in preflight(config, file_locator(path)) if not f.warning]
    if errors:
        raise ConfigError(errors)
    return config


async def _serve(config: GatewayConfig, config_path: Path | None = None) -> int:
    notifier = SystemdNotifier()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        gateway = Gateway(config, config_path=config_path)
    except JournalError as exc:
        logger.error("%s", exc)  # noqa: TRY400 - the message says it all; no traceback for installers
        return 1
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_requested.set)
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
    from gateway.config.apart import load_config_apart  # noqa: PLC0415 - not for tests of Gateway

    logging.basicConfig(
        level=os.environ.get("LIANFANG_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config_apart(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - the installer reads this
        return 2
    try:
        lock = lock_state_dir(config.state_dir)
    except StateDirError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - one line for the installer, before any link
        return 1
    try:
        return asyncio.run(_serve(config, path))
    finally:
        os.close(lock)
