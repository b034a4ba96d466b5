"""`lianfang broker-config` against a real Mosquitto that runs exactly the generated files.

The broker's main config is what Debian's is in spirit: a few global lines and
``include_dir`` of the generated folder, so ``lianfang.conf`` is read as an
installer's ``/etc/mosquitto/conf.d/`` include would be.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from firmware_stubs.police_commands import command_body, new_key, send, sign
from firmware_stubs.police_platform import PolicePlatform
from gateway.config.broker_access import mosquitto_hash
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto, free_port
from tests.certs import make_pki
from tests.clients import expected_nearest, running, survey_rows, wait_until
from tests.harness import READY_S, TestGateway, init_config
from tests.integration.test_mesh import make_mesh_keys, signed, split_survey

NOT_AUTHORIZED = 0x87
ACCEPTED = {0x00, 0x10}  # success, or "no matching subscribers" (also a success)


def broker_config(config: Path, out: Path, port: int, *extra: str | Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "broker-config",
            "--config",
            str(config),
            "--out",
            str(out),
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def passwords(out: Path) -> dict[str, str]:
    with (out / "credentials.csv").open(newline="") as f:
        return {row["username"]: row["password"] for row in csv.DictReader(f)}


RELOADED = "Reloading config."


class Broker(Mosquitto):
    """Mosquitto running exactly the files in ``out`` (``include_dir``), started at once."""

    def __init__(self, out: Path, port: int) -> None:
        super().__init__(
            port=port,
            workdir=out.parent / f"mosquitto-{out.name}",
            include_dir=out,
            settings=("log_type information",),  # says "Reloading config." on SIGHUP
        )
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto rereads its password file and ACL; wait until it has.

        It logs the reload from its one loop before it takes a connection again,
        so a client that connects after the line sees the new files.
        """
        assert self.process is not None
        log = self.workdir / "mosquitto.log"
        before = log.read_text(errors="replace").count(RELOADED)
        os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + READY_S
        while log.read_text(errors="replace").count(RELOADED) == before:
            assert time.monotonic() < deadline, f"no {RELOADED!r} from Mosquitto in {READY_S} s"
            time.sleep(0.02)


class Probe:
    """A bare MQTT 5 client that reports the broker's reason codes."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        tls: ssl.SSLContext | None = None,
        wait_s: float = 5,
    ) -> None:
        self.connack: queue.Queue[int] = queue.Queue()
        self.acks: dict[int, int] = {}
        self.granted: list[int] = []
        self.received: list[tuple[str, bytes]] = []
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"probe-{username}-{time.monotonic_ns()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.granted.extend(
            rc.value for rc in rcs
        )
        self.client.on_message = lambda _c, _u, msg: self.received.append((msg.topic, msg.payload))
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        try:
            self.code: int | None = self.connack.get(timeout=wait_s)
        except queue.Empty:
            self.code = None  # no CONNACK at all

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.01)
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> None:
        before = len(self.granted)
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while len(self.granted) == before:
            assert time.monotonic() < deadline, f"no SUBACK for {topic}"
            time.sleep(0.01)

    def wait_for_message(self, what: str, timeout_s: float = 10) -> tuple[str, bytes]:
        """The first message received, waited for up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.received:
            assert time.monotonic() < deadline, f"no message: {what}"
            time.sleep(0.01)
        return self.received[0]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def secured(tmp_path: Path, police_broker) -> Iterator[tuple[Path, Path, Broker]]:
    """Changping Road's config, broker-config run on it, and Mosquitto on exactly those files."""
    port = free_port()
    config = init_config(
        tmp_path, block_url=f"mqtt://127.0.0.1:{port}", police_url=police_broker.url
    )
    out = tmp_path / "broker"
    broker_config(config, out, port)
    broker = Broker(out, port)
    yield config, out, broker
    broker.stop()


def test_own_panic_reaches_neighbours_and_police_and_nothing_else_gets_through(
    secured, police_broker, gateway_process
):
    """Shop A alarms its 10 nearest and the police; B's topics, notices and anonymous users are refused."""
    config, out, broker = secured
    gw = TestGateway(config)
    gateway_process.append(gw)
    gw.start()  # logs in with the password file broker-config set in lianfang.yaml
    pw = passwords(out)
    a, near = "S00011", expected_nearest("S00011")
    b = near[0]

    async def scenario() -> None:
        async with running(
            block_url=f"mqtt://127.0.0.1:{broker.port}",
            police_url=police_broker.url,
            shops=[a, *near],
            passwords=pw,
        ) as (panels, platform):
            assert platform is not None
            probe = Probe(broker.port, a, pw[a])  # shop A's own credentials, misused
            try:
                assert probe.code == 0
                probe.subscribe(f"lianfang/v1/shop/{b}/notify")
                forged = b'{"device_id": "panel-1", "kind": "panic", "seq": 1}'
                assert probe.publish(f"lianfang/v1/shop/{b}/event", forged) == NOT_AUTHORIZED
                assert probe.publish(f"lianfang/v1/shop/{b}/response", b"{}") == NOT_AUTHORIZED
                assert probe.publish(f"lianfang/v1/shop/{b}/notify", b"{}") == NOT_AUTHORIZED
                assert probe.publish("lianfang/v1/gateway/GW-001/status", b"x") == NOT_AUTHORIZED
                await panels[a].send("panic", zone="1")
                await wait_until(
                    lambda: all(panels[s].notices for s in near) and bool(platform.by_id),
                    10,
                    "10 notices and the police event",
                )
                await asyncio.sleep(0.5)  # room for a forged event or stray notice to arrive
                assert {s for s, p in panels.items() if p.notices} == set(near)
                assert len(panels[b].notices) == 1  # the real one; the forged notify never came
                assert [d.body["shop_id"] for d in platform.unique] == [a]
                assert probe.received == []  # A never reads B's notices
            finally:
                probe.close()

    asyncio.run(scenario())
    anonymous = Probe(broker.port, None, None)
    wrong = Probe(broker.port, a, "not-the-password")
    assert anonymous.code == NOT_AUTHORIZED
    assert wrong.code != 0
    anonymous.close()
    wrong.close()


def test_a_shop_reads_the_gateways_retained_status(secured, gateway_process):
    """DESIGN: the gateway's status is for all; a shop's panel may read it, not write it."""
    config, out, broker = secured
    gw = TestGateway(config)
    gateway_process.append(gw)
    gw.start()
    shop = Probe(broker.port, "S00001", passwords(out)["S00001"])
    try:
        assert shop.code == 0
        shop.subscribe("lianfang/v1/gateway/GW-001/status")
        assert shop.granted == [1]
        topic, payload = shop.wait_for_message("the gateway's retained status")
        assert topic == "lianfang/v1/gateway/GW-001/status"
        status = json.loads(payload)
        assert (status["state"], status["gateway_id"]) == ("online", "GW-001")
        assert shop.publish("lianfang/v1/gateway/GW-001/status", b"x") == NOT_AUTHORIZED
    finally:
        shop.close()


def _drop_shop(config: Path, shop: str) -> dict[str, Any]:
    data = yaml.safe_load(config.read_text())
    [entry] = [s for s in data["shops"] if s["id"] == shop]
    data["shops"].remove(entry)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return entry


def test_rerun_keeps_passwords_adds_and_removes_shops_and_rotates(secured):
    """A new shop gets a login, a removed one loses it after SIGHUP, the rest keep theirs."""
    config, out, broker = secured
    before = passwords(out)
    gateway_password = (out / "gateway.password").read_text()
    removed = _drop_shop(config, "S00002")
    data = yaml.safe_load(config.read_text())
    data["shops"].append({**removed, "id": "S09999"})  # a new shop, at the removed one's place
    config.write_text(yaml.safe_dump(data, sort_keys=False))

    assert "1 new" in broker_config(config, out, broker.port)
    after = passwords(out)
    assert set(after) == set(before) - {"S00002"} | {"S09999"}
    assert all(after[s] == before[s] for s in after if s != "S09999")
    assert (out / "gateway.password").read_text() == gateway_password
    old = Probe(broker.port, "S00002", before["S00002"])
    assert old.code == 0  # the broker has not reread its files yet
    old.close()

    broker.reload()
    gone = Probe(broker.port, "S00002", before["S00002"])
    new = Probe(broker.port, "S09999", after["S09999"])
    kept = Probe(broker.port, "S00001", after["S00001"])
    try:
        assert gone.code == NOT_AUTHORIZED
        assert new.code == 0
        assert new.publish("lianfang/v1/shop/S09999/event") in ACCEPTED
        assert new.publish("lianfang/v1/shop/S00001/event") == NOT_AUTHORIZED
        assert kept.code == 0
    finally:
        for p in (gone, new, kept):
            p.close()

    broker_config(config, out, broker.port, "--rotate", "S00001")
    rotated = passwords(out)
    assert rotated["S00001"] != after["S00001"]
    assert all(rotated[s] == after[s] for s in rotated if s != "S00001")
    broker.reload()
    stale = Probe(broker.port, "S00001", after["S00001"])
    fresh = Probe(broker.port, "S00001", rotated["S00001"])
    assert (stale.code, fresh.code) == (NOT_AUTHORIZED, 0)
    stale.close()
    fresh.close()


def check_online(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--online", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_online_warns_of_a_block_broker_open_to_anyone(tmp_path, block_broker, police_broker):
    """A stock block broker is reached (exit 0) with one warning; the police broker is not the block's."""
    config = init_config(tmp_path, block_url=block_broker.url, police_url=police_broker.url)
    checked = check_online(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("accepts clients with no login") == 1
    assert "lianfang broker-config" in checked.stdout


def test_check_online_is_quiet_on_the_secured_broker(secured):
    config, _, _ = secured
    checked = check_online(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no login" not in checked.stdout
    assert "reached, MQTT 5.0" in checked.stdout


def test_tls_listener(tmp_path):
    """--tls-cert/--tls-key make the listener TLS: a shop logs in over it; plain text is refused."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    config = init_config(tmp_path, block_url=f"mqtt://127.0.0.1:{port}", police_url=None)
    out = tmp_path / "broker"
    tls = ("--tls-cert", pki.server_cert, "--tls-key", pki.server_key)
    broker_config(config, out, port, *tls, "--no-edit")
    broker = Broker(out, port)
    try:
        shop = passwords(out)["S00001"]
        context = ssl.create_default_context(cafile=str(pki.ca))
        probe = Probe(port, "S00001", shop, tls=context)
        assert probe.code == 0
        assert probe.publish("lianfang/v1/shop/S00001/event") in ACCEPTED
        probe.close()
        plain = Probe(port, "S00001", shop, wait_s=2)
        plain.close()
        assert plain.code is None  # the TLS listener never answers plain MQTT
    finally:
        broker.stop()


def police_acl(config: Path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "police-acl", "--config", str(config), *extra],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _gateway_on_police(config: Path, password: str, block_url: str, commands_key: str) -> Path:
    """GW-001 logs in to the police broker as its id; it trusts ``commands_key`` for commands."""
    password_file = config.parent / "police.password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    data = yaml.safe_load(config.read_text())
    [police] = [f for f in data["forwarders"] if f["kind"] == "police_mqtt"]
    police["broker"] |= {"username": "GW-001", "password_file": str(password_file)}
    data["broker"]["url"] = block_url
    data["commands"] = {"keys": {"platform-1": commands_key}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@pytest.fixture
def police_acl_broker(tmp_path: Path) -> Iterator[tuple[Broker, dict[str, str], dict[str, Path]]]:
    """A police Mosquitto whose ACL is `police-acl` of GW-001 and GW-002 plus the platform's user.

    GW-001 serves the north side of Changping Road, GW-002 the south: each sends
    the other the notices of its shops' nearest across the road.
    """
    survey, _ = split_survey(tmp_path)
    keys = make_mesh_keys(tmp_path / "keys", "GW-001", "GW-002")
    port = free_port()
    configs = {}
    for gid in ("GW-001", "GW-002"):
        folder = tmp_path / gid
        folder.mkdir()
        configs[gid] = init_config(
            folder,
            block_url="mqtt://127.0.0.1:1",
            police_url=f"mqtt://127.0.0.1:{port}",
            survey=survey,
            gateway=gid,
            mesh_keys=keys,
        )
    pw = {user: f"{user}-{os.urandom(8).hex()}" for user in ("GW-001", "GW-002", "platform")}
    police = tmp_path / "police"
    police.mkdir()
    (police / "passwd").write_text(
        "".join(f"{user}:{mosquitto_hash(p)}\n" for user, p in pw.items())
    )
    platform = "user platform\ntopic read police/v1/+/+/events\ntopic write police/v1/+/+/cmd\n"
    acl = police_acl(configs["GW-001"]) + police_acl(configs["GW-002"]) + platform
    (police / "acl").write_text(acl)
    (police / "police.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {police / 'passwd'}\nacl_file {police / 'acl'}\n"
    )
    broker = Broker(police, port)
    yield broker, pw, configs
    broker.stop()


def test_police_acl_lets_a_gateway_use_its_own_topics_only(
    police_acl_broker, block_broker, gateway_process
):
    """On a police broker with the generated ACL, GW-001 forwards, obeys, relays; no more."""
    broker, pw, configs = police_acl_broker
    keys = configs["GW-001"].parent.parent / "keys"
    key, public = new_key()
    config = _gateway_on_police(configs["GW-001"], pw["GW-001"], block_broker.url, public)
    gw = TestGateway(config)
    gateway_process.append(gw)
    gw.start()
    police_url = f"mqtt://127.0.0.1:{broker.port}"
    platform_login = BrokerConfig(
        url=police_url, username="platform", password=SecretStr(pw["platform"])
    )
    # S00011's nearest on its own side, and S00001, which the test's mesh notice is for.
    panels_for = {"S00011", "S00001", *(s for s in expected_nearest("S00011") if s in _north())}

    async def scenario() -> None:
        platform = PolicePlatform(platform_login, client_id="platform")
        other = Probe(broker.port, "GW-002", pw["GW-002"])  # the neighbouring gateway
        rogue = Probe(broker.port, "GW-001", pw["GW-001"])  # GW-001's login, misused
        try:
            other.subscribe("police/v1/L1/mesh/GW-002/notify")
            assert other.granted == [1]
            async with (
                running(block_url=block_broker.url, shops=sorted(panels_for)) as (panels, _),
                asyncio.TaskGroup() as tg,
            ):
                task = tg.create_task(platform.run(), name="platform")
                await asyncio.wait_for(platform.ready.wait(), 10)
                await panels["S00011"].send("panic")
                await wait_until(lambda: bool(platform.by_id), 10, "the panic at the police")
                # GW-001 sent GW-002 the notices of its shops among S00011's nearest.
                topic, _ = await asyncio.to_thread(other.wait_for_message, "GW-001's mesh notice")
                assert topic == "police/v1/L1/mesh/GW-002/notify"

                # GW-001's login reads its own commands, never another gateway's.
                rogue.subscribe("police/v1/L1/GW-002/cmd")
                rogue.subscribe("police/v1/L1/GW-001/cmd")
                await send(platform_login, "police/v1/L1/GW-002/cmd", b"{}")
                body = command_body("GW-001", "set_level", level="heightened")
                await send(platform_login, "police/v1/L1/GW-001/cmd", sign(key, "platform-1", body))
                # Delivered in the broker's order: had the first been readable, it came first.
                topic, _ = await asyncio.to_thread(rogue.wait_for_message, "GW-001's command")
                assert topic == "police/v1/L1/GW-001/cmd"
                await wait_until(
                    lambda: any(d.body["kind"] == "command_ack" for d in platform.unique),
                    10,
                    "the command's acknowledgement",
                )

                gw002 = load_pem_private_key((keys / "GW-002.key").read_bytes(), None)
                assert isinstance(gw002, Ed25519PrivateKey)
                notice = signed(gw002, "GW-002", shop="S00001")
                assert other.publish("police/v1/L1/mesh/GW-001/notify", notice) in ACCEPTED
                await wait_until(lambda: bool(panels["S00001"].notices), 10, "the relayed notice")

                for topic in (
                    "police/v1/L1/GW-002/events",  # another gateway's events
                    "police/v1/L1/GW-002/status",
                    "police/v1/L1/GW-001/cmd",  # a command to itself
                    "police/v1/L1/mesh/GW-001/notify",  # a notice to itself
                ):
                    assert rogue.publish(topic, b"{}") == NOT_AUTHORIZED, topic
                assert [
                    d.body["shop_id"] for d in platform.unique if d.body["kind"] == "panic"
                ] == ["S00011"]
                task.cancel()
        finally:
            other.close()
            rogue.close()

    asyncio.run(scenario())


def _north() -> set[str]:
    return {r["shop_id"] for r in survey_rows() if r["side"] == "N"}
