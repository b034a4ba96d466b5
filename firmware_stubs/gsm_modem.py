"""A GSM/4G modem (SIM800/SIM7600/EC2x class) on a pty: the AT subset the gateway uses.

python -m firmware_stubs.gsm_modem --pty --link /tmp/ttyGSM

AT, ATE0/1, AT+CMEE, AT+CPIN?/=, AT+CMGF=0|1 (PDU or text mode), AT+CNMI, AT+CREG?,
AT+CEREG?, AT+CSQ, AT+CMGS (a PDU, or a number then text in text mode, after the
``>`` prompt, ended by Ctrl-Z), AT+CMGR, AT+CMGL, AT+CMGD. Each message handed over
takes ``--send-s`` seconds (a real network: 1-3 s) and prints
``SMS <mr> <pdu hex>`` (``SMS-TEXT <mr> <number> <text>`` in text mode), and
``DONE <command>`` once it has taken a command.

``--link PATH`` keeps a symlink to the current pty, as udev keeps
``/dev/serial/by-id/...``: after ``vanish`` the modem comes back on a new pty and
the link follows it (the link is missing while it is gone).

Commands (stdin or the control socket):

    receive NUMBER TEXT...    a message arrives: stored, announced by +CMTI
    receive-pdu HEX           the same with this PDU as it is (garbled ones too)
    report MR [STATUS]        a delivery report for message MR (+CDS), status 0 by default
    fail-sends N              the next N AT+CMGS answer +CMS ERROR: 500
    errors N                  the next N commands answer ERROR
    hang N                    the next N commands get no answer at all
    vanish SECONDS            drop off the bus now (USB re-enumeration), back after SECONDS
    vanish-after N SECONDS    the same, right after answering the next N AT+CMGS
    send-s LOW HIGH           how long each AT+CMGS takes
    network on|off            registered or not;  ``signal RSSI`` (0-31, 99 unknown)
    sim on|off                the SIM present or not
    quit

``--flaky P``: each command answers ERROR (``+CMS ERROR`` for AT+CMGS) with
probability P, and with P/4 gets no answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
import tty
from pathlib import Path

from firmware_stubs.wire import commands
from protocols.sms_pdu import deliver_pdu, status_report_pdu

CTRL_Z = b"\x1a"


class Pty:
    """The modem's end of a pty pair; the gateway's end is printed and linked."""

    def __init__(self, link: Path | None, feed: asyncio.StreamReader) -> None:
        """Feed what the gateway writes to ``feed``; keep ``link`` pointing at our pty."""
        self.link = link
        self.feed = feed
        self.master: int | None = None
        self.slave: int | None = None

    def open(self) -> None:
        """A new pty pair, raw from the start, announced and linked."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._readable)
        name = os.ttyname(self.slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(name)
            tmp.replace(self.link)
        print(f"PTY {name}", flush=True)

    def close(self) -> None:
        """Gone from the bus: both ends closed, the link removed."""
        if self.master is None or self.slave is None:
            return
        asyncio.get_running_loop().remove_reader(self.master)
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = None

    def _readable(self) -> None:
        if self.master is None:
            return
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        self.feed.feed_data(data)

    def write(self, data: bytes) -> None:
        """Send to the gateway (nothing, while gone)."""
        if self.master is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.master, data)


class Modem:
    """The modem's state and its answers."""

    def __init__(self, pty: Pty, feed: asyncio.StreamReader, args: argparse.Namespace) -> None:
        """Answer on ``pty`` what arrives in ``feed``."""
        self.pty = pty
        self.feed = feed
        self.send_s = (args.send_s, args.send_s_max)
        self.flaky = args.flaky
        self.pin = args.pin
        self.sim_locked = args.pin is not None
        self.sim_present = True
        self.registered = True
        self.rssi = 20
        self.echo = True
        self.pdu_mode = True
        self.reference = 0
        self.stored: dict[int, str] = {}
        self.fail_sends = 0
        self.errors = 0
        self.hangs = 0
        self.vanish_after: tuple[int, float] | None = None
        self.back = asyncio.Event()
        self.back.set()

    def say(self, *lines: str) -> None:
        """Write lines as a modem does, each framed by CR LF."""
        self.pty.write(b"".join(f"\r\n{line}\r\n".encode() for line in lines))

    async def serve(self) -> None:
        """Answer commands until cancelled."""
        while True:
            try:
                line = (await self.feed.readuntil(b"\r")).rstrip(b"\r").lstrip(b"\n")
            except asyncio.IncompleteReadError:  # gone from the bus; read the next pty's input
                continue
            if not line or not self.back.is_set():
                continue
            if self.echo:
                self.pty.write(line + b"\r")
            await self._answer(line.decode(errors="replace").strip())

    async def _answer(self, command: str) -> None:
        upper = command.upper()
        if self.hangs or random.random() < self.flaky / 4:
            self.hangs = max(0, self.hangs - 1)
            return
        if self.errors or random.random() < self.flaky:
            self.errors = max(0, self.errors - 1)
            self.say("+CMS ERROR: 500" if upper.startswith("AT+CMGS") else "ERROR")
            return
        if upper.startswith("AT+CMGS="):
            await self._send(command[8:])
            return
        answer = self._simple(upper)
        if isinstance(answer, list):
            self.say(*answer, "OK")
        else:
            self.say(answer)

    def _simple(self, upper: str) -> list[str] | str:  # noqa: PLR0911, PLR0912, C901 - a branch a command
        """The lines before ``OK``, or the error line said instead."""
        if upper in ("AT", "AT+CMEE=1") or upper.startswith("AT+CNMI="):
            return []
        if upper in ("ATE0", "ATE1"):
            self.echo = upper == "ATE1"
            return []
        if upper == "AT+CPIN?":
            if not self.sim_present:
                return "+CME ERROR: 10"
            return ["+CPIN: SIM PIN" if self.sim_locked else "+CPIN: READY"]
        if upper.startswith("AT+CPIN="):
            if upper[8:].strip('"') != self.pin:
                return "+CME ERROR: 16"
            self.sim_locked = False
            return []
        if upper.startswith("AT+CMGF="):
            self.pdu_mode = upper.endswith("0")
            return []
        if upper in ("AT+CREG?", "AT+CEREG?"):
            state = 1 if self.registered and self.sim_present else 2
            return [f"+{upper[3:-1]}: 0,{state}"]
        if upper == "AT+CSQ":
            return [f"+CSQ: {self.rssi},99"]
        if upper.startswith("AT+CMGR="):
            pdu = self.stored.get(int(upper[8:]))
            return [] if pdu is None else [f"+CMGR: 0,,{len(pdu) // 2 - 9}", pdu]
        if upper.startswith("AT+CMGL"):
            return [
                line
                for index, pdu in sorted(self.stored.items())
                for line in (f"+CMGL: {index},0,,{len(pdu) // 2 - 9}", pdu)
            ]
        if upper.startswith("AT+CMGD="):
            index = int(upper[8:].split(",", maxsplit=1)[0])
            if self.stored.pop(index, None) is not None:
                print(f"DELETED {index}", flush=True)
            return []
        return "ERROR"

    async def _send(self, argument: str) -> None:
        self.pty.write(b"\r\n> ")
        try:
            body = await self.feed.readuntil(CTRL_Z)
        except asyncio.IncompleteReadError:
            return
        payload = body[:-1].decode(errors="replace").strip()
        await asyncio.sleep(random.uniform(*self.send_s))
        if not self.back.is_set():  # dropped off the bus while sending: the message is lost
            return
        if self.fail_sends or not self.registered or not self.sim_present:
            self.fail_sends = max(0, self.fail_sends - 1)
            self.say("+CMS ERROR: 500" if self.registered else "+CMS ERROR: 331")
            return
        self.reference = (self.reference + 1) % 256
        if self.pdu_mode:
            print(f"SMS {self.reference} {payload}", flush=True)
        else:
            print(f"SMS-TEXT {self.reference} {argument.strip(chr(34))} {payload}", flush=True)
        self.say(f"+CMGS: {self.reference}", "OK")
        if self.vanish_after is not None:
            left, seconds = self.vanish_after
            self.vanish_after = (left - 1, seconds) if left > 1 else None
            if left == 1:
                await self.vanish(seconds)

    async def vanish(self, seconds: float) -> None:
        """Drop off the bus and come back on a new pty after ``seconds``."""
        self.back.clear()
        await asyncio.sleep(0.2)  # what was said before the drop reaches the gateway
        self.pty.close()
        stale, self.feed = self.feed, asyncio.StreamReader()
        self.pty.feed = self.feed
        stale.feed_eof()
        print("GONE", flush=True)
        await asyncio.sleep(seconds)
        self.echo = True  # a modem that re-enumerates has rebooted
        self.pdu_mode = False
        self.sim_locked = self.pin is not None
        self.pty.open()
        self.back.set()

    def receive(self, pdu: str) -> None:
        """A message arrives: stored in the next free slot and announced."""
        index = next(i for i in range(1, 1000) if i not in self.stored)
        self.stored[index] = pdu
        print(f"STORED {index}", flush=True)
        self.say(f'+CMTI: "SM",{index}')

    def report(self, reference: int, status: int) -> None:
        """A delivery report for message ``reference``, pushed as +CDS."""
        pdu = status_report_pdu(reference, "+8600000000000", status)
        self.say(f"+CDS: {len(pdu) // 2 - 1}")
        self.pty.write(f"{pdu}\r\n".encode())


async def command(modem: Modem, tg: asyncio.TaskGroup, words: list[str]) -> None:  # noqa: C901, PLR0912
    """Carry out one control command."""
    verb, args = words[0], words[1:]
    if verb == "receive":
        modem.receive(deliver_pdu(args[0], " ".join(args[1:])))
    elif verb == "receive-pdu":
        modem.receive(args[0])
    elif verb == "report":
        modem.report(int(args[0]), int(args[1]) if len(args) > 1 else 0)
    elif verb == "fail-sends":
        modem.fail_sends = int(args[0])
    elif verb == "errors":
        modem.errors = int(args[0])
    elif verb == "hang":
        modem.hangs = int(args[0])
    elif verb == "vanish":
        tg.create_task(modem.vanish(float(args[0])), name="vanish")
    elif verb == "vanish-after":
        modem.vanish_after = (int(args[0]), float(args[1]))
    elif verb == "send-s":
        modem.send_s = (float(args[0]), float(args[1]))
    elif verb == "network":
        modem.registered = args[0] == "on"
    elif verb == "signal":
        modem.rssi = int(args[0])
    elif verb == "sim":
        modem.sim_present = args[0] == "on"
    else:
        raise ValueError(f"unknown command {verb!r}")


async def serve(args: argparse.Namespace) -> None:
    """Run the modem until ``quit`` or end of input."""
    feed = asyncio.StreamReader()
    pty = Pty(Path(args.link) if args.link else None, feed)
    pty.open()
    modem = Modem(pty, feed, args)
    try:
        async with asyncio.TaskGroup() as tg:
            server = tg.create_task(modem.serve(), name="modem")
            async for line in commands(args.control):
                if line == "quit":
                    break
                try:
                    await command(modem, tg, line.split())
                except (ValueError, IndexError) as exc:
                    print(f"ERROR {line!r}: {exc}", flush=True)
                else:
                    print(f"DONE {line}", flush=True)
            server.cancel()
    finally:
        pty.close()


def main() -> None:
    """Command line of the modem stub."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pty", action="store_true", required=True, help="make a pty pair")
    ap.add_argument("--link", help="keep a symlink at this path to the current pty")
    ap.add_argument("--control", metavar="HOST:PORT", help="also take commands on this TCP port")
    ap.add_argument("--pin", help="the SIM asks this PIN before it serves")
    ap.add_argument("--send-s", type=float, default=1.0, help="shortest AT+CMGS, s")
    ap.add_argument("--send-s-max", type=float, default=3.0, help="longest AT+CMGS, s")
    ap.add_argument("--flaky", type=float, default=0.0, help="chance a command fails")
    args = ap.parse_args()
    random.seed(time.time_ns())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
