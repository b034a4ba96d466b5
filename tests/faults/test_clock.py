"""The real daemon with its clock 2 h behind (libfaketime), as a Pi without RTC or NTP runs.

The police's signed command tells the gateway the time: the command is obeyed,
``clock_suspect`` reaches the police, ``lianfang status`` shows it, and notices
expire by the police's time instead of going out already expired.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware_stubs.mqtt_client import client_for
from firmware_stubs.police_commands import command_body, new_key, send, sign
from gateway.mqtt.client import BrokerConfig
from lab.process import ReceiverProcess
from tests.clients import expected_nearest, running, wait_until
from tests.harness import READY_S, TestGateway, init_config

BEHIND = timedelta(hours=2)
CMD_TOPIC = "police/v1/L1/GW-001/cmd"
EXPIRES_S = 300
LIBFAKETIME = next(
    (
        p
        for pattern in (
            "/usr/lib/*/faketime/libfaketimeMT.so.1",
            "/usr/lib/faketime/libfaketimeMT.so.1",
        )
        for p in sorted(Path("/").glob(pattern.lstrip("/")))
    ),
    None,
)


needs_libfaketime = pytest.mark.skipif(
    LIBFAKETIME is None,
    reason="libfaketime is not installed (.ci/run installs it: apt-get install faketime)",
)


def start_behind(gw: TestGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the daemon alone 2 h behind: brokers, shops, police and centre keep the real time."""
    monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))
    monkeypatch.setenv("FAKETIME", "-2h")
    try:
        gw.start()
    finally:
        monkeypatch.delenv("LD_PRELOAD")
        monkeypatch.delenv("FAKETIME")


async def retained_status(block_url: str) -> dict:
    """The gateway's retained status on the block broker, once it shows the clock suspect."""
    broker = BrokerConfig(url=block_url)
    async with client_for(broker, client_id="status-reader", persistent=False) as client:
        await client.subscribe("lianfang/v1/gateway/GW-001/status", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                status = json.loads(bytes(message.payload))
                if status.get("clock", {}).get("suspect"):
                    return status
    raise AssertionError("the status stream ended")


def bodies(platform, kind: str) -> list[dict]:
    return [d.body for d in platform.unique if d.body["kind"] == kind]


def expires_in_s(notice_body: dict) -> float:
    """Seconds from the real now to the notice's expiry, as a shop's device would judge it."""
    return (datetime.fromisoformat(notice_body["expires_at"]) - datetime.now(UTC)).total_seconds()


@needs_libfaketime
def test_a_gateway_two_hours_behind_learns_the_polices_time_and_says_so(
    tmp_path, block_broker, police_broker, gateway_process, monkeypatch
):
    """Command obeyed, clock_suspect at the police once, statuses show it, notices valid."""
    key, public = new_key()
    config = init_config(
        tmp_path,
        block_url=block_broker.url,
        police_url=police_broker.url,
        status_interval_s=0.2,
        commands={"keys": {"platform-1": public}},
        neighbour_alert={"expires_s": EXPIRES_S},
        rules={"disable": ["robbery-area-alert"]},
    )
    gw = TestGateway(config)
    gateway_process.append(gw)
    start_behind(gw, monkeypatch)
    before, after = expected_nearest("S00011")[0], expected_nearest("S00040")[0]

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url,
            police_url=police_broker.url,
            shops=["S00011", "S00040", before, after],
        ) as (panels, platform):
            assert platform is not None
            # Before the police speak, the gateway cannot know: its notice is already expired.
            await panels["S00011"].send("panic")
            await wait_until(lambda: panels[before].notices, 10, "the first notice")
            assert expires_in_s(panels[before].notices[0].body) < 0
            await wait_until(lambda: bodies(platform, "panic"), 10, "the panic at the police")
            [panic] = bodies(platform, "panic")
            stamped_behind = datetime.now(UTC) - datetime.fromisoformat(panic["received_at"])
            assert stamped_behind > BEHIND - timedelta(minutes=5)  # libfaketime is in force

            body = command_body("GW-001", "set_level", level="heightened")
            await send(
                BrokerConfig(url=police_broker.url), CMD_TOPIC, sign(key, "platform-1", body)
            )
            await wait_until(lambda: bodies(platform, "command_ack"), 10, "the command obeyed")
            await wait_until(lambda: bodies(platform, "clock_suspect"), 10, "clock_suspect")
            assert not bodies(platform, "command_refused")
            [suspect] = bodies(platform, "clock_suspect")
            assert suspect["attrs"]["told_by"] == "police"
            assert abs(suspect["attrs"]["offset_s"] - BEHIND.total_seconds()) < 60
            assert suspect["attrs"]["reasons"]

            await panels["S00040"].send("panic")
            await wait_until(lambda: panels[after].notices, 10, "a notice after the command")
            assert abs(expires_in_s(panels[after].notices[0].body) - EXPIRES_S) < 60

            await wait_until(lambda: gw.status()["clock"]["suspect"], 10, "the status file")
            retained = await retained_status(block_broker.url)
            assert retained["clock"]["suspect"] is True
            assert retained["clock"]["told_by"] == "police"
            assert len(bodies(platform, "clock_suspect")) == 1

    asyncio.run(scenario())
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert "clock suspect" in shown.stdout, shown.stdout + shown.stderr


@needs_libfaketime
def test_an_alarm_centres_nak_time_makes_the_clock_suspect_and_the_centre_is_told(
    tmp_path, block_broker, gateway_process, monkeypatch
):
    """The centre NAKs the 2 h old timestamps with its own time: it gets 626 and the panic.

    Contact ID 626 is 'time/date inaccurate'; the panic is stored all the same.
    """
    db = tmp_path / "centre.sqlite3"
    receiver = ReceiverProcess(db)
    receiver.start(READY_S)
    try:
        config = init_config(
            tmp_path,
            block_url=block_broker.url,
            police_url=None,
            forwarders=[{"kind": "dc09", "name": "centre", "url": receiver.url, "account": "9999"}],
        )
        gw = TestGateway(config)
        gateway_process.append(gw)
        start_behind(gw, monkeypatch)

        def stored() -> list[tuple[str, int, str]]:
            with sqlite3.connect(db) as conn:
                return conn.execute(
                    "SELECT account, qualifier, code FROM alarms ORDER BY id"
                ).fetchall()

        async def scenario() -> None:
            async with running(block_url=block_broker.url, shops=["S00011"]) as (panels, _):
                await panels["S00011"].send("panic")
                await wait_until(
                    lambda: ("9999", 1, "626") in stored() and ("00011", 1, "120") in stored(),
                    20,
                    "the panic and the clock trouble at the centre",
                )
                await wait_until(lambda: gw.status()["clock"]["suspect"], 10, "the status")

        asyncio.run(scenario())
        assert gw.status()["clock"]["told_by"] == "alarm centre"
        assert stored().count(("9999", 1, "626")) == 1
    finally:
        receiver.stop()
