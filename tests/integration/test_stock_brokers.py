"""The panic path on brokers as installers have them, not only as we would tune them.

Each case runs the real daemon against a Mosquitto in one configuration a
street block or a police platform really has: the stock one (a listener only:
Receive Maximum 20, 1,000 queued messages), Receive Maximum 1, 20 and
unlimited, no retained messages, a small maximum packet size, and the
machine's own Mosquitto on 127.0.0.1:1883 when one runs there (that is the
broker an installer has; else a private stock one stands in). Brokers that
cannot carry alarms (QoS 0 only, MQTT 3.1.1 only) are refused in one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.limits import BrokerUnsuitable, PacketTooLarge, publish_packet_size
from gateway.mqtt.link import MqttLink
from lab.broker import Mosquitto, free_port, terminate
from tests.clients import expected_nearest, running, wait_until
from tests.harness import TestGateway, init_config

MACHINE_BROKER = ("127.0.0.1", 1883)

BROKER_CASES = {
    "stock": (),
    "receive-maximum-1": ("max_inflight_messages 1",),
    "receive-maximum-20": ("max_inflight_messages 20",),
    "receive-maximum-unlimited": ("max_inflight_messages 0",),
    "no-retain": ("retain_available false",),
}


def lianfang(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the installer's command line as a user would, output captured (wide, for tables)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def _machine_broker_up() -> bool:
    try:
        socket.create_connection(MACHINE_BROKER, timeout=0.5).close()
    except OSError:
        return False
    return True


def _purge_sessions(url: str, client_ids: list[str]) -> None:
    """End persistent sessions we left on a broker that outlives the test (clean start, expiry 0)."""
    config = BrokerConfig(url=url)
    for client_id in client_ids:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        with contextlib.suppress(OSError):
            client.connect(config.host, config.port, clean_start=True)
            client.loop(0.5)
            client.disconnect()


def _panic_reaches_neighbours_and_police(block_url: str, police_url: str, *, burst: int) -> None:
    """Panic at S00011 after ``burst`` door events: the 10 nearest and the police get it."""
    expected = expected_nearest("S00011")

    async def scenario() -> None:
        async with running(
            block_url=block_url,
            police_url=police_url,
            shops=["S00011", "S00012", *expected],
        ) as (panels, platform):
            assert platform is not None
            # Many events at once: more than the broker's Receive Maximum must wait their turn.
            for i in range(burst):
                await panels["S00012"].send("door_open" if i % 2 else "door_close")
            await panels["S00011"].send("panic", zone="1")
            await wait_until(
                lambda: all(panels[s].notices for s in expected)
                and any(d.body["kind"] == "panic" for d in platform.unique)
                and len(platform.by_id) >= burst + 1,
                20,
                "10 notices, the panic and every door event at the police",
            )
            panic = next(d for d in platform.unique if d.body["kind"] == "panic")
            assert panic.body["shop_id"] == "S00011"
            for shop in expected:
                assert panels[shop].notices[0].body["event_id"] == panic.body["id"]

    asyncio.run(scenario())


@pytest.mark.parametrize("case", list(BROKER_CASES))
def test_panic_path_on_broker_configurations(tmp_path, gateway_process, case):
    """On stock Mosquitto and at Receive Maximum 1, 20 and unlimited, a panic reaches its 10 nearest and the police."""
    settings = BROKER_CASES[case]
    with (
        Mosquitto(workdir=tmp_path / "block", settings=settings) as block,
        Mosquitto(workdir=tmp_path / "police", settings=settings, persistent=True) as police,
    ):
        gw = TestGateway(init_config(tmp_path / "gw", block_url=block.url, police_url=police.url))
        gateway_process.append(gw)
        gw.start()
        _panic_reaches_neighbours_and_police(block.url, police.url, burst=60)
        log = gw.log_text()
        assert " down: " not in log, log[-2000:]
        if case == "no-retain":
            assert "does not support retained messages" in log or "no retained messages" in log


@pytest.fixture
def machine_or_stock_broker(tmp_path: Path) -> Iterator[str]:
    """The machine's own Mosquitto on 127.0.0.1:1883 when it runs; else a private stock one."""
    if _machine_broker_up():
        yield "mqtt://127.0.0.1:1883"
        return
    with Mosquitto(workdir=tmp_path / "stand-in") as broker:
        yield broker.url


def test_panic_path_on_the_machines_own_broker(tmp_path, gateway_process, machine_or_stock_broker):
    """With block and police links on the broker an installer has (127.0.0.1:1883), a panic gets through."""
    url = machine_or_stock_broker
    # A gateway id of our own, so a shared broker's other users are not disturbed.
    gid = "GW-001"
    config = init_config(tmp_path / "gw", block_url=url, police_url=url, gateway=gid)
    gw = TestGateway(config)
    gateway_process.append(gw)
    platform_id = f"police-platform-{uuid.uuid4().hex[:8]}"
    try:
        gw.start()

        async def scenario() -> None:
            expected = expected_nearest("S00011")
            async with running(
                block_url=url, police_url=url, shops=["S00011", *expected], platform_id=platform_id
            ) as (panels, platform):
                assert platform is not None
                await panels["S00011"].send("panic", note=uuid.uuid4().hex)
                await wait_until(
                    lambda: all(panels[s].notices for s in expected)
                    and any(d.body["kind"] == "panic" for d in platform.unique),
                    20,
                    "10 notices and the police event",
                )

        asyncio.run(scenario())
    finally:
        gw.kill()
        names = ["shops", "responses", "cmd", "mesh", "police", "notify"]
        _purge_sessions(url, [f"lianfang-{gid}-{n}" for n in names] + [platform_id])


def _gateway_on(tmp_path: Path, gateway_process: list[TestGateway], block: str, police: str) -> TestGateway:
    gw = TestGateway(init_config(tmp_path / "gw", block_url=block, police_url=police))
    gateway_process.append(gw)
    gw.start()
    return gw


def test_event_over_the_packet_size_goes_without_its_attrs_in_its_place(tmp_path, gateway_process):
    """Over the police broker's maximum packet size, a panic goes trimmed of its attrs, before the next one."""
    with (
        Mosquitto(workdir=tmp_path / "block") as block,
        Mosquitto(workdir=tmp_path / "police", settings=("max_packet_size 2000",)) as police,
    ):
        gw = _gateway_on(tmp_path, gateway_process, block.url, police.url)

        async def scenario() -> None:
            async with running(
                block_url=block.url, police_url=police.url, shops=["S00011"]
            ) as (panels, platform):
                assert platform is not None
                bulky = {f"note{i}": "x" * 120 for i in range(16)}
                await panels["S00011"].send("panic", zone="1", **bulky)
                await panels["S00011"].send("panic", zone="2")
                await wait_until(lambda: len(platform.unique) >= 2, 15, "both panics")
                first, second = (d.body for d in platform.unique[:2])
                assert (first["zone"], second["zone"]) == ("1", "2")
                assert "trimmed" in first["attrs"]
                assert "note0" not in first["attrs"]
                assert first["shop"]["name"]

        asyncio.run(scenario())
        log = gw.log_text()
        assert "sent without its attrs" in log
        assert " down: " not in log


@contextlib.asynccontextmanager
async def connected_link(url: str, client_id: str) -> AsyncIterator[MqttLink]:
    """A clean-session link to ``url``, kept alive by its ``watch`` while the block runs."""
    link = MqttLink(BrokerConfig(url=url), client_id=client_id, persistent=False)
    async with link, asyncio.TaskGroup() as tg:
        watch = tg.create_task(link.watch())
        yield link
        watch.cancel()


def test_link_honours_receive_maximum_one(tmp_path):
    """With Receive Maximum 1, 50 publishes at once all get their PUBACK and arrive in call order."""

    async def scenario(url: str) -> list[int]:
        port = int(url.rsplit(":", 1)[1])
        async with aiomqtt.Client("127.0.0.1", port, identifier="rm1-sub") as sub:
            await sub.subscribe("t/#", qos=1)
            async with connected_link(url, "rm1") as link:
                assert link.limits.receive_maximum == 1
                outcomes = [link.publish(f"t/{i}", b"x") for i in range(50)]
                assert (link.in_flight, link.waiting) == (1, 49)
                # Mosquitto does not enforce Receive Maximum on what it receives, so
                # the window is checked here, on every turn of the loop until done.
                peak = 0
                while not all(o.done() for o in outcomes):
                    peak = max(peak, link.in_flight)
                    await asyncio.sleep(0)
                assert peak == 1
                await asyncio.wait_for(asyncio.gather(*outcomes), 10)
            got: list[int] = []
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    got.append(int(message.topic.value.split("/")[1]))
                    if len(got) == 50:
                        return got
        return got

    with Mosquitto(workdir=tmp_path / "b", settings=("max_inflight_messages 1",)) as broker:
        assert asyncio.run(scenario(broker.url)) == list(range(50))


def test_link_refuses_a_publish_over_the_maximum_packet_size(tmp_path):
    """A publish over the broker's Maximum Packet Size fails alone; the link stays up for the next."""

    async def scenario(url: str) -> None:
        async with connected_link(url, "mps") as link:
            assert link.limits.maximum_packet_size == 500
            # A message our count lets through at the very limit is one the broker takes.
            fits = b"x" * max(n for n in range(500) if publish_packet_size("t/edge", b"x" * n) <= 500)
            assert publish_packet_size("t/edge", fits) == 500
            with pytest.raises(PacketTooLarge, match="maximum packet size of 500 bytes"):
                await link.publish("t/edge", fits + b"x")
            await asyncio.wait_for(link.publish("t/edge", fits), 5)
            await asyncio.wait_for(link.publish("t/small", b"x" * 100), 5)

    with Mosquitto(workdir=tmp_path / "b", settings=("max_packet_size 500",)) as broker:
        asyncio.run(scenario(broker.url))


def test_qos0_only_broker_is_refused_in_one_sentence(tmp_path):
    """A broker that allows only QoS 0 is refused, saying what to change."""

    async def scenario(url: str) -> None:
        link = MqttLink(BrokerConfig(url=url), client_id="q0", persistent=False)
        with pytest.raises(BrokerUnsuitable, match=r"allows only QoS 0.*max_qos 0"):
            async with link:
                pass

    with Mosquitto(workdir=tmp_path / "b", settings=("max_qos 0",)) as broker:
        asyncio.run(scenario(broker.url))


@pytest.fixture
def nats_mqtt(tmp_path: Path) -> Iterator[str]:
    """A NATS server whose MQTT listener speaks only MQTT 3.1.1, on free loopback ports."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        pytest.fail("nats-server is not installed (.ci/run installs it: apt-get install nats-server)")
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{free_port()}\nserver_name: lianfang-test\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"mqtt {{ listen: 127.0.0.1:{port} }}\n"
    )
    with (tmp_path / "nats.log").open("wb") as log:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if process.poll() is not None:
                pytest.fail(f"nats-server exited: {(tmp_path / 'nats.log').read_text()[-500:]}")
            asyncio.run(asyncio.sleep(0.05))
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        terminate(process, timeout_s=5)


def test_mqtt311_only_broker_is_refused_at_check_and_at_start(tmp_path, nats_mqtt, gateway_process):
    """A 3.1.1-only broker (NATS): `check --online` and the running gateway say so in one sentence."""
    config = init_config(tmp_path / "gw", block_url=nats_mqtt, police_url=nats_mqtt)
    checked = lianfang("check", "--online", "--config", config)
    assert checked.returncode != 0
    assert "speaks only MQTT 3.1.1" in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stdout + checked.stderr

    gw = TestGateway(config)
    gateway_process.append(gw)
    with pytest.raises(RuntimeError, match="not ready"):
        gw.start(timeout_s=8)
    log = gw.log_text()
    assert "speaks only MQTT 3.1.1" in log
    assert "Traceback" not in log


def test_check_online_reports_what_each_broker_announced(tmp_path):
    """`check --online` names each broker, its protocol and the limits it announced."""
    with (
        Mosquitto(workdir=tmp_path / "block") as block,
        Mosquitto(workdir=tmp_path / "police", settings=("max_inflight_messages 7",)) as police,
    ):
        config = init_config(tmp_path / "gw", block_url=block.url, police_url=police.url)
        checked = lianfang("check", "--online", "--config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    out = checked.stdout
    assert f"broker ({block.url}): reached, MQTT 5.0" in out
    assert "receive maximum 20" in out
    assert f"({police.url}): reached, MQTT 5.0" in out
    assert "receive maximum 7" in out
    assert "cannot connect" not in out


def test_not_ready_while_the_block_broker_never_came_up(tmp_path, gateway_process):
    """With the block broker unreachable, the daemon never says READY=1; its status names the link and why."""
    port = free_port()
    config = init_config(tmp_path / "gw", block_url=f"mqtt://127.0.0.1:{port}", police_url=None)
    gw = TestGateway(config)
    gateway_process.append(gw)
    with pytest.raises(RuntimeError, match="not ready"):
        gw.start(timeout_s=13)
    state = yaml.safe_load(config.read_text())["state_dir"]
    status = json.loads((config.parent / state / "status.json").read_text())
    assert status["links"]["block-publisher"] is False
    assert "127.0.0.1" in status["link_errors"]["block-publisher"]
    shown = lianfang("status", "--config", config).stdout
    assert "link block-publisher" in shown
    assert "down: block broker mqtt://127.0.0.1" in shown
