"""Two gateways, each with its own block broker, meeting on one police broker.

Every mesh notice is signed by its sending gateway (Ed25519); the keys are made
by `lianfang keys mesh` and named in each config by `lianfang init --mesh-keys`.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_commands import send
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
    mesh_keys: Path | None = None,
) -> TestGateway:
    """Gateway ``gid`` of the split survey on its block broker (not started; killed at the end)."""
    folder = tmp_path / gid
    folder.mkdir()
    config = init_config(
        folder,
        block_url=block_url,
        police_url=police_url,
        survey=survey,
        gateway=gid,
        mesh_keys=mesh_keys,
    )
    gw = TestGateway(config)
    gateway_process.append(gw)
    return gw


def make_mesh_keys(folder: Path, *gateways: str) -> Path:
    """`lianfang keys mesh` for each gateway, into one folder."""
    for gid in gateways:
        subprocess.run(
            [sys.executable, "-m", "gateway", "keys", "mesh", "--gateway", gid, "--out", str(folder)],
            check=True, capture_output=True,
        )  # fmt: skip
    return folder


def test_a_panic_at_the_edge_of_one_block_alerts_the_next_blocks_shops_exactly_once(
    tmp_path, block_broker, police_broker, gateway_process
):
    """Each of S00011's 10 nearest shops gets exactly one notice, GW-002's through the police.

    S00011 is on the north side (GW-001); some of its nearest are south-side shops (GW-002).
    """
    survey, gateway_of = split_survey(tmp_path)
    expected = expected_nearest("S00011")
    assert {gateway_of[s] for s in expected} == {"GW-001", "GW-002"}
    keys = make_mesh_keys(tmp_path / "keys", "GW-001", "GW-002")
    with Mosquitto(workdir=tmp_path / "block2-dir") as block2:
        for gid, block in (("GW-001", block_broker), ("GW-002", block2)):
            split_gateway(
                tmp_path,
                gid,
                block_url=block.url,
                police_url=police_broker.url,
                survey=survey,
                gateway_process=gateway_process,
                mesh_keys=keys,
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


def signed(
    key: Ed25519PrivateKey,
    sender: str,
    *,
    to: str = "GW-001",
    alert_id: str = "A-1",
    issued_at: datetime | None = None,
    nonce: str = "nonce-0001",
    shop: str = "S00001",
) -> bytes:
    """A mesh message as DESIGN's signed-command envelope carries it, built here by hand."""
    message = {
        "alert_id": alert_id,
        "from_gateway": sender,
        "notices": [{"shop_id": shop, "notice": {"alert_id": alert_id, "from_shop_id": "S00100"}}],
    }
    body = json.dumps(
        {
            "to_gateway": to,
            "nonce": nonce,
            "issued_at": (issued_at or datetime.now(UTC)).isoformat(),
            "message": message,
        }
    )
    signature = base64.b64encode(key.sign(body.encode())).decode()
    return json.dumps({"key_id": sender, "body": body, "signature": signature}).encode()


def test_only_a_fresh_notice_signed_by_a_known_gateway_is_relayed(
    tmp_path, block_broker, police_broker, start_gateway
):
    """GW-002's signed notice reaches S00001 once; the rest are refused, counted, and harmless."""
    survey, _ = split_survey(tmp_path)
    keys = make_mesh_keys(tmp_path / "keys", "GW-001", "GW-002")
    gw = start_gateway(survey=survey, mesh_keys=keys, status_interval_s=0.2)
    assert yaml.safe_load(gw.config.read_text())["other_gateways"] == {
        "GW-002": str(keys / "GW-002.pub")
    }
    gw002 = load_pem_private_key((keys / "GW-002.key").read_bytes(), password=None)
    assert isinstance(gw002, Ed25519PrivateKey)
    stranger = Ed25519PrivateKey.generate()
    good = signed(gw002, "GW-002")
    unsigned = json.loads(good)
    del unsigned["signature"]
    refused = [
        (good, "replayed"),
        (json.dumps(unsigned).encode(), "unsigned"),
        (signed(stranger, "GW-002", nonce="nonce-0002"), "bad_signature"),
        (signed(stranger, "GW-999", nonce="nonce-0003"), "unknown_gateway"),
        (signed(gw002, "GW-002", to="GW-003", nonce="nonce-0004"), "wrong_gateway"),
        (
            signed(
                gw002,
                "GW-002",
                nonce="nonce-0005",
                issued_at=datetime.now(UTC) - timedelta(hours=1),
            ),
            "expired",
        ),
        (b"\xff\xfe", "invalid"),
    ]
    police = BrokerConfig(url=police_broker.url)
    topic = "police/v1/L1/mesh/GW-001/notify"
    north = [
        s
        for s in expected_nearest("S00011")
        if s in {r["shop_id"] for r in survey_rows() if r["side"] == "N"}
    ]

    async def scenario() -> None:
        async with running(block_url=block_broker.url, shops=["S00001", "S00011", *north]) as (
            panels,
            _,
        ):
            await send(police, topic, good)
            await wait_until(lambda: bool(panels["S00001"].notices), 10, "the signed notice")
            for payload, _ in refused:
                await send(police, topic, payload)
            want = {f"mesh.{reason}": 1 for _, reason in refused}
            await wait_until(lambda: gw.status()["rejected"] == want, 10, f"refusals {want}")
            assert gw.status()["mesh_notices_relayed"] == 1
            command = [sys.executable, "-m", "gateway", "status", "--config", str(gw.config)]
            shown = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, check=False,
                env={**os.environ, "COLUMNS": "200"},
            )  # fmt: skip
            for _, reason in refused:
                assert f"rejected mesh.{reason}" in shown.stdout, shown.stdout
            assert [n.body["alert_id"] for n in panels["S00001"].notices] == ["A-1"]
            # The panic path is untouched: S00011's own-side neighbours are alerted.
            await panels["S00011"].send("panic")
            await wait_until(
                lambda: all(panels[s].notices for s in north), 10, "the panic's notices"
            )
            # A restart forgets nothing: the good message replayed now is still a replay.
            assert gw.stop() == 0
            gw.start()
            await send(police, topic, good)
            await wait_until(
                lambda: gw.status()["rejected"] == {"mesh.replayed": 1}, 10, "the replay refused"
            )
            assert [n.body["alert_id"] for n in panels["S00001"].notices] == ["A-1"]

    asyncio.run(scenario())


def test_check_refuses_a_mesh_key_every_user_may_read(tmp_path):
    """`keys mesh` writes the private key mode 600; `check` refuses it once it is world-readable."""
    survey, _ = split_survey(tmp_path)
    keys = make_mesh_keys(tmp_path / "keys", "GW-001", "GW-002")
    assert (keys / "GW-001.key").stat().st_mode & 0o777 == 0o600
    config = init_config(tmp_path, block_url="mqtt://127.0.0.1:1", police_url="mqtt://127.0.0.1:2",
                         survey=survey, mesh_keys=keys)  # fmt: skip

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "check", "--config", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert check().returncode == 0, check().stdout + check().stderr
    (keys / "GW-001.key").chmod(0o644)
    refused = check()
    assert refused.returncode != 0
    assert "gateway.mesh_key_file" in refused.stdout + refused.stderr
    assert "chmod 600" in refused.stdout + refused.stderr
    (keys / "GW-002.pub").unlink()  # a neighbour's public key not yet in place
    (keys / "GW-001.key").chmod(0o600)
    missing = check()
    assert missing.returncode != 0
    assert f"no such file: {keys / 'GW-002.pub'}" in missing.stdout + missing.stderr
