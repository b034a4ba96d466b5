"""The modem's AT port against the emulator on a real pty: answers, refusals, silence, a PIN, reports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.errors import DriverUnavailable
from gateway.sms.modem import AtPort, ModemError, Unsolicited, poll, start
from protocols.sms_pdu import StatusReport, decode
from tests.clients import wait_until
from tests.sms import given, gsm_modem


def with_port(link: Path, work: Callable[[AtPort, list[Unsolicited]], Awaitable[None]]) -> None:
    """Open the port at ``link``, read it in a task beside ``work``, close it after."""

    async def run() -> None:
        heard: list[Unsolicited] = []
        port = AtPort(str(link), 115200, heard.append)
        await port.open()
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(port.read(), name="read")
                await work(port, heard)
                reader.cancel()
        finally:
            await port.close()

    asyncio.run(run())


def test_errors_and_silence_are_told_apart_and_the_port_serves_on(tmp_path):
    """ERROR raises ModemError naming command and answer; no answer in time raises DriverUnavailable; the next command works."""
    with gsm_modem(tmp_path) as (modem, link):

        async def work(port: AtPort, _heard: list[Unsolicited]) -> None:
            await start(port, None)
            await given(modem, "errors 1")
            with pytest.raises(ModemError, match=r"'AT\+CSQ': ERROR"):
                await port.command("AT+CSQ")
            await given(modem, "hang 1")
            with pytest.raises(DriverUnavailable, match="did not answer 'AT'"):
                await port.command("AT", timeout_s=0.5)
            state = await poll(port)
            assert (state.sim, state.registration, state.signal_dbm) == ("READY", "home", -73)

        with_port(link, work)


def test_a_locked_sim_is_opened_with_the_pin_file_and_refused_without_it(tmp_path):
    """A SIM that asks its PIN is unlocked from a mode-600 file; with no pin_file the error says so."""
    pin = tmp_path / "sim.pin"
    pin.write_text("4321\n")
    pin.chmod(0o600)
    with gsm_modem(tmp_path, "--pin", "4321") as (_modem, link):

        async def without(port: AtPort, _heard: list[Unsolicited]) -> None:
            with pytest.raises(
                DriverUnavailable, match=r"asks for its PIN and sms\.pin_file is not set"
            ):
                await start(port, None)

        async def with_file(port: AtPort, _heard: list[Unsolicited]) -> None:
            await start(port, pin)
            assert (await poll(port)).sim == "READY"

        with_port(link, without)
        with_port(link, with_file)


def test_a_delivery_report_arrives_with_its_pdu(tmp_path):
    """+CDS and the PDU line after it reach on_unsolicited together, decodable as a status report."""
    with gsm_modem(tmp_path) as (modem, link):

        async def work(port: AtPort, heard: list[Unsolicited]) -> None:
            await start(port, None)
            await given(modem, "report 42 0")
            await wait_until(lambda: heard, 10, "the report")
            [report] = heard
            assert report.line.startswith("+CDS:")
            assert report.pdu is not None
            decoded = decode(report.pdu)
            assert isinstance(decoded, StatusReport)
            assert (decoded.reference, decoded.delivered) == (42, True)

        with_port(link, work)
