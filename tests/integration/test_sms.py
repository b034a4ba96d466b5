"""SMS through the modem emulator on a real pty, the gateway as a real process, real brokers."""

# ruff: noqa: RUF001 - Chinese text takes full-width punctuation

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import yaml

from tests.clients import expected_nearest, haversine_m, running, survey_rows, wait_until
from tests.field import cli_json
from tests.harness import READY_S, SURVEY, init_config
from tests.simulation import Simulation
from tests.sms import given, gsm_modem, modem_registered, sent_messages, sms_overrides, survey_phone

FAST = ("--send-s", "0.02", "--send-s-max", "0.05")
SHOP = "S00011"


def shop_row(shop_id: str) -> dict[str, str]:
    return next(r for r in survey_rows() if r["shop_id"] == shop_id)


def distance_m(a: str, b: str) -> float:
    ra, rb = shop_row(a), shop_row(b)
    return haversine_m(float(ra["lat"]), float(ra["lon"]), float(rb["lat"]), float(rb["lon"]))


def test_a_panic_texts_each_of_the_ten_nearest_shops_in_chinese(
    tmp_path, block_broker, police_broker, start_gateway
):
    """A panel's panic at S00011: one SMS to each of its 10 nearest shops' phones, nearest first, saying who, how far and how to answer."""
    with gsm_modem(tmp_path, *FAST) as (modem, link):
        gw = start_gateway(**sms_overrides(link))
        near = expected_nearest(SHOP)

        async def scenario() -> None:
            async with running(block_url=block_broker.url, shops=[SHOP]) as (panels, _):
                await modem_registered(gw)
                await panels[SHOP].send("panic")
                await wait_until(lambda: len(sent_messages(modem)) >= 10, 20, "10 SMS")

        asyncio.run(scenario())
        sent = sent_messages(modem)
        assert [s.number for s in sent] == [survey_phone(s) for s in near]
        name = shop_row(SHOP)["name"]
        for sms, neighbour in zip(sent, near, strict=True):
            assert sms.text.startswith(f"【联防】{name}求救！在您")
            assert sms.text.endswith("回1=我来，0=安全")
            metres = int(re.search(r"(\d+)米", sms.text)[1])
            assert abs(metres - distance_m(SHOP, neighbour)) <= 1
        asyncio.run(
            wait_until(lambda: gw.status()["sms"]["sent"] == 10, 10, "10 sent in the status")
        )
        assert gw.status()["sms"]["signal_dbm"] == -113 + 2 * 20
        shown = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--config", str(gw.config)],
            check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
        ).stdout  # fmt: skip
        assert "SIM READY, network home, signal -73 dBm" in shown
        assert "10 sent, 0 queued, 0 failed" in shown
        modem.send(f"report {sent[0].reference} 0")  # the network's delivery report, as +CDS
        asyncio.run(wait_until(lambda: gw.status()["sms"]["delivered"] == 1, 10, "the report"))
        [report] = [e for e in cli_json("events", gw.config) if e["kind"] == "sms"]
        assert report["shop_id"] == near[0]
        assert report["attrs"]["delivered"] is True
        [alert] = [e for e in cli_json("events", gw.config) if e["kind"] == "panic"]
        assert report["attrs"]["alert_id"] == alert["attrs"]["alert_id"]


def test_sms_9_hash_from_a_shops_phone_is_its_panic_and_1_answers_coming(
    tmp_path, block_broker, police_broker, start_gateway
):
    """A garbled PDU is dropped; a stranger's 9# raises nothing; 9# from S00011's phone is S00011's panic (10 nearest told, police told); a neighbour's 1 is 'coming'."""
    with gsm_modem(tmp_path, *FAST) as (modem, link):
        gw = start_gateway(**sms_overrides(link))
        near = expected_nearest(SHOP)
        stranger = "+8613900000000"

        async def scenario() -> None:
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=near
            ) as (panels, platform):
                assert platform is not None
                await modem_registered(gw)
                modem.send("receive-pdu 0004")  # garbled: ends inside the sender's address
                await wait_until(lambda: modem.count("DELETED") == 1, 20, "the garbled one deleted")
                modem.send(f"receive {stranger} 9#")
                await wait_until(
                    lambda: any(s.number == stranger for s in sent_messages(modem)),
                    20,
                    "the stranger answered",
                )
                modem.send(f"receive {survey_phone(SHOP)} 9#")
                await wait_until(
                    lambda: platform.by_id and all(panels[s].notices for s in near),
                    20,
                    "the panic at the police and 10 notices",
                )
                [panic] = [d for d in platform.unique if d.body["kind"] == "panic"]
                assert panic.body["shop_id"] == SHOP
                assert panic.body["device_id"] == "sms"
                alert_id = panels[near[0]].notices[0].body["alert_id"]
                modem.send(f"receive {survey_phone(near[0])} 1")
                await wait_until(
                    lambda: any(d.body["kind"] == "response" for d in platform.unique),
                    20,
                    "the response at the police",
                )
                [response] = [d for d in platform.unique if d.body["kind"] == "response"]
                assert response.body["shop_id"] == near[0]
                assert response.body["attrs"]["alert_id"] == alert_id
                assert response.body["attrs"]["response"] == "coming"
                assert response.body["attrs"]["alerted"] is True
                modem.send(f"receive {survey_phone(SHOP)} 取消")
                await wait_until(
                    lambda: any(d.body["kind"] == "cancel" for d in platform.unique),
                    20,
                    "the cancel at the police",
                )
                [cancel] = [d for d in platform.unique if d.body["kind"] == "cancel"]
                assert cancel.body["shop_id"] == SHOP
                assert cancel.body["attrs"]["alert_id"] == alert_id
                await wait_until(lambda: modem.count("DELETED") == 5, 10, "5 messages deleted")
                # 1 to the stranger, 10 alerts, 3 confirmations
                await wait_until(lambda: len(sent_messages(modem)) == 14, 20, "14 SMS")
                assert [d.body["kind"] for d in platform.unique].count("panic") == 1

        asyncio.run(scenario())
        replies = {s.number: s.text for s in sent_messages(modem)}
        assert "未登记" in replies[stranger]
        assert replies[survey_phone(SHOP)] == "【联防】已取消您的报警。"
        assert replies[survey_phone(near[0])] == "【联防】已回复：我来。"
        assert gw.status()["sms"]["unknown_senders"] == 1
        assert gw.status()["sms"]["garbled"] == 1


def test_the_modem_dropping_off_mid_queue_still_sends_every_sms_once(
    tmp_path, block_broker, police_broker, start_gateway
):
    """The modem re-enumerates after the 3rd of 10 SMS: the rest go after it is back, none twice, and its loss and return are trouble events at the police."""
    with gsm_modem(tmp_path, *FAST) as (modem, link):
        gw = start_gateway(**sms_overrides(link))
        near = expected_nearest(SHOP)

        async def scenario() -> None:
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=[SHOP]
            ) as (panels, platform):
                assert platform is not None
                await modem_registered(gw)
                await given(modem, "vanish-after 3 1.0")
                await panels[SHOP].send("panic")
                await wait_until(lambda: len(sent_messages(modem)) >= 10, 30, "10 SMS")
                await wait_until(
                    lambda: (
                        {"device_fault", "restore"}
                        <= {
                            d.body["kind"]
                            for d in platform.unique
                            if d.body["device_id"] == "link:sms"
                        }
                    ),
                    20,
                    "the modem's loss and return at the police",
                )

        asyncio.run(scenario())
        assert modem.count("GONE") == 1
        assert [s.number for s in sent_messages(modem)] == [survey_phone(s) for s in near]


def test_cms_errors_are_retried_and_a_second_alert_waits_behind_the_first(
    tmp_path, block_broker, police_broker, start_gateway
):
    """Two +CMS ERRORs delay the first SMS, not lose it; a second panic while 10 SMS wait is texted after them, nearest first."""
    with gsm_modem(tmp_path, "--send-s", "0.1", "--send-s-max", "0.2") as (modem, link):
        gw = start_gateway(**sms_overrides(link))
        other = "S00040"

        async def scenario() -> None:
            async with running(block_url=block_broker.url, shops=[SHOP, other]) as (panels, _):
                await modem_registered(gw)
                await given(modem, "fail-sends 2")
                await panels[SHOP].send("panic")
                await panels[other].send("panic")
                await wait_until(lambda: len(sent_messages(modem)) >= 20, 30, "20 SMS")
                await wait_until(
                    lambda: gw.status()["sms"]["retried"] == 2, 10, "2 retries counted"
                )

        asyncio.run(scenario())
        # Two panics in one medium cell also raise an area alert: its SMS come after these 20.
        sent = sent_messages(modem)[:20]
        first, second = expected_nearest(SHOP), expected_nearest(other)
        assert [s.number for s in sent] == [survey_phone(s) for s in first + second]
        assert all(shop_row(SHOP)["name"] in s.text for s in sent[:10])
        assert all(shop_row(other)["name"] in s.text for s in sent[10:])


def test_init_with_sms_and_sms_test_text_one_phone(tmp_path):
    """`lianfang init --sms PORT` turns texting on; `lianfang sms test --to` sends one SMS and reports the modem."""
    with gsm_modem(tmp_path, *FAST) as (modem, link):
        subprocess.run(
            [sys.executable, "-m", "gateway", "init", "--survey", str(SURVEY), "--gateway", "GW-001",
             "--dir", str(tmp_path), "--sms", str(link)],
            check=True, capture_output=True,
        )  # fmt: skip
        config = yaml.safe_load((tmp_path / "lianfang.yaml").read_text())
        assert config["sms"] == {"port": str(link)}
        assert config["neighbour_alert"]["channels"] == ["mqtt", "sms"]
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "sms", "test", "--to", "138 0013 8000",
             "--config", str(tmp_path / "lianfang.yaml")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        assert "SIM READY, network home, signal -73 dBm" in done.stdout
        assert "sent to +8613800138000" in done.stdout
        [sms] = sent_messages(modem)
        assert sms.number == "+8613800138000"
        assert sms.text == "【联防】Lianfang SMS test / 短信测试"


def test_simulate_gives_the_config_s_modem_an_emulator(tmp_path):
    """`lianfang simulate` on a config with a modem: an SMS 9# from S00030's phone reaches the police as its panic."""
    config = init_config(
        tmp_path,
        block_url="mqtt://127.0.0.1:1883",
        police_url="mqtt://127.0.0.1:1884",
        sms={"port": "/dev/ttyUSB3"},
        neighbour_alert={"channels": ["mqtt", "sms"]},
    )
    with Simulation(config) as sim:
        sim.send(f"sms receive {survey_phone('S00030')} 9#")
        sim.expect("POLICE panic S00030/sms -", READY_S)
        sim.quit()


def test_losing_the_network_is_trouble_and_the_sms_wait_for_it(
    tmp_path, block_broker, police_broker, start_gateway
):
    """With the network gone the SMS are refused: the loss reaches the police as trouble, and when it is back every SMS goes once."""
    with gsm_modem(tmp_path, *FAST) as (modem, link):
        gw = start_gateway(**sms_overrides(link))

        def network_events(kind: str, platform) -> list:
            return [
                d
                for d in platform.unique
                if d.body["device_id"] == "link:sms-network" and d.body["kind"] == kind
            ]

        async def scenario() -> None:
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=[SHOP]
            ) as (panels, platform):
                assert platform is not None
                await modem_registered(gw)
                await given(modem, "network off")
                await panels[SHOP].send("panic")
                await wait_until(
                    lambda: network_events("device_fault", platform), 20, "the loss at the police"
                )
                assert not sent_messages(modem)
                await given(modem, "network on")
                await wait_until(lambda: len(sent_messages(modem)) >= 10, 30, "10 SMS")
                await wait_until(
                    lambda: network_events("restore", platform), 20, "the return at the police"
                )

        asyncio.run(scenario())
        assert [s.number for s in sent_messages(modem)] == [
            survey_phone(s) for s in expected_nearest(SHOP)
        ]
