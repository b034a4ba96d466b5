"""Walk test and reload through the control socket: the real daemon, brokers, CLI and socket."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from firmware_stubs.police_commands import command_body, new_key, send, sign
from gateway.control import ask
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from lab.process import ReceiverProcess
from tests.clients import expected_nearest, running, wait_until
from tests.field import start_learn, stub
from tests.harness import READY_S, TestGateway, init_config
from tests.integration.test_rf433 import SHOP, rf_config
from tests.integration.test_rules import CMD_TOPIC

UNDER_TEST = ["S00011", "S00040", "S00070"]
NOT_UNDER_TEST = "S00025"


def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args, "--config", str(config)]


async def walktest_cli(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cli(config, "walktest", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def walk_status(state: Path) -> dict:
    return await ask(state, "walktest.status")


def police_kinds(platform, kind: str) -> list[dict]:
    return [d.body for d in platform.unique if d.body["kind"] == kind]


def test_three_shops_reach_the_police_as_tests_and_alert_nobody(
    block_broker, police_broker, start_gateway
):
    """Presses at 3 shops under test reach the police as tests; a shop not under test alerts its 10."""
    gw = start_gateway()
    shops = [*UNDER_TEST, NOT_UNDER_TEST, *expected_nearest(NOT_UNDER_TEST)]
    shops += [s for sid in UNDER_TEST for s in expected_nearest(sid)]
    shops = list(dict.fromkeys(shops))

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=shops
        ) as (panels, platform):
            assert platform is not None
            walk = await walktest_cli(
                gw.config, "--shops", ",".join(UNDER_TEST), "--minutes", "5", "--json"
            )
            await wait_until(
                lambda: len(police_kinds(platform, "walk_test_started")) == 3,
                15,
                "three walk_test_started events at the police",
            )
            for shop in UNDER_TEST:
                await panels[shop].send("panic", zone="1")
            await wait_until(
                lambda: len(police_kinds(platform, "panic")) == 3, 10, "three test panics"
            )
            # The test ends by itself once every device (panel-1 of each shop) is heard.
            out, err = await asyncio.wait_for(walk.communicate(), 20)
            assert walk.returncode == 0, err.decode()
            # A shop not under test works as always; anything the tests had sent came before.
            # Its panel saying "test" itself changes nothing: only the gateway says so.
            await panels[NOT_UNDER_TEST].send("panic", zone="1", test=True)
            await wait_until(
                lambda: (
                    len(police_kinds(platform, "panic")) == 4
                    and sum(bool(p.notices) for p in panels.values()) >= 10
                ),
                10,
                "the real panic and its 10 notices",
            )
            await wait_until(
                lambda: len(police_kinds(platform, "walk_test_ended")) == 3, 10, "three ends"
            )
        tests = [p for p in police_kinds(platform, "panic") if p["shop_id"] in UNDER_TEST]
        assert sorted(p["shop_id"] for p in tests) == sorted(UNDER_TEST)
        assert all(p["attrs"]["test"] is True for p in tests)
        [real] = [p for p in police_kinds(platform, "panic") if p["shop_id"] == NOT_UNDER_TEST]
        assert "test" not in real["attrs"]
        alerted = {s for s, p in panels.items() if p.notices}
        assert alerted == set(expected_nearest(NOT_UNDER_TEST))
        assert {e["attrs"]["reason"] for e in police_kinds(platform, "walk_test_ended")} == {"done"}
        result = json.loads(out)
        assert result["ended_because"] == "done"
        assert [s["shop_id"] for s in result["shops"]] == UNDER_TEST
        for shop in result["shops"]:
            [device] = shop["devices"]
            assert (device["device_id"], device["kind"], device["passed"]) == (
                "panel-1",
                "panic",
                True,
            )
        assert len(result["real_alarms"]) == 3
        log = gw.log_text()
        assert f"alarm panic {real['id']} at shop {NOT_UNDER_TEST}: 10 shops alerted\n" in log
        assert (
            f"alarm panic {tests[0]['id']} at shop {tests[0]['shop_id']}: 0 shops alerted (walk test)"
            in log
        )
        assert f"alarm panic {real['id']} at shop {NOT_UNDER_TEST} delivered by police" in log

    asyncio.run(scenario())


def test_time_up_fails_and_ctrl_c_ends_test_mode(block_broker, police_broker, start_gateway):
    """Unheard, a test ends by itself when its time is up (exit 1); Ctrl-C ends one early."""
    gw = start_gateway()
    state = gw.config.parent / "state"
    shop = UNDER_TEST[0]
    near = expected_nearest(shop)

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=[shop, *near]
        ) as (panels, platform):
            assert platform is not None
            walk = await walktest_cli(gw.config, "--shops", shop, "--minutes", "0.05", "--json")
            out, err = await asyncio.wait_for(walk.communicate(), 30)
            assert walk.returncode == 1, err.decode()
            result = json.loads(out)
            assert result["ended_because"] == "time up"
            assert result["shops"][0]["passed"] is False
            await wait_until(
                lambda: (
                    [e["attrs"]["reason"] for e in police_kinds(platform, "walk_test_ended")]
                    == ["time up"]
                ),
                10,
                "the end at the police",
            )
            walk = await walktest_cli(gw.config, "--shops", shop, "--minutes", "10")
            await wait_until(
                lambda: len(police_kinds(platform, "walk_test_started")) == 2, 15, "second start"
            )
            walk.send_signal(signal.SIGINT)
            await asyncio.wait_for(walk.communicate(), 15)
            assert walk.returncode == 1
            status = await walk_status(state)
            assert status["running"] is False
            assert status["ended_because"] == "stopped by the installer"
            # Out of test mode: a panic alerts the neighbours again.
            await panels[shop].send("panic", zone="1")
            await wait_until(
                lambda: sum(bool(panels[s].notices) for s in near) == len(near),
                10,
                "the neighbours alerted after the test",
            )

    asyncio.run(scenario())


def test_a_restart_mid_test_keeps_test_mode(
    block_broker, police_broker, start_gateway, gateway_process
):
    """The test survives a restart: same end time, the shop's panic still a test."""
    gw = start_gateway()
    state = gw.config.parent / "state"
    shop = UNDER_TEST[0]

    async def scenario() -> None:
        walk = await walktest_cli(gw.config, "--shops", shop, "--minutes", "10", "--json")
        await wait_until((state / "walktest.json").exists, 15, "the test started")
        started = await walk_status(state)
        gw.stop()
        again = TestGateway(gw.config)
        gateway_process.append(again)
        again.start()
        status = await walk_status(state)
        assert status["running"] is True
        assert status["ends_at"] == started["ends_at"]
        assert json.loads((state / "status.json").read_text())["walk_test"]["shops"] == [shop]
        near = expected_nearest(shop)
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=[shop, near[0]]
        ) as (panels, platform):
            assert platform is not None
            await panels[shop].send("panic", zone="1")
            await wait_until(lambda: police_kinds(platform, "panic"), 10, "the panic")
            [panic] = police_kinds(platform, "panic")
            assert panic["attrs"]["test"] is True
            # The CLI rode out the restart and saw the test pass.
            out, err = await asyncio.wait_for(walk.communicate(), 20)
            assert walk.returncode == 0, err.decode()
            assert json.loads(out)["ended_because"] == "done"
            assert not panels[near[0]].notices

    asyncio.run(scenario())


def test_no_gateway_is_one_clear_line(tmp_path, block_broker):
    """Without a running gateway the CLI says so in one line and exits 2."""
    config = init_config(tmp_path, block_url=block_broker.url, police_url=None)
    done = subprocess.run(
        cli(config, "walktest", "--all", "--minutes", "1"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "no gateway is running here" in line
    assert "control.sock" in line


LEAK_RULE = {
    "name": "leak-neighbours",
    "when": {"kinds": ["water_leak"]},
    "do": [{"action": "notify_nearest"}],
}


def test_reload_takes_a_new_rule_without_reconnecting_and_refuses_a_broken_config(
    tmp_path, block_broker, gateway_process
):
    """SIGHUP and `lianfang reload` apply a new rule, links untouched; a broken file is refused."""
    with Mosquitto(workdir=tmp_path / "police-notice", settings=("log_type notice",)) as police:
        config = init_config(tmp_path, block_url=block_broker.url, police_url=police.url)
        gw = TestGateway(config)
        gateway_process.append(gw)
        gw.start()
        log = tmp_path / "police-notice" / "mosquitto.log"

        def connects() -> int:
            return log.read_text().count("as lianfang-GW-001")

        shop, other = UNDER_TEST[0], UNDER_TEST[1]
        near = expected_nearest(shop) + expected_nearest(other)

        async def scenario() -> None:
            async with running(
                block_url=block_broker.url, police_url=police.url, shops=[shop, other, *near]
            ) as (panels, platform):
                assert platform is not None
                await panels[shop].send("water_leak")
                await wait_until(lambda: police_kinds(platform, "water_leak"), 10, "first leak")
                assert not any(p.notices for p in panels.values())
                before = connects()
                data = yaml.safe_load(config.read_text())
                data["rules"] = {"rules": [LEAK_RULE]}
                data["journal"] = {"max_size_mb": 123}  # applied only by a restart: said so
                config.write_text(yaml.safe_dump(data, sort_keys=False))
                reload = await asyncio.create_subprocess_exec(
                    *cli(config, "reload"), stdout=asyncio.subprocess.PIPE
                )
                out, _ = await asyncio.wait_for(reload.communicate(), 30)
                assert (reload.returncode, out.decode().strip()) == (
                    0,
                    "reloaded; journal changed and apply at the next restart",
                )
                assert "reload: journal changed; applied at the next restart" in gw.log_text()
                await panels[shop].send("water_leak")
                await wait_until(
                    lambda: all(panels[s].notices for s in expected_nearest(shop)),
                    10,
                    "the leak's notices under the new rule",
                )
                config.write_text(config.read_text() + "\nshops: nonsense\n")
                gw.process.send_signal(signal.SIGHUP)
                await wait_until(
                    lambda: "reload refused, the running config is kept" in gw.log_text(),
                    10,
                    "the refusal in the log",
                )
                assert "shops: expected a list" in gw.log_text()
                # The old config (with the new rule) still serves.
                await panels[other].send("water_leak")
                await wait_until(
                    lambda: all(panels[s].notices for s in expected_nearest(other)),
                    10,
                    "the rule still in force after the refused reload",
                )
                await wait_until(
                    lambda: len(police_kinds(platform, "water_leak")) == 3, 10, "every leak"
                )
                assert connects() == before
                assert before >= 1

        asyncio.run(scenario())


def test_a_button_learned_while_the_gateway_runs_is_served_at_once(
    tmp_path, block_broker, police_broker, gateway_process
):
    """`lianfang learn` makes the running gateway reload: the next press is a panic, no restart."""
    with stub("rf433_receiver") as rf:
        config = rf_config(tmp_path, block_broker.url, police_broker.url, rf.port, interval=0.2)
        gw = TestGateway(config)
        gateway_process.append(gw)
        gw.start()
        pid = gw.pid
        proc = start_learn(config, "--shop", SHOP, "--device", "rb-1")
        rf.send("press C0FFEE")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "the running gateway reloaded: the button is served now" in out

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                await asyncio.sleep(0.8)  # past burst_s: the next press is a new one
                rf.send("press C0FFEE")
                await wait_until(lambda: platform.unique, 10, "the learned button's panic")
                [panic] = platform.unique
                assert (panic.body["device_id"], panic.body["kind"]) == ("rb-1", "panic")

        asyncio.run(scenario())
        assert gw.pid == pid


def test_a_walk_test_at_the_alarm_receiving_centre(tmp_path, block_broker, start_gateway):
    """At a DC-09 centre: 607 opens the test, the panic is a 601 test report, 607 restore closes it."""
    db = tmp_path / "centre.sqlite3"
    receiver = ReceiverProcess(db)
    receiver.start(READY_S)
    try:
        gw = start_gateway(
            forwarders=[{"kind": "dc09", "name": "centre", "url": receiver.url, "account": "9999"}]
        )
        state = gw.config.parent / "state"

        def stored() -> list[tuple[str, int, str, int]]:
            with sqlite3.connect(db) as conn:
                return conn.execute(
                    "SELECT account, qualifier, code, zone FROM alarms ORDER BY id"
                ).fetchall()

        async def scenario() -> None:
            async with running(block_url=block_broker.url, shops=["S00011"]) as (panels, _):
                await ask(state, "walktest.start", {"shops": ["S00011"], "minutes": 5})
                await panels["S00011"].send("panic", zone="1")
                await wait_until(lambda: len(stored()) >= 3, 20, "three messages at the centre")

        asyncio.run(scenario())
        assert stored() == [("00011", 1, "607", 0), ("00011", 1, "601", 1), ("00011", 3, "607", 0)]
    finally:
        receiver.stop()


def test_a_command_key_added_by_reload_is_trusted_at_once(
    block_broker, police_broker, start_gateway
):
    """A police key added to the config and reloaded signs a command the gateway obeys."""
    key, public = new_key()
    gw = start_gateway(status_interval_s=0.2)
    police = BrokerConfig(url=police_broker.url)
    command = sign(key, "platform-1", command_body("GW-001", "set_level", level="heightened"))

    async def scenario() -> None:
        async with running(police_url=police_broker.url) as (_, platform):
            assert platform is not None
            await send(police, CMD_TOPIC, command)
            await wait_until(
                lambda: police_kinds(platform, "command_refused"), 10, "the unknown key refused"
            )
            assert police_kinds(platform, "command_refused")[0]["attrs"]["reason"] == "unknown_key"
            data = yaml.safe_load(gw.config.read_text())
            data["commands"] = {"keys": {"platform-1": public}}
            gw.config.write_text(yaml.safe_dump(data, sort_keys=False))
            assert await ask(gw.config.parent / "state", "reload") == {"restart_needed": []}
            fresh = command_body("GW-001", "set_level", level="heightened")
            await send(police, CMD_TOPIC, sign(key, "platform-1", fresh))
            await wait_until(lambda: police_kinds(platform, "command_ack"), 10, "the ack")
            await wait_until(lambda: gw.status()["level"] == "heightened", 10, "the new level")

    asyncio.run(scenario())


def test_a_shop_added_by_reload_is_heard_at_once(block_broker, police_broker, start_gateway):
    """The ingest subscribes per shop: a reload that adds a shop subscribes it too."""
    gw = start_gateway()
    data = yaml.safe_load(gw.config.read_text())
    added = {**data["shops"][0], "id": "S09999", "name": "Added on reload"}
    data["shops"].append(added)
    gw.config.write_text(yaml.safe_dump(data, sort_keys=False))

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S09999"]
        ) as (panels, platform):
            assert platform is not None
            assert await ask(gw.config.parent / "state", "reload") == {"restart_needed": []}
            # The ingest reconnects to subscribe the new set: presses until one is heard.
            for _ in range(10):
                await panels["S09999"].send("panic")
                await asyncio.sleep(1)
                if police_kinds(platform, "panic"):
                    break
            assert {p["shop_id"] for p in police_kinds(platform, "panic")} == {"S09999"}

    asyncio.run(scenario())
