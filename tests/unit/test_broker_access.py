"""`lianfang broker-config`'s files, its edit of lianfang.yaml, and the broker password file."""

from __future__ import annotations

import base64
import stat

import pytest
from typer.testing import CliRunner, Result

from gateway.cli.main import app
from gateway.config.broker_access import mosquitto_hash
from gateway.config.file import load_config
from gateway.errors import ConfigError

CONFIG = """\
# Block 7, written by hand.
gateway: {id: GW-007, large_grid: L1}
no_forwarders_ok: true
broker:
  url: mqtt://127.0.0.1:1883   # the block's broker
  password: "old"  # to be replaced

shops:
- id: S1
  name: "Tea house"
  lat: 39.9
  lon: 116.4
  grid: {large: L1, medium: M1, small: s1}
- id: S2
  name: "Noodles"
  lat: 39.9001
  lon: 116.4
  grid: {large: L1, medium: M1, small: s1}
  devices: [{id: rb-1, kind: rf433_button}]  # no MQTT panel: no login
"""

# Written by `mosquitto_passwd -b pwfile u secretpw` (Mosquitto 2.0.11).
MOSQUITTO_LINE = (
    "$7$101$3z521TJFGHGmkSjG$nqDBBCTGB2XTtJj4cB2W7pHSGje561sPdgyDeLQoEvzr0I8mi2y94Hlp08Jk"
    "BO5bL3iMZiJA23wVw9OVHBbInw=="
)


def run(tmp_path, *args: str) -> Result:
    path = tmp_path / "lianfang.yaml"
    if not path.exists():
        path.write_text(CONFIG)
        path.chmod(0o640)
    return CliRunner().invoke(
        app, ["broker-config", "--config", str(path), "--out", str(tmp_path / "b"), *args]
    )


def test_hash_is_what_mosquitto_passwd_writes():
    salt = base64.b64decode(MOSQUITTO_LINE.split("$")[3])
    assert mosquitto_hash("secretpw", salt) == MOSQUITTO_LINE


def test_files_modes_and_logins(tmp_path):
    """Secrets are mode 600; only shops with an MQTT panel get a login; passwords carry ≥ 128 bits."""
    result = run(tmp_path, "--listen", "127.0.0.1:1884")
    assert result.exit_code == 0, result.output
    out = tmp_path / "b"
    for name in ("passwd", "credentials.csv", "gateway.password"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == ["gateway-GW-007", "S1"]
    assert len((out / "gateway.password").read_text().strip()) >= 32  # 24 bytes, base64
    conf = (out / "lianfang.conf").read_text()
    assert "listener 1884 127.0.0.1" in conf
    assert "allow_anonymous false" in conf
    assert "max_queued_messages 1000000" in conf
    acl = (out / "acl").read_text()
    assert "pattern write lianfang/v1/shop/%u/event" in acl
    assert acl.count("notify") == 2  # shops read their own; only the gateway writes


def test_config_is_edited_round_trip(tmp_path):
    """Comments and mode stay; the inline password goes; the result loads and reads the file."""
    assert run(tmp_path).exit_code == 0
    path = tmp_path / "lianfang.yaml"
    text = path.read_text()
    assert "# the block's broker" in text
    assert "# Block 7, written by hand." in text
    assert "password:" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    broker = load_config(path).broker
    assert broker.username == "gateway-GW-007"
    assert broker.secret() == (tmp_path / "b" / "gateway.password").read_text().strip()


def test_no_edit_prints_the_lines(tmp_path):
    result = run(tmp_path, "--no-edit")
    assert result.exit_code == 0
    assert "username: gateway-GW-007" in result.output
    assert f"password_file: {(tmp_path / 'b' / 'gateway.password').resolve()}" in result.output
    assert (tmp_path / "lianfang.yaml").read_text() == CONFIG


def test_unknown_rotate_is_one_line(tmp_path):
    result = run(tmp_path, "--rotate", "S9")
    assert result.exit_code == 1
    assert result.output.strip() == "broker-config: --rotate: no shop S9 in this config"


def test_world_readable_password_file_is_refused_and_a_missing_one_found(tmp_path):
    assert run(tmp_path).exit_code == 0
    path = tmp_path / "lianfang.yaml"
    secret = tmp_path / "b" / "gateway.password"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"broker\.password_file: .* every user may read"):
        load_config(path)
    secret.unlink()
    load_config(path)  # a missing file is the preflight's to report, as a TLS file is
    checked = CliRunner().invoke(app, ["check", "--config", str(path)])
    assert checked.exit_code == 1
    assert f"broker.password_file: no such file: {secret.resolve()}" in checked.output


def test_password_and_password_file_together_are_refused(tmp_path):
    path = tmp_path / "lianfang.yaml"
    path.write_text(CONFIG.replace('  password: "old"', '  password: "old"\n  password_file: x'))
    with pytest.raises(ConfigError, match="not both"):
        load_config(path)


def test_rerun_keeps_owner_and_mode_but_never_world_readable(tmp_path):
    """An installer's chmod of a secret survives a re-run; a world bit does not."""
    assert run(tmp_path).exit_code == 0
    passwd = tmp_path / "b" / "passwd"
    passwd.chmod(0o640)
    assert run(tmp_path).exit_code == 0
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o640
    passwd.chmod(0o644)
    assert run(tmp_path).exit_code == 0
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o640


POLICE_CONFIG = """\
gateway: {id: GW-007, large_grid: L1}
broker: {url: "mqtt://127.0.0.1:1883"}
forwarders:
- {kind: police_mqtt, name: police, broker: {url: "mqtt://127.0.0.1:1884"}, topic_root: city/v2}
shops:
- {id: S1, name: Tea house, lat: 39.9, lon: 116.4, grid: {large: L1, medium: M1, small: s1}}
other_shops:
- {id: T1, name: Bakery, lat: 39.9002, lon: 116.4, grid: {large: L2, medium: M9, small: s9},
   gateway_id: GW-008}
- {id: T2, name: Florist, lat: 39.9003, lon: 116.4, grid: {large: L2, medium: M9, small: s9},
   gateway_id: GW-008}
- {id: U1, name: Barber, lat: 39.8999, lon: 116.4, grid: {large: L1, medium: M1, small: s2},
   gateway_id: GW-009}
"""


def police_acl(tmp_path, config: str, *args: str) -> Result:
    path = tmp_path / "lianfang.yaml"
    path.write_text(config)
    return CliRunner().invoke(app, ["police-acl", "--config", str(path), *args])


def test_police_acl_names_exactly_the_gateways_topics(tmp_path):
    """Own events, status, cmd and mesh inbox; the mesh inboxes of GW-008 (at L2) and GW-009."""
    result = police_acl(tmp_path, POLICE_CONFIG, "--user", "gw007.city.example")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("#")]
    assert lines == [
        "user gw007.city.example",
        "topic write city/v2/L1/GW-007/events",
        "topic write city/v2/L1/GW-007/status",
        "topic read city/v2/L1/GW-007/cmd",
        "topic read city/v2/L1/mesh/GW-007/notify",
        "topic write city/v2/L1/mesh/GW-009/notify",
        "topic write city/v2/L2/mesh/GW-008/notify",
    ]


def test_police_acl_without_a_police_broker_is_one_line(tmp_path):
    result = police_acl(tmp_path, CONFIG)
    assert result.exit_code == 1
    assert "police-acl: no police_mqtt forwarder" in result.output
