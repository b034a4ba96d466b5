"""The real daemon with a DC-09 forwarder to `lianfang receiver` (both real processes)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import time

from lab.process import ReceiverProcess
from tests.clients import local_moments, running, wait_until
from tests.harness import READY_S


def centre_at(url: str, **extra: object) -> dict[str, object]:
    return {"kind": "dc09", "name": "centre", "url": url, "account": "9999"} | extra


def test_panic_reaches_the_alarm_receiving_centre(tmp_path, block_broker, start_gateway):
    """A panic at S00011 (zone 1) arrives at the centre as Contact ID 1120, account 00011, zone 001."""
    db = tmp_path / "centre.sqlite3"
    receiver = ReceiverProcess(db)
    receiver.start(READY_S)
    try:
        gateway = start_gateway(
            forwarders=[centre_at(receiver.url, ack_timeout_s=3)],
            rules={"timezone": "Asia/Shanghai"},  # the survey's opening hours are Beijing time
        )

        def stored() -> list[tuple[str, int, str, int]]:
            with sqlite3.connect(db) as conn:
                return conn.execute(
                    "SELECT account, qualifier, code, zone FROM alarms ORDER BY id"
                ).fetchall()

        async def scenario() -> None:
            async with running(block_url=block_broker.url, shops=["S00011"]) as (panels, _):
                await panels["S00011"].send("panic", zone="1")
                # In opening hours a door is a door (no DC-09 code: not sent), not an intrusion.
                await panels["S00011"].send(
                    "door_open", zone="2", ts=local_moments(time(8, 30), time(23, 30), 1)[0]
                )
                await panels["S00011"].send("tamper", zone="3")
                await wait_until(lambda: len(stored()) >= 2, 20, "two alarms at the centre")

        asyncio.run(scenario())
        assert stored() == [("00011", 1, "120", 1), ("00011", 1, "137", 3)]
        assert "event kinds without a DC-09 code are not sent: door_open, door_close" in (
            gateway.log_text()
        )
    finally:
        receiver.stop()


def test_centre_killed_and_restarted_loses_nothing(tmp_path, block_broker, start_gateway):
    """The centre process is SIGKILLed while panics come in: after its restart each is stored once, in order."""
    db = tmp_path / "centre.sqlite3"
    receiver = ReceiverProcess(db)
    receiver.start(READY_S)
    try:
        gateway = start_gateway(forwarders=[centre_at(receiver.url, ack_timeout_s=1, attempts=2)])

        def alarms(account: str) -> list[tuple[int, str, int]]:
            with sqlite3.connect(db) as conn:
                return conn.execute(
                    "SELECT qualifier, code, zone FROM alarms WHERE account=? ORDER BY id",
                    (account,),
                ).fetchall()

        def zones() -> list[int]:
            return [zone for _, _, zone in alarms("00011")]

        async def scenario() -> None:
            async with running(block_url=block_broker.url, shops=["S00011"]) as (panels, _):
                panel = panels["S00011"]
                await panel.send("panic", zone="1")
                await wait_until(lambda: zones() == [1], 20, "the first panic stored")
                receiver.kill()
                for zone in range(2, 7):
                    await panel.send("panic", zone=str(zone))
                await wait_until(
                    lambda: "forwarder[centre] down" in gateway.log_text(), 20, "link down"
                )
                receiver.start(READY_S)
                await wait_until(lambda: len(zones()) >= 6, 60, "all six panics stored")
                await wait_until(
                    lambda: len(alarms("9999")) >= 2, 20, "the link trouble and restore"
                )

        asyncio.run(scenario())
        assert zones() == [1, 2, 3, 4, 5, 6]
        # The gateway's own trouble about the link, then its restore, under its own account.
        assert alarms("9999") == [(1, "380", 0), (3, "380", 0)]
    finally:
        receiver.stop()
