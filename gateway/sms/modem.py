"""A GSM/4G modem's AT port: one command in flight, a timeout on each, unsolicited lines handed on.

``AtPort`` reads the port in one task (``read``) and runs commands from another
(``command``): a command writes its line, collects the response lines and
returns them on ``OK``; ``ERROR``, ``+CMS ERROR`` and ``+CME ERROR`` raise
``ModemError``; no final answer within the timeout raises ``DriverUnavailable``,
so the supervisor reopens and re-initialises the modem (a hung or re-enumerated
USB modem needs exactly that). ``+CMTI``, ``+CDSI``, ``+CMT`` and ``+CDS`` (the
last two with their PDU line) go to ``on_unsolicited`` whenever they arrive.

``start`` initialises a modem for PDU-mode SMS; ``poll`` reads SIM, network
registration and signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config.model import SmsConfig

from drivers.serial_port import open_serial, read_some
from gateway.errors import DriverError, DriverUnavailable
from gateway.mqtt.client import first_leaf
from protocols.sms_pdu import submit_pdus

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 60.0  # AT+CMGS waits for the network: seconds, sometimes tens of them
PROMPT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
CTRL_Z = "\x1a"
MAX_LINE = 2048

UNSOLICITED = ("+CMTI:", "+CDSI:")
UNSOLICITED_WITH_PDU = ("+CMT:", "+CDS:")
FINAL_ERRORS = ("ERROR", "+CMS ERROR:", "+CME ERROR:")

REGISTRATION = {
    "0": "not registered",
    "1": "home",
    "2": "searching",
    "3": "denied",
    "4": "unknown",
    "5": "roaming",
}
_STATUS_LINE = re.compile(r"^\+C(?:E)?REG:\s*\d+,(\d)")


class ModemError(DriverError):
    """The modem answered a command with an error; ``final`` is its line (``+CMS ERROR: 500``)."""

    def __init__(self, command: str, final: str) -> None:
        """Say which command got which answer."""
        super().__init__(f"modem refused {command!r}: {final}")
        self.command = command
        self.final = final


@dataclass(frozen=True, slots=True)
class Unsolicited:
    """A line the modem sent on its own, with the PDU that followed it for ``+CMT``/``+CDS``."""

    line: str
    pdu: str | None = None


@dataclass(frozen=True, slots=True)
class ModemState:
    """What ``lianfang status`` shows of the modem."""

    sim: str
    registration: str
    signal_dbm: int | None

    @property
    def registered(self) -> bool:
        """Whether the modem can send: registered at home or roaming."""
        return self.registration in ("home", "roaming")


class AtPort:
    """The AT command port of one modem."""

    def __init__(
        self, url: str, baudrate: int, on_unsolicited: Callable[[Unsolicited], None]
    ) -> None:
        """Serve the modem at ``url``; hand what it says unasked to ``on_unsolicited``."""
        self.url = url
        self._baudrate = baudrate
        self._on_unsolicited = on_unsolicited
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._lock = asyncio.Lock()
        self._lines: asyncio.Queue[str] | None = None  # the command in flight's lines
        self._prompt = asyncio.Event()
        self._pdu_of: str | None = None  # the +CMT/+CDS line whose PDU comes next

    async def open(self) -> None:
        """Open the serial port; raise ``DriverUnavailable`` if it cannot be."""
        self._reader, self._writer = await open_serial(self.url, self._baudrate)

    async def close(self) -> None:
        """Close the port and wait (briefly) until it is: a reopen finds it unlocked."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await writer.wait_closed()

    async def read(self) -> None:
        """Read the port until it fails (raises ``DriverUnavailable``), sorting every line."""
        assert self._reader is not None
        buffer = b""
        while True:
            buffer += await read_some(self._reader, self.url)
            if self._lines is not None and buffer.lstrip(b"\r\n").startswith(b">"):
                self._prompt.set()
                buffer = buffer.lstrip(b"\r\n")[1:].lstrip(b" ")
            *lines, buffer = re.split(rb"\r\n|\r|\n", buffer)
            if len(buffer) > MAX_LINE:  # noise with no line end: drop it, keep reading
                buffer = b""
            for raw in lines:
                line = raw.decode("ascii", errors="replace").strip()
                if line:
                    self._sort(line)

    def _sort(self, line: str) -> None:
        if self._pdu_of is not None:
            self._on_unsolicited(Unsolicited(self._pdu_of, line))
            self._pdu_of = None
        elif line.startswith(UNSOLICITED_WITH_PDU):
            self._pdu_of = line
        elif line.startswith(UNSOLICITED):
            self._on_unsolicited(Unsolicited(line))
        elif self._lines is not None:
            self._lines.put_nowait(line)
            self._prompt.set()  # an answer where a prompt was awaited ends that wait too
        else:
            logger.debug("modem %s said %r unasked", self.url, line)

    async def command(
        self, line: str, *, timeout_s: float = COMMAND_TIMEOUT_S, data: str | None = None
    ) -> list[str]:
        """Run one command; its response lines (without the final ``OK``).

        With ``data`` (a PDU), waits for the ``>`` prompt and sends it, ended by Ctrl-Z.
        """
        async with self._lock:
            if self._writer is None:
                raise DriverUnavailable(f"modem {self.url} is not open")
            lines: asyncio.Queue[str] = asyncio.Queue()
            self._lines = lines
            self._prompt.clear()
            try:
                self._writer.write(f"{line}\r".encode())
                if data is not None:
                    async with asyncio.timeout(PROMPT_TIMEOUT_S):
                        await self._prompt.wait()
                    if lines.empty():  # else it answered (an error) instead of prompting
                        self._writer.write(f"{data}{CTRL_Z}".encode())
                async with asyncio.timeout(timeout_s):
                    return await self._answer(line, lines)
            except TimeoutError:
                raise DriverUnavailable(
                    f"modem {self.url} did not answer {line!r} in time"
                ) from None
            finally:
                self._lines = None

    @staticmethod
    async def _answer(line: str, lines: asyncio.Queue[str]) -> list[str]:
        got: list[str] = []
        while True:
            answer = await lines.get()
            if answer == "OK":
                return got
            if answer.startswith(FINAL_ERRORS):
                raise ModemError(line, answer)
            if answer != line:  # the echo, before ATE0 has taken effect
                got.append(answer)


def pin_from(path: Path) -> str:
    """The SIM PIN kept in ``path``; refused unless only its owner may read it."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DriverUnavailable(
                f"sms.pin_file {path} may be read by others (mode {stat.S_IMODE(mode):o}); "
                "chmod 600 it"
            )
        pin = path.read_text().strip()
    except OSError as exc:
        raise DriverUnavailable(f"sms.pin_file {path}: {exc.strerror}") from None
    if not pin.isdigit() or not 4 <= len(pin) <= 8:
        raise DriverUnavailable(f"sms.pin_file {path} does not hold a PIN of 4-8 digits")
    return pin


async def start(port: AtPort, pin_file: Path | None) -> None:
    """Initialise the modem for PDU-mode SMS: echo off, SIM unlocked, indications on."""
    for attempt in range(3):  # a modem just plugged in may answer its first AT with noise
        try:
            await port.command("AT", timeout_s=2)
            break
        except (ModemError, DriverUnavailable):
            if attempt == 2:
                raise
    await port.command("ATE0")
    await port.command("AT+CMEE=1")
    sim = await sim_state(port)
    if sim == "SIM PIN":
        if pin_file is None:
            raise DriverUnavailable("the SIM asks for its PIN and sms.pin_file is not set")
        await port.command(f"AT+CPIN={pin_from(pin_file)}")
        sim = await sim_state(port)
    if sim != "READY":
        raise DriverUnavailable(f"SIM not ready: {sim}")
    await port.command("AT+CMGF=0")
    # New messages stored with +CMTI; status reports sent at once as +CDS.
    await port.command("AT+CNMI=2,1,0,1,0")


async def sim_state(port: AtPort) -> str:
    """``READY``, ``SIM PIN``, ``SIM PUK``... or ``absent`` when the modem reports no SIM."""
    try:
        lines = await port.command("AT+CPIN?")
    except ModemError as refused:
        if refused.final.endswith((": 10", ": 13")):  # SIM not inserted, SIM failure
            return "absent"
        raise
    for line in lines:
        if line.startswith("+CPIN:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


async def poll(port: AtPort) -> ModemState:
    """SIM, network registration (2G/3G or LTE, whichever is registered) and signal."""
    sim = await sim_state(port)
    found: list[str] = []
    for query in ("AT+CREG?", "AT+CEREG?"):
        try:
            lines = await port.command(query)
        except ModemError:  # a 2G modem has no AT+CEREG
            continue
        found += [
            REGISTRATION.get(m.group(1), "unknown")
            for m in map(_STATUS_LINE.match, lines)
            if m is not None
        ]
    registration = next(
        (r for r in found if r in ("home", "roaming")), found[0] if found else "unknown"
    )
    signal = None
    for line in await port.command("AT+CSQ"):
        if line.startswith("+CSQ:"):
            rssi = int(line.split(":", 1)[1].split(",")[0])
            signal = None if rssi == 99 else -113 + 2 * rssi  # TS 27.007 8.5
    return ModemState(sim, registration, signal)


async def send_pdu(port: AtPort, pdu_hex: str, tpdu_length: int) -> int:
    """Hand one SMS-SUBMIT to the modem; the message reference the network gave it."""
    lines = await port.command(f"AT+CMGS={tpdu_length}", timeout_s=SEND_TIMEOUT_S, data=pdu_hex)
    for line in lines:
        if line.startswith("+CMGS:"):
            return int(line.split(":", 1)[1].split(",")[0])
    return -1


async def stored_messages(port: AtPort) -> list[tuple[int, str]]:
    """Every message stored on the SIM as (index, PDU): those that came while no one listened."""
    lines = await port.command("AT+CMGL=4")
    found = []
    for head, pdu in itertools.pairwise(lines):
        if head.startswith("+CMGL:"):
            found.append((int(head.split(":", 1)[1].split(",")[0]), pdu))
    return found


async def read_message(port: AtPort, index: int) -> str | None:
    """The PDU stored at ``index``, or None if the slot is empty."""
    lines = await port.command(f"AT+CMGR={index}")
    for head, pdu in itertools.pairwise(lines):
        if head.startswith("+CMGR:"):
            return pdu
    return None


async def send_test(config: SmsConfig, number: str, text: str) -> tuple[ModemState, list[int]]:
    """Open the modem, initialise it, send ``text`` to ``number``; its state and the references."""
    port = AtPort(config.port, config.baudrate, lambda _heard: None)
    await port.open()
    sent: list[int] = []
    state: ModemState | None = None

    async def work() -> None:
        nonlocal state
        await start(port, config.pin_file)
        state = await poll(port)
        pdus = submit_pdus(number, text, smsc=config.smsc)
        sent.extend([await send_pdu(port, pdu.hex, pdu.tpdu_length) for pdu in pdus])

    try:
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(port.read(), name="sms-test.read")
            tg.create_task(work(), name="sms-test.send").add_done_callback(
                lambda _done: reader.cancel()
            )
    except* (DriverError, OSError) as group:
        raise DriverUnavailable(f"modem {config.port}: {first_leaf(group)}") from None
    finally:
        await port.close()
    assert state is not None
    return state, sent
