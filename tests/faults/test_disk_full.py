"""The SD card fills: alarms still go out and are journalled, the rest waits at the broker.

The state directory is a real 16 MB tmpfs; a filler file takes every free
byte while the panels publish, as a runaway log would. Nothing the gateway
says itself is refused (shops' answers, command answers), a refused device
event has no effect until it comes back, and the reconnect that fetches it
again is no link fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from firmware_stubs.police_commands import command_body, new_key, send, sign
from firmware_stubs.police_platform import PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.disk import MountUnavailableError, fill, small_tmpfs
from tests.clients import expected_nearest, local_moments, running, wait_until

STATE_FS_MB = 16
RESERVE_MB = 2
PANIC_SHOPS = ["S00011", "S00005", "S00017"]
TROUBLE_SHOPS = ["S00002", "S00008"]
TROUBLES_PER_SHOP = 20
# Counted exactly: no area alerts or intrusions raised by the rules themselves.
DEVICE_EVENTS_ONLY = {"rules": {"disable": ["intrusion-when-armed", "robbery-area-alert"]}}
CMD_TOPIC = "police/v1/L1/GW-001/cmd"


@contextlib.contextmanager
def small_filesystem(where: Path, size_mb: int) -> Iterator[Path]:
    """A real tmpfs for the state directory; skipped, saying why, where it cannot be mounted."""
    try:
        with small_tmpfs(where, size_mb) as mounted:
            yield mounted
    except MountUnavailableError as exc:
        pytest.skip(f"{exc} (needs root or CAP_SYS_ADMIN)")


def link_troubles(platform: PolicePlatform) -> list[tuple[str, str]]:
    """The gateway's own link faults and restores the police have received."""
    return [
        (d.body["device_id"], d.body["kind"])
        for d in platform.unique
        if d.body["device_id"].startswith("link:")
    ]


def kinds_of(platform: PolicePlatform, shop: str) -> list[str]:
    return sorted(d.body["kind"] for d in platform.unique if d.body["shop_id"] == shop)


async def short_status(port: int) -> dict[str, Any]:
    """The gateway's status on the block broker once it says storage is short (10 s at most)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="status-reader") as client:
        await client.subscribe("lianfang/v1/gateway/GW-001/status", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                status = dict(json.loads(bytes(message.payload)))
                if status["storage"]["short"]:
                    return status
    raise AssertionError("no status saying storage is short")


def test_a_full_disk_keeps_alarms_flowing_and_the_rest_waits_at_the_broker(
    tmp_path, block_broker, police_broker, start_gateway
):
    """Disk full: daemon up, panics notified and forwarded, storage_full forwarded, troubles later."""
    with small_filesystem(tmp_path / "state-fs", STATE_FS_MB) as state_dir:
        gw = start_gateway(
            state_dir=str(state_dir),
            journal={"reserve_mb": RESERVE_MB},
            status_interval_s=0.2,
            **DEVICE_EVENTS_ONLY,
        )
        assert (state_dir / "reserve.ballast").stat().st_size == RESERVE_MB * 1_000_000
        filler = state_dir / "runaway.log"

        async def scenario() -> None:
            shops = (
                PANIC_SHOPS
                + TROUBLE_SHOPS
                + sorted({s for shop in PANIC_SHOPS for s in expected_nearest(shop)})
            )
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=shops
            ) as (panels, platform):
                assert platform is not None
                await asyncio.to_thread(fill, filler)
                # A first trouble finds the disk full: the reserve goes, storage_full is raised.
                sent = [(TROUBLE_SHOPS[0], await panels[TROUBLE_SHOPS[0]].send("low_battery"))]
                await wait_until(
                    lambda: any(d.body["kind"] == "storage_full" for d in platform.unique),
                    15,
                    "storage_full at the police",
                )
                assert gw.status()["storage"]["short"]
                assert "storage full" in " ".join(gw.status()["warnings"])
                published = await short_status(block_broker.port)
                assert published["storage"]["reason"] == "disk full writing journal.sqlite3"
                shown = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "gateway", "status", "--config", str(gw.config)],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=60,
                )
                assert "storage full (disk full writing journal.sqlite3)" in " ".join(
                    shown.stdout.split()
                )
                panics = {}
                for shop in PANIC_SHOPS:
                    for trouble_shop in TROUBLE_SHOPS:
                        for _ in range(TROUBLES_PER_SHOP // len(PANIC_SHOPS)):
                            seq = await panels[trouble_shop].send("low_battery")
                            sent.append((trouble_shop, seq))
                    panics[shop] = await panels[shop].send("panic")
                await wait_until(
                    lambda: (
                        {d.body["shop_id"] for d in platform.unique if d.body["kind"] == "panic"}
                        == set(PANIC_SHOPS)
                    ),
                    15,
                    "every panic at the police while the disk is full",
                )
                panic_ids = {
                    (d.body["shop_id"], d.body["attrs"]["seq"]): d.body["id"]
                    for d in platform.unique
                    if d.body["kind"] == "panic"
                }
                for shop, seq in panics.items():
                    panic_id = panic_ids[shop, seq]
                    await wait_until(
                        lambda shop=shop, panic_id=panic_id: all(
                            any(n.body["event_id"] == panic_id for n in panels[s].notices)
                            for s in expected_nearest(shop)
                        ),
                        10,
                        f"the 10 notices of {shop}'s panic",
                    )
                # The first trouble was accepted before the disk showed full: the reserve took it.
                # Every later one waits at the broker (refused, perhaps after the panics: alarms
                # overtake routine events in the ingest).
                await wait_until(
                    lambda: gw.status()["storage"]["refused"] >= len(sent) - 1,
                    15,
                    "every later trouble refused while the disk is full",
                )
                taken = [
                    (d.body["shop_id"], d.body["attrs"]["seq"])
                    for d in platform.unique
                    if d.body["kind"] == "low_battery"
                ]
                assert taken == sent[:1]
                assert gw.process is not None
                assert gw.process.poll() is None, gw.log_tail()

                filler.unlink()
                await wait_until(
                    lambda: (
                        sum(d.body["kind"] == "low_battery" for d in platform.unique) >= len(sent)
                    ),
                    30,
                    "every trouble delivered once space is back",
                )
                troubles = [
                    (d.body["shop_id"], d.body["attrs"]["seq"])
                    for d in platform.unique
                    if d.body["kind"] == "low_battery"
                ]
                assert sorted(troubles) == sorted(sent)
                restores = [d.body for d in platform.unique if d.body["device_id"] == "storage"]
                assert [b["kind"] for b in restores] == ["storage_full", "restore"]
                # The ingest reconnected on purpose to fetch them: no block-link fault.
                assert link_troubles(platform) == []
                assert platform.duplicates == 0
                await wait_until(lambda: not gw.status()["storage"]["short"], 5, "status clear")

        asyncio.run(scenario())
        assert (state_dir / "reserve.ballast").stat().st_size == RESERVE_MB * 1_000_000
        assert gw.stop() == 0


def test_restarted_on_a_full_disk_with_a_backlog_the_gateway_stays_up(
    tmp_path, block_broker, police_broker, start_gateway
):
    """Full disk, broker backlog, restart: it starts from the reserve and does not die again."""
    with small_filesystem(tmp_path / "state-fs", STATE_FS_MB) as state_dir:
        gw = start_gateway(
            state_dir=str(state_dir), journal={"reserve_mb": RESERVE_MB}, **DEVICE_EVENTS_ONLY
        )
        assert gw.stop() == 0  # its session at the block broker keeps what comes meanwhile
        filler = state_dir / "runaway.log"
        fill(filler)

        async def scenario() -> None:
            shops = [*TROUBLE_SHOPS, "S00011", *expected_nearest("S00011")]
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=shops
            ) as (panels, platform):
                assert platform is not None
                backlog = [
                    (shop, await panels[shop].send("low_battery"))
                    for shop in TROUBLE_SHOPS
                    for _ in range(TROUBLES_PER_SHOP)
                ]
                panic = await panels["S00011"].send("panic")
                await asyncio.to_thread(gw.start)
                await wait_until(
                    lambda: any(d.body["kind"] == "storage_full" for d in platform.unique),
                    15,
                    "storage_full at the police",
                )
                await wait_until(
                    lambda: any(
                        d.body["kind"] == "panic" and d.body["attrs"]["seq"] == panic
                        for d in platform.unique
                    ),
                    15,
                    "the backlog's panic at the police",
                )
                assert gw.process is not None
                assert gw.process.poll() is None, gw.log_tail()
                filler.unlink()
                await wait_until(
                    lambda: (
                        sorted(
                            (d.body["shop_id"], d.body["attrs"]["seq"])
                            for d in platform.unique
                            if d.body["kind"] == "low_battery"
                        )
                        == sorted(backlog)
                    ),
                    30,
                    "the whole backlog delivered once space is back",
                )
                assert platform.duplicates == 0

        asyncio.run(scenario())
        assert gw.stop() == 0


def test_answers_and_commands_in_a_shortage_count_once_and_a_refused_door_acts_once_later(
    tmp_path, block_broker, police_broker, start_gateway
):
    """Disk full: a neighbour's "coming" and a command's ack reach the police at once, once.

    A door opening in an armed shop is refused with no effect (no intrusion, no siren);
    once storage is back the broker sends it again and it raises one intrusion, and
    its siren report, then. No link fault at the police across the shortage.
    """
    key, public = new_key()
    door_shop, trouble_shop = "S00040", TROUBLE_SHOPS[0]
    neighbour = expected_nearest("S00011")[0]
    with small_filesystem(tmp_path / "state-fs", STATE_FS_MB) as state_dir:
        gw = start_gateway(
            state_dir=str(state_dir),
            journal={"reserve_mb": RESERVE_MB},
            status_interval_s=0.2,
            commands={"keys": {"platform-1": public}},
            rules={"timezone": "Asia/Shanghai", "disable": ["robbery-area-alert"]},
        )
        filler = state_dir / "runaway.log"

        async def scenario() -> None:
            shops = ["S00011", *expected_nearest("S00011"), door_shop, trouble_shop]
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=shops
            ) as (panels, platform):
                assert platform is not None
                await panels["S00011"].send("panic")
                await wait_until(lambda: panels[neighbour].notices, 10, "the neighbour alert")
                alert_id = panels[neighbour].notices[0].body["alert_id"]

                await asyncio.to_thread(fill, filler)
                await panels[trouble_shop].send("low_battery")
                await wait_until(
                    lambda: any(d.body["kind"] == "storage_full" for d in platform.unique),
                    15,
                    "storage_full at the police",
                )
                # The block's closed night: the shop is armed by its hours.
                [night] = local_moments(time(23, 30), time(8, 0), 1)
                await panels[door_shop].send("door_open", ts=night)
                await panels[neighbour].respond(alert_id, "coming")
                command = command_body("GW-001", "set_level", level="heightened")
                await send(
                    BrokerConfig(url=police_broker.url),
                    CMD_TOPIC,
                    sign(key, "platform-1", command),
                )
                await wait_until(
                    lambda: (
                        {"response", "command_ack"} <= {d.body["kind"] for d in platform.unique}
                    ),
                    15,
                    "the answer and the command's ack while the disk is full",
                )
                await wait_until(
                    lambda: gw.status()["storage"]["refused"] == 1, 10, "the door refused"
                )
                assert gw.status()["storage"]["short"]
                assert gw.status()["level"] == "heightened"

                filler.unlink()
                await wait_until(
                    lambda: (
                        kinds_of(platform, door_shop) == ["action_failed", "door_open", "intrusion"]
                    ),
                    30,
                    "the door, its intrusion and siren report once storage is back",
                )
                await wait_until(lambda: not gw.status()["storage"]["short"], 5, "status clear")
                [answer] = [d.body for d in platform.unique if d.body["kind"] == "response"]
                assert answer["attrs"]["alert_id"] == alert_id
                assert (answer["attrs"]["alerted"], answer["attrs"]["coming"]) == (True, 1)
                [ack] = [d.body for d in platform.unique if d.body["kind"] == "command_ack"]
                assert ack["attrs"]["level"] == "heightened"
                assert link_troubles(platform) == []
                assert platform.duplicates == 0

        asyncio.run(scenario())
        assert gw.stop() == 0
