"""Modbus IO modules (RTU on a serial bus, or TCP): door contacts in, sirens and strobes out.

One driver is one bus. Its modules are polled one request at a time (one
lock, and a quiet gap between frames on RS-485), each at its own poll period.
A contact's change becomes ``door_open``/``door_close`` (or configured kinds)
once it has held for the debounce time; ``failed_polls`` failures in a row
make a module's ``device_fault``, its next answer a ``restore``.

A siren is switched on for a given time and always off again: the deadline is
written to ``state_dir`` before the coil is set, and the poll loop switches off
every coil past its deadline, retrying until the module confirms, also after a
restart of the gateway in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from drivers.base import DriverContext, Emit
from drivers.modbus_config import ModbusConfig, ModbusInputConfig, ModbusModuleConfig
from drivers.supervision import Supervision
from gateway.errors import DriverUnavailable
from gateway.events import Event, EventKind
from gateway.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    ModbusClient = AsyncModbusSerialClient | AsyncModbusTcpClient

logger = logging.getLogger(__name__)

KIND = "modbus"
MAX_CONNECT_BACKOFF_S = 5.0
# Exception codes by which a unit shows it is there but lacks what was asked.
PRESENT_CODES = frozenset({1, 2, 3})
DEVICE_FAULT = EventKind.DEVICE_FAULT.value

T = TypeVar("T")


def modbus_client(
    *, port: str | None, host: str | None, baudrate: int, timeout_s: float
) -> ModbusClient:
    """A pymodbus client for an RTU port or a TCP ``HOST:PORT``, retrying nothing by itself."""
    # Imported here: pymodbus costs ~2 MB, paid only by gateways with Modbus modules.
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient  # noqa: PLC0415

    if host is not None:
        name, _, number = host.rpartition(":")
        return AsyncModbusTcpClient(
            name, port=int(number), timeout=timeout_s, retries=0, reconnect_delay=0
        )
    assert port is not None
    return AsyncModbusSerialClient(
        port, baudrate=baudrate, timeout=timeout_s, retries=0, reconnect_delay=0
    )


async def scan_units(client: ModbusClient, units: Iterable[int]) -> list[int]:
    """Unit ids that answer a read of discrete input 0.

    An exception reply counts when it says the unit lacks that input: only a unit
    that is there answers so.
    """
    from pymodbus.exceptions import ModbusException  # noqa: PLC0415 - loaded with the client

    found = []
    for unit in units:
        try:
            reply = await _honouring_cancel(client.read_discrete_inputs(0, count=1, device_id=unit))
        except (ModbusException, OSError, TimeoutError):
            continue
        if not reply.isError() or getattr(reply, "exception_code", None) in PRESENT_CODES:
            found.append(unit)
    return found


def parse_units(text: str) -> list[int]:
    """``1-16`` or ``1,3,5`` as unit ids."""
    units: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        units += range(int(first), int(last or first) + 1)
    return units


@dataclass(eq=False)
class _Contact:
    config: ModbusInputConfig
    stable: bool | None = None
    """Open (True) or shut, once known."""
    candidate: bool | None = None
    since: float = 0.0


@dataclass
class _Module:
    config: ModbusModuleConfig
    contacts: list[_Contact]
    due: float = 0.0
    failures: int = 0
    faulted: bool = False


class ModbusDriver:
    """Polls one bus's modules; drives their sirens."""

    kind: ClassVar[str] = KIND

    def __init__(self, config: ModbusConfig, *, context: DriverContext) -> None:
        """Serve the modules in ``config``."""
        self.config = config
        self._context = context
        self.link_up = asyncio.Event()
        self.polls = 0
        self.requests = 0
        """Requests sent on the bus (polls, coil writes), answered or not."""
        self._log = RateLimitedLog(logger)
        self._modules = [_Module(m, [_Contact(i) for i in m.inputs]) for m in config.modules]
        self._lock = asyncio.Lock()
        self._client: ModbusClient | None = None
        self._last_request = 0.0
        self._connect_at = 0.0
        self._connect_backoff = 0.0
        self._wake = asyncio.Event()
        self._deadlines_file = (context.state_dir or Path()) / f"sirens-{config.name}.json"
        loaded = _load_deadlines(self._deadlines_file)
        # Unreadable: switching every coil of this bus off once beats leaving one on.
        self._deadlines = loaded if loaded is not None else dict.fromkeys(self._coils(), 0.0)
        units = {m.unit for m in config.modules}
        gone = [key for key in self._deadlines if _unit_coil(key)[0] not in units]
        if gone:  # its module was taken out of the config: nobody polls it any more
            logger.warning(
                "%s: siren deadlines of units not configured dropped: %s", config.name, gone
            )
            for key in gone:
                del self._deadlines[key]
        self.supervision = Supervision(config.name, context, [(m, None) for m in config.modules])
        for module in self._modules:
            # Faulted before a restart: its first answer is the restore the police wait for.
            module.faulted = self.supervision.fault_of(module.config) == DEVICE_FAULT

    def _coils(self, shop_id: str | None = None) -> list[str]:
        """``unit/coil`` of every siren and strobe (of ``shop_id``'s modules, if given)."""
        return [
            f"{m.unit}/{coil}"
            for m in self.config.modules
            if shop_id in (None, m.shop_id)
            for coil in (m.siren_coil, m.strobe_coil)
            if coil is not None
        ]

    # --- SirenDriver ---------------------------------------------------------------

    def siren_shops(self) -> frozenset[str]:
        """Shops with a siren on this bus."""
        return frozenset(m.shop_id for m in self.config.modules if m.siren_coil is not None)

    async def sound_siren(self, shop_id: str, seconds: float) -> None:
        """Switch on ``shop_id``'s sirens and strobes; the poll loop switches them off.

        ``seconds`` is capped at ``siren_max_s``.
        """
        deadline = time.time() + min(seconds, self.config.siren_max_s)
        coils = self._coils(shop_id)
        for key in coils:
            self._deadlines[key] = max(deadline, self._deadlines.get(key, 0))
        _save_deadlines(self._deadlines_file, self._deadlines)  # before any coil is set
        self._wake.set()
        # Every coil is tried: a strobe that did not answer must not keep the siren silent.
        failed = [key for key in coils if not await self._write_coil(*_unit_coil(key), on=True)]
        if failed:
            raise DriverUnavailable(f"{self.config.where}: coils {', '.join(failed)} not set")

    # --- polling ---------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled; module failures become device_fault events, not exceptions."""
        self._client = modbus_client(
            port=self.config.port,
            host=self.config.host,
            baudrate=self.config.baudrate,
            timeout_s=self.config.timeout_s,
        )
        self.link_up.set()
        try:
            while True:
                # A faulted module's overdue switch-off waits for its own (slow) poll:
                # retried before every poll, its timeouts would stall the whole bus.
                await self._switch_off_due({m.config.unit for m in self._modules if not m.faulted})
                module = min(self._modules, key=lambda m: m.due)
                wait = module.due - time.monotonic()
                # Overdue switch-offs that failed are retried with every poll, not in a spin.
                now_wall = time.time()
                next_off = min((d for d in self._deadlines.values() if d > now_wall), default=None)
                if next_off is not None:
                    wait = min(wait, next_off - now_wall)
                if wait > 0:
                    self._wake.clear()
                    # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation
                    # that lands in the loop turn that wakes it (see _honouring_cancel).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    continue
                if module.faulted:
                    await self._switch_off_due({module.config.unit})
                await self._poll(module, emit)
                now = time.monotonic()
                # A faulted module is polled less often, so its timeouts do not slow the bus.
                period = module.config.poll_interval_s
                if module.faulted:
                    period = max(period, self.config.fault_poll_s)
                module.due = max(module.due + period, now)
        finally:
            self._client.close()
            self._client = None

    async def _request(self, call: Callable[[ModbusClient], Awaitable[Any]]) -> Any:  # noqa: ANN401 - pymodbus replies
        """One request on the bus, never overlapping another; None if it failed."""
        from pymodbus.exceptions import ModbusException  # noqa: PLC0415 - loaded with the client

        async with self._lock:
            client = self._client
            if client is None:
                return None
            gap = self.config.frame_gap_s if self.config.port else 0
            pause = self._last_request + gap - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                if not client.connected and not await self._connect(client):
                    return None
                self.requests += 1
                return await _honouring_cancel(call(client))
            except (ModbusException, OSError, TimeoutError) as exc:
                self._log.warning("request", "%s: %s", self.config.where, exc)
                return None
            finally:
                self._last_request = time.monotonic()

    async def _connect(self, client: ModbusClient) -> bool:
        """Connect, at most once per backoff step while the bus stays unreachable."""
        now = time.monotonic()
        if now < self._connect_at:
            return False
        if await _honouring_cancel(client.connect()):
            self._connect_backoff = 0.0
            return True
        # Without this, 16 modules at 200 ms would try to reconnect 80 times a second.
        self._connect_backoff = min(MAX_CONNECT_BACKOFF_S, max(0.2, self._connect_backoff * 2))
        self._connect_at = now + self._connect_backoff
        return False

    async def _read_bits(self, module: _Module) -> dict[_Contact, bool] | None:
        """Every contact's raw bit, one request per register kind; None if any failed."""
        unit = module.config.unit
        bits: dict[_Contact, bool] = {}
        by_kind: dict[str, list[_Contact]] = {}
        for contact in module.contacts:
            by_kind.setdefault(contact.config.table, []).append(contact)
        for register, contacts in by_kind.items():
            first = min(c.config.address for c in contacts)
            count = max(c.config.address for c in contacts) - first + 1
            reply = await self._request(
                functools.partial(_read, register=register, address=first, count=count, unit=unit)
            )
            if reply is None or reply.isError():
                return None
            for contact in contacts:
                offset = contact.config.address - first
                if register == "discrete_input":
                    bits[contact] = bool(reply.bits[offset])
                else:
                    bits[contact] = bool(reply.registers[offset] >> contact.config.bit & 1)
        return bits

    async def _poll(self, module: _Module, emit: Emit) -> None:
        self.polls += 1
        if module.contacts:
            bits = await self._read_bits(module)
        else:  # a siren-only module: any answer shows it is alive
            reply = await self._request(
                lambda c: c.read_coils(0, count=1, device_id=module.config.unit)
            )
            bits = {} if reply is not None and not reply.isError() else None
        binding = module.config
        if bits is None:
            module.failures += 1
            if module.failures >= self.config.failed_polls and not module.faulted:
                module.faulted = True
                self.supervision.set_fault(binding, DEVICE_FAULT)
                await emit(
                    self._event(
                        binding, EventKind.DEVICE_FAULT, attrs={"failed_polls": module.failures}
                    )
                )
            return
        module.failures = 0
        self.supervision.heard(binding)
        if module.faulted:
            module.faulted = False
            self.supervision.set_fault(binding, None)
            await emit(self._event(binding, EventKind.RESTORE, attrs={"of": DEVICE_FAULT}))
        now = time.monotonic()
        for contact, bit in bits.items():
            kind = _debounced(contact, now, is_open=contact.config.is_open(bit))
            if kind is not None:
                await emit(
                    self._event(
                        binding,
                        kind,
                        zone=contact.config.zone,
                        attrs={"address": contact.config.address},
                    )
                )

    def _event(
        self,
        module: ModbusModuleConfig,
        kind: EventKind,
        *,
        zone: str | None = None,
        attrs: dict[str, object],
    ) -> Event:
        return self._context.event(
            self.config.name,
            module,
            kind,
            ref=f"{self.config.where}#{module.unit}",
            zone=zone,
            attrs={"unit": module.unit, **attrs},
        )

    async def _write_coil(self, unit: int, coil: int, *, on: bool) -> bool:
        reply = await self._request(lambda c: c.write_coil(coil, on, device_id=unit))
        return reply is not None and not reply.isError()

    async def _switch_off_due(self, units: set[int]) -> None:
        """Switch off the coils of ``units`` whose deadline has passed."""
        now = time.time()
        due = [
            key
            for key, deadline in self._deadlines.items()
            if deadline <= now and _unit_coil(key)[0] in units
        ]
        if not due:
            return
        done = [key for key in due if await self._write_coil(*_unit_coil(key), on=False)]
        # A siren request that came in while the coil was being switched off has moved
        # its deadline on (and its coil is set again after this): keep that deadline.
        switched_off = [k for k in done if self._deadlines.get(k, now) <= now]
        for key in switched_off:
            del self._deadlines[key]
        if switched_off:
            _save_deadlines(self._deadlines_file, self._deadlines)


async def _honouring_cancel(awaitable: Awaitable[T]) -> T:
    """Await a pymodbus call; raise CancelledError if this task was cancelled meanwhile.

    pymodbus awaits every reply (and a connect) with ``asyncio.wait_for``, which on
    Python 3.11 returns the result and drops the cancellation when the reply arrives
    in the same loop turn as the cancel (CPython gh-86296, fixed in 3.12). The
    driver then polled on for ever and the gateway's shutdown, which cancels it,
    never finished.
    """
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    result = await awaitable
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError
    return result


def _debounced(contact: _Contact, now: float, *, is_open: bool) -> EventKind | None:
    """Feed one reading; the kind of a change that has now held for the debounce time."""
    if contact.stable is None:
        contact.stable = is_open  # the first reading is the state, not a change
        return None
    if is_open == contact.stable:
        contact.candidate = None
        return None
    if contact.candidate is not is_open:
        contact.candidate, contact.since = is_open, now
    if now - contact.since < contact.config.debounce_s:
        return None
    contact.stable, contact.candidate = is_open, None
    return contact.config.open_kind if is_open else contact.config.close_kind


async def _read(client: ModbusClient, *, register: str, address: int, count: int, unit: int) -> Any:  # noqa: ANN401 - pymodbus replies
    if register == "discrete_input":
        return await client.read_discrete_inputs(address, count=count, device_id=unit)
    if register == "input_register":
        return await client.read_input_registers(address, count=count, device_id=unit)
    return await client.read_holding_registers(address, count=count, device_id=unit)


def _unit_coil(key: str) -> tuple[int, int]:
    unit, coil = key.split("/")
    return int(unit), int(coil)


def _load_deadlines(path: Path) -> dict[str, float] | None:
    """Siren deadlines kept before a restart; None if the file is unreadable."""
    try:
        loaded = json.loads(path.read_text())
        deadlines = {str(k): float(v) for k, v in loaded.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        logger.warning("siren deadlines %s unreadable (%s); switching every coil off", path, exc)
        return None
    if not all(re.fullmatch(r"\d+/\d+", key) for key in deadlines):
        logger.warning("siren deadlines %s garbled; switching every coil off", path)
        return None
    return deadlines


def _save_deadlines(path: Path, deadlines: dict[str, float]) -> None:
    """Write ``deadlines`` so that a power cut leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(json.dumps(deadlines))
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    # The rename itself must reach the disk before a coil is set.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
