"""Device payload mappings: each preset on its documented payloads, and the driver's dispatch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drivers.base import DriverContext
from drivers.device_maps import PRESETS, Mapping
from drivers.mqtt_devices import MqttDevicesDriver
from drivers.mqtt_devices_config import MappedDeviceConfig, MqttDevicesConfig
from gateway.cli.online_check import check_online
from gateway.config.broker_access import gateway_username, plan_logins
from gateway.config.file import load_config
from gateway.errors import ConfigError
from gateway.mqtt.client import BrokerConfig
from lab.broker import free_port
from tests.harness import init_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "devices"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
SHOP = "S00030"
ZIGBEE_DOOR = (
    "- kind: mqtt_devices\n"
    "  name: zigbee\n"
    "  devices:\n"
    "    - {shop: S00030, device: door-z, preset: zigbee2mqtt.contact, topic: zigbee2mqtt/S00030-door}\n"
)


def fixture(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_preset_has_a_fixture_citing_its_upstream_documentation():
    """One fixture file per preset, each naming the pages its payloads come from."""
    assert {fixture(p)["preset"] for p in FIXTURE_FILES} == set(PRESETS)
    for path in FIXTURE_FILES:
        sources = fixture(path)["sources"]
        assert sources, path.name
        assert all(re.match(r"https://[a-z0-9.-]+\.[a-z]+/", url) for url in sources), path.name


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_preset_maps_its_documented_payloads_to_the_right_events(path):
    """Each documented payload, in order, makes exactly the events the fixture expects."""
    data = fixture(path)
    device = MappedDeviceConfig.model_validate(
        {
            "shop": SHOP,
            "device": "dev-1",
            "preset": data["preset"],
            "topic": data["device_topic"],
            "code": data.get("code"),
        }
    )
    mapper = device.mapper(burst_s=1.0)
    for i, message in enumerate(data["messages"]):
        payload = message["payload"]
        outcomes, understood = mapper.feed(message["topic"], payload, now=message.get("at", i * 10))
        assert understood, (path.name, i)
        assert sorted(o.kind.value for o in outcomes) == sorted(message["expect"]), (path.name, i)


def test_a_restore_names_the_kind_it_restores():
    """The restore after a leak says it restores water_leak (the DC-09 table reads it)."""
    mapper = MappedDeviceConfig(
        shop=SHOP, device="leak", preset="zigbee2mqtt.water_leak", topic="z/leak"
    ).mapper(1.0)
    mapper.feed("z/leak", {"water_leak": True}, now=0)
    [restore], _ = mapper.feed("z/leak", {"water_leak": False}, now=1)
    assert restore.kind == "restore"
    assert restore.attrs["restores"] == "water_leak"


def test_retained_state_seeds_the_mapping_and_raises_nothing():
    """A retained 'open' at subscribe is the door's state: no event, and the same state later is no news."""
    mapper = MappedDeviceConfig(
        shop=SHOP, device="door", preset="zigbee2mqtt.contact", topic="z/door"
    ).mapper(1.0)
    assert mapper.feed("z/door", {"contact": False, "tamper": True}, now=0, retained=True)[0] == []
    assert mapper.feed("z/door", {"contact": False, "tamper": True}, now=1)[0] == []
    [closed], _ = mapper.feed("z/door", {"contact": True, "tamper": True}, now=2)
    assert closed.kind == "door_close"


def test_custom_mapping_by_pointer_and_match():
    """A custom mapping reads a nested value by JSON pointer and matches by in / lt / gt."""
    device = MappedDeviceConfig.model_validate(
        {
            "shop": SHOP,
            "device": "vault",
            "topic": "site/vault",
            "mappings": [
                {"key": "/alarm/state", "in": ["forced", "cut"], "kind": "intrusion", "zone": "2"},
                {"key": "/temp/c", "gt": 70, "kind": "fire", "restore": {"lt": 50}},
                {"key": "hold", "equals": True, "kind": "duress", "when": "every"},
            ],
        }
    )
    mapper = device.mapper(1.0)
    [intrusion], _ = mapper.feed("site/vault", {"alarm": {"state": "forced"}}, now=0)
    assert (intrusion.kind, intrusion.zone) == ("intrusion", "2")
    assert intrusion.attrs == {"key": "/alarm/state", "value": "forced"}
    assert [o.kind for o in mapper.feed("site/vault", {"temp": {"c": 71.5}}, now=1)[0]] == ["fire"]
    assert mapper.feed("site/vault", {"temp": {"c": 60}}, now=2)[0] == []  # hysteresis gap
    assert [o.kind for o in mapper.feed("site/vault", {"temp": {"c": 40}}, now=3)[0]] == ["restore"]
    # 1 is not True, "1" is not 1: a match never crosses JSON types.
    assert mapper.feed("site/vault", {"hold": 1}, now=4)[0] == []
    assert [o.kind for o in mapper.feed("site/vault", {"hold": True}, now=5)[0]] == ["duress"]
    assert mapper.feed("site/vault", {"other": 1}, now=6) == ([], False)


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ({"key": "contact", "kind": "door_open"}, "give exactly one of"),
        ({"key": "contact", "equals": True, "lt": 3, "kind": "door_open"}, "equals, lt"),
        ({"key": "a/b", "equals": 1, "kind": "panic"}, "a JSON pointer starts with '/'"),
        ({"key": "x", "equals": 1, "kind": "explode"}, "kind"),
        ({"topic": "{topic}/+", "key": "x", "equals": 1, "kind": "panic"}, "no MQTT wildcards"),
        ({"topic": "{name}/x", "key": "x", "equals": 1, "kind": "panic"}, "names {name}"),
    ],
)
def test_bad_custom_mappings_are_refused_with_a_reason(mapping, words):
    """Each malformed mapping is refused, saying what is wrong with it."""
    with pytest.raises(ValidationError, match=re.escape(words)):
        Mapping.model_validate(mapping)


def driver(**overrides) -> MqttDevicesDriver:
    config = MqttDevicesConfig.model_validate(
        {
            "kind": "mqtt_devices",
            "name": "zigbee",
            "devices": [
                {
                    "shop": SHOP,
                    "device": "door-z",
                    "preset": "zigbee2mqtt.contact",
                    "topic": "z2m/door",
                },
                {
                    "shop": SHOP,
                    "device": "rf-1",
                    "preset": "tasmota.rf_bridge",
                    "topic": "tele/rf/RESULT",
                    "code": "a1b2c3",
                },
                {
                    "shop": SHOP,
                    "device": "rf-2",
                    "preset": "tasmota.rf_bridge",
                    "topic": "tele/rf/RESULT",
                    "code": "D4E5F6",
                },
            ],
            **overrides,
        }
    )
    context = DriverContext(
        gateway_id="GW-T",
        block_broker=BrokerConfig(url="mqtt://127.0.0.1:1"),
        devices={SHOP: frozenset({"door-z", "rf-1", "rf-2"})},
    )
    return MqttDevicesDriver(config, context=context)


def rf(code: str) -> bytes:
    return json.dumps(
        {"RfReceived": {"Sync": 11410, "Low": 370, "High": 1070, "Data": code}}
    ).encode()


def test_rf_bridge_codes_reach_their_own_device_and_unknown_codes_are_listed_once_per_burst():
    """A known code is its device's panic; an unknown code is counted once per press and listed."""
    d = driver()
    [event] = d.handle("tele/rf/RESULT", rf("D4E5F6"))
    assert (event.shop_id, event.device_id, event.kind) == (SHOP, "rf-2", "panic")
    assert event.source.driver == "zigbee"
    assert d.handle("tele/rf/RESULT", rf("D4E5F6")) == []  # the same burst
    for _ in range(5):
        assert d.handle("tele/rf/RESULT", rf("00ffee")) == []
    assert d.rejected["unknown_code"] == 1
    assert set(d.unknown_codes) == {"00FFEE"}


def test_unknown_shapes_and_bad_bytes_are_counted_never_raised():
    """Payloads no mapping reads, bytes that are not text, oversize and retained ones: counted or seeded."""
    d = driver(max_payload_bytes=256)
    assert d.handle("z2m/door", b'{"linkquality": 80}') == []
    assert d.handle("tele/rf/RESULT", b'{"RfRaw": {"Data": "AA B1 55"}}') == []
    assert d.handle("z2m/door", b"\xff\xfe\x00garbage") == []
    assert d.handle("z2m/door", b"{" * 300) == []
    assert d.handle("z2m/door", b"[1, 2") == []  # not JSON: taken as text, which no mapping reads
    assert dict(d.rejected) == {"unknown_shape": 3, "malformed": 1, "oversize": 1}
    assert d.handle("z2m/door", b'{"contact": false}', retained=True) == []
    assert d.handle("z2m/door", b'{"contact": false}') == []
    [event] = d.handle("z2m/door", b'{"contact": true}')
    assert event.kind == "door_close"


def test_a_topic_or_code_used_twice_is_refused():
    """Two devices on one topic (or one code on one bridge) would take each other's events."""
    with pytest.raises(ValidationError, match="code A1B2C3 on tele/rf/RESULT is both"):
        driver(
            devices=[
                {
                    "shop": SHOP,
                    "device": "rf-1",
                    "preset": "tasmota.rf_bridge",
                    "topic": "tele/rf/RESULT",
                    "code": "A1B2C3",
                },
                {
                    "shop": SHOP,
                    "device": "rf-2",
                    "preset": "tasmota.rf_bridge",
                    "topic": "tele/rf/RESULT",
                    "code": "a1b2c3",
                },
            ]
        )
    with pytest.raises(ValidationError, match="topic z/a is both S00030/a's and S00030/b's"):
        driver(
            devices=[
                {"shop": SHOP, "device": "a", "preset": "zigbee2mqtt.sos", "topic": "z/a"},
                {"shop": SHOP, "device": "b", "preset": "zigbee2mqtt.smoke", "topic": "z/a"},
            ]
        )


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cfg")
    init_config(folder, block_url="mqtt://127.0.0.1:1", police_url="mqtt://127.0.0.1:2")
    return folder


def with_drivers(folder: Path, drivers_yaml: str, name: str) -> Path:
    text = (folder / "lianfang.yaml").read_text()
    data = yaml.safe_load(text)
    [shop] = [s for s in data["shops"] if s["id"] == SHOP]
    shop["devices"].append({"id": "door-z", "kind": "door_contact"})
    path = folder / name
    path.write_text(
        yaml.safe_dump({k: v for k, v in data.items() if k != "drivers"}, sort_keys=False)
    )
    drivers = yaml.safe_dump(data["drivers"], sort_keys=False)
    path.write_text(path.read_text() + "drivers:\n" + drivers + drivers_yaml)
    return path


def test_check_names_file_line_and_key_of_each_bad_device_binding(config_dir):
    """A device not listed under its shop, a missing code, a bad match: each located by file, key and line."""
    path = with_drivers(
        config_dir,
        "- kind: mqtt_devices\n"
        "  name: zigbee\n"
        "  devices:\n"
        "    - {shop: S00030, device: door-z, preset: zigbee2mqtt.contact, topic: zigbee2mqtt/S00030-door}\n"
        "    - shop: S00030\n"
        "      device: sos-z\n"
        "      preset: zigbee2mqtt.sos\n"
        "      topic: zigbee2mqtt/S00030-sos\n",
        "unbound.yaml",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.message.startswith("driver 'zigbee' binds device 'sos-z'")
    assert (problem.path, problem.line) == (
        "drivers[1].devices[1]",
        text_line(path, "- shop: S00030"),
    )

    path = with_drivers(
        config_dir,
        "- kind: mqtt_devices\n"
        "  name: rfbridge\n"
        "  devices:\n"
        "    - shop: S00030\n"
        "      device: door-z\n"
        "      topic: tele/rfbridge/RESULT\n"
        "      mappings:\n"
        "        - {key: /RfReceived/Data, equals: A1B2C3, lt: 4, kind: panic}\n"
        "    - {shop: S00030, device: rf-1, preset: tasmota.rf_bridge, topic: tele/rfbridge/RESULT}\n",
        "nocode.yaml",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = {(p.path, p.line): p.message for p in caught.value.problems}
    code_line = text_line(path, "device: rf-1")
    assert found[("drivers[1].devices[1]", code_line)].endswith(
        "preset tasmota.rf_bridge needs the device's 'code'"
    ), found
    mapping_line = text_line(path, "- {key: /RfReceived/Data")
    assert any(line == mapping_line and "equals, lt" in m for (_, line), m in found.items()), found


def text_line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def map_test(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "map", "test", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_map_test_prints_the_event_a_payload_would_make(config_dir):
    """`lianfang map test` shows door_open for an open contact and supervision_lost for an offline availability; refuses unknown devices and says when nothing reads a payload."""
    path = with_drivers(
        config_dir,
        ZIGBEE_DOOR,
        "map.yaml",
    )
    done = map_test(path, "--device", "S00030/door-z", "--payload", '{"contact": false}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        'door_open  S00030/door-z  zone -  {"key": "contact", "value": false}'
    )
    done = map_test(
        path,
        "--device",
        "S00030/door-z",
        "--payload",
        "offline",
        "--topic",
        "zigbee2mqtt/S00030-door/availability",
        "--json",
    )
    [event] = json.loads(done.stdout)
    assert (event["kind"], event["shop_id"], event["device_id"]) == (
        "supervision_lost",
        SHOP,
        "door-z",
    )
    assert event["source"] == {"driver": "zigbee", "ref": "zigbee2mqtt/S00030-door/availability"}
    done = map_test(path, "--device", "S00030/nope", "--payload", "{}")
    assert done.returncode == 2
    assert "no mqtt_devices device 'S00030/nope' (devices: S00030/door-z)" in done.stderr
    done = map_test(path, "--device", "S00030/door-z", "--payload", '{"linkquality": 3}')
    assert done.returncode == 1
    assert "no mapping of S00030/door-z reads this payload" in done.stdout


def test_a_devices_broker_names_files_from_the_config_folder(config_dir):
    """A separate broker's password file and CA are found beside the config, wherever the gateway starts."""
    path = with_drivers(
        config_dir,
        "- kind: mqtt_devices\n"
        "  name: zigbee\n"
        "  broker: {url: 'mqtts://10.0.0.9:8883', username: gw, password_file: z2m.password,\n"
        "           tls: {ca_file: certs/ca.pem}}\n"
        "  devices:\n"
        "    - {shop: S00030, device: door-z, preset: zigbee2mqtt.contact, topic: zigbee2mqtt/S00030-door}\n",
        "broker.yaml",
    )
    [driver] = [d for d in load_config(path).drivers if isinstance(d, MqttDevicesConfig)]
    assert driver.broker is not None
    assert driver.broker.password_file == config_dir / "z2m.password"
    assert driver.broker.tls is not None
    assert driver.broker.tls.ca_file == config_dir / "certs" / "ca.pem"


def test_the_generated_acl_lets_the_gateway_read_every_device_topic_on_the_block_broker(config_dir):
    """`lianfang broker-config` grants the gateway's login each device topic, availability included."""
    path = with_drivers(
        config_dir,
        ZIGBEE_DOOR,
        "acl.yaml",
    )
    config = load_config(path)
    [gateway, *_] = plan_logins(config, {})
    assert gateway.username == gateway_username(config)
    assert {"zigbee2mqtt/S00030-door", "zigbee2mqtt/S00030-door/availability"} <= set(
        gateway.subscribe
    )


def test_availability_and_silence_are_one_supervision():
    """Zigbee2MQTT's offline is a sign of trouble, not of life; a device lost by one watcher is not lost again by the other."""
    d = driver(supervision_s=60)
    door = ("z2m/door/availability", "z2m/door")
    [lost] = d.handle(door[0], b'{"state": "offline"}')
    assert lost.kind == "supervision_lost"
    assert d.supervision.is_lost(d._devices[SHOP, "door-z"])
    assert d.handle(door[0], b"offline") == []  # the legacy payload says the same
    [restore] = d.handle(door[1], b'{"contact": true}')[:1]  # heard again: found
    assert (restore.kind, restore.attrs) == ("restore", {"of": "supervision_lost"})
    assert d.handle(door[0], b'{"state": "online"}') == []  # already found
    assert not d.supervision.is_lost(d._devices[SHOP, "door-z"])


def test_check_online_reaches_a_devices_broker_too(config_dir, block_broker):
    """`check --online` tries an mqtt_devices driver's own broker and names it when it is down."""
    base = yaml.safe_load((config_dir / "lianfang.yaml").read_text())
    base["broker"] = {"url": block_broker.url}
    base["forwarders"] = []
    base["no_forwarders_ok"] = True
    folder = config_dir / "online"
    folder.mkdir(exist_ok=True)
    (folder / "lianfang.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    down = f"mqtt://127.0.0.1:{free_port()}"
    path = with_drivers(
        folder,
        ZIGBEE_DOOR.replace("  devices:\n", f"  broker: {{url: '{down}'}}\n  devices:\n"),
        "online.yaml",
    )
    [problem] = check_online(load_config(path), file=str(path), timeout_s=2)
    assert problem.path == "drivers[1].broker.url"
    assert "Connection refused" in problem.message
