"""Two gateways, each with its own block broker, meeting on one police broker."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

from firmware_stubs.mqtt_panel import ShopPanel
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from tests.clients import expected_nearest, running, survey_rows, wait_until
from tests.harness import SURVEY, TestGateway, init_config


def split_survey(folder: Path) -> tuple[Path, dict[str, str]]:
    """The Changping sheet with the south side of the road served by a second gateway, GW-002."""
    rows = survey_rows()
    gateway_of = {r["shop_id"]: "GW-001" if r["side"] == "N" else "GW-002" for r in rows}
    out = folder / "split.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "gateway_id": gateway_of[r["shop_id"]]} for r in rows)
    assert SURVEY.exists()
    return out, gateway_of


def split_gateway(
    tmp_path: Path,
    gid: str,
    *,
    block_url: str,
    police_url: str,
    survey: Path,
    gateway_process: list[TestGateway],
) -> TestGateway:
    """Gateway ``gid`` of the split survey on its block broker (not started; killed at the end)."""
    folder = tmp_path / gid
    folder.mkdir()
    config = init_config(
        folder, block_url=block_url, police_url=police_url, survey=survey, gateway=gid
    )
    gw = TestGateway(config)
    gateway_process.append(gw)
    return gw


def test_a_panic_at_the_edge_of_one_block_alerts_the_next_blocks_shops_exactly_once(
    tmp_path, block_broker, police_broker, gateway_process
):
    """Each of S00011's 10 nearest shops gets exactly one notice, GW-002's through the police.

    S00011 is on the north side (GW-001); some of its nearest are south-side shops (GW-002).
    """
    survey, gateway_of = split_survey(tmp_path)
    expected = expected_nearest("S00011")
    assert {gateway_of[s] for s in expected} == {"GW-001", "GW-002"}
    with Mosquitto(workdir=tmp_path / "block2-dir") as block2:
        for gid, block in (("GW-001", block_broker), ("GW-002", block2)):
            split_gateway(
                tmp_path,
                gid,
                block_url=block.url,
                police_url=police_broker.url,
                survey=survey,
                gateway_process=gateway_process,
            ).start()

        async def scenario() -> None:
            north = [s for s, g in gateway_of.items() if g == "GW-001"]
            south = [s for s, g in gateway_of.items() if g == "GW-002"]
            far = {s: ShopPanel(BrokerConfig(url=block2.url), s) for s in south}
            async with (
                running(block_url=block_broker.url, shops=north) as (panels, _),
                asyncio.TaskGroup() as tg,
            ):
                tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in far.items()]
                for p in far.values():
                    await asyncio.wait_for(p.ready.wait(), 10)
                everyone = {**panels, **far}
                await panels["S00011"].send("panic")
                await wait_until(
                    lambda: all(everyone[s].notices for s in expected), 10, "all 10 notices"
                )
                await asyncio.sleep(1.0)  # room for a looped or repeated notice to arrive
                got = {s: len(p.notices) for s, p in everyone.items() if p.notices}
                assert got == dict.fromkeys(expected, 1)
                ids = {everyone[s].notices[0].body["alert_id"] for s in expected}
                assert len(ids) == 1
                for s in expected:
                    assert everyone[s].notices[0].body["from_shop_id"] == "S00011"
                for t in tasks:
                    t.cancel()

        asyncio.run(scenario())


def test_without_a_police_broker_the_nearest_are_this_gateways_own_shops(tmp_path):
    """No mesh to reach GW-002: S00011's 10 are the nearest 10 of GW-001, none of GW-002."""
    import json  # noqa: PLC0415

    from typer.testing import CliRunner  # noqa: PLC0415

    from gateway.cli.main import app  # noqa: PLC0415

    survey, gateway_of = split_survey(tmp_path)
    event = '{"shop_id":"S00011","kind":"panic"}'
    shops = {}
    for name, police in (("meshed", "mqtt://127.0.0.1:2"), ("alone", None)):
        folder = tmp_path / name
        folder.mkdir()
        config = init_config(folder, block_url="mqtt://127.0.0.1:1", police_url=police,
                             survey=survey)  # fmt: skip
        args = ["rules", "test", "--config", str(config), "--event", event, "--json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        shops[name] = json.loads(result.output)["fires"][0]["shops"]
    assert shops["meshed"] == expected_nearest("S00011")
    north = [s for s in expected_nearest("S00011", count=100) if gateway_of[s] == "GW-001"]
    assert shops["alone"] == north[:10]
