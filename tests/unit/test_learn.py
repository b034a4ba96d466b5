"""`lianfang learn`'s config edit: round-trip, validated, backed up, atomic."""

from __future__ import annotations

import stat

import pytest
import yaml

from gateway.cli.learn import bind_code, learn_driver
from gateway.config.file import load_config
from gateway.errors import ConfigError

CONFIG = """\
# Block 7, written by hand.
gateway: {id: GW-007, large_grid: L1}
broker:
  url: mqtt://127.0.0.1:1883   # the block's broker
drivers:
- kind: rf433
  name: rf-1
  port: /dev/ttyUSB1  # receiver behind the counter
shops:
- id: S1
  name: "Tea house"
  lat: 39.9
  lon: 116.4
  grid: {large: L1, medium: M1, small: s1}
"""


def test_learned_code_keeps_comments_and_the_implicit_panel(tmp_path):
    """The edit keeps every comment and quote, writes the shop's implicit panel-1 out, and leaves a backup."""
    path = tmp_path / "lianfang.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    said = bind_code(
        path, config, learn_driver(config, None, file=str(path)), shop="S1", device="rb-1",
        code="A1B2C3",
    )  # fmt: skip
    assert "learned code A1B2C3 as S1/rb-1" in said
    text = path.read_text()
    for line in CONFIG.splitlines():
        if "#" in line or '"' in line:
            assert line in text
    assert (tmp_path / "lianfang.yaml.bak").read_text() == CONFIG
    data = yaml.safe_load(text)
    assert data["shops"][0]["devices"] == [
        {"id": "panel-1", "kind": "alarm_panel"},
        {"id": "rb-1", "kind": "rf433_button"},
    ]
    assert data["drivers"][0]["buttons"] == [
        {"code": "A1B2C3", "shop_id": "S1", "device_id": "rb-1"}
    ]
    assert load_config(path).drivers[0].bound_devices() == [("S1", "rb-1", ("buttons", 0))]


def test_unknown_shop_changes_nothing(tmp_path):
    """Learning for a shop the config does not serve is refused; the file and its folder are untouched."""
    path = tmp_path / "lianfang.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    with pytest.raises(ConfigError, match="no shop 'S9'"):
        bind_code(
            path, config, learn_driver(config, None, file=str(path)), shop="S9", device="rb-1",
            code="A1B2C3",
        )  # fmt: skip
    assert path.read_text() == CONFIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lianfang.yaml"]


def test_no_rf433_driver_is_named(tmp_path):
    """A config without a 433 MHz driver says so."""
    path = tmp_path / "lianfang.yaml"
    path.write_text(CONFIG.replace("kind: rf433", "kind: line_serial").replace(
        "  port: /dev/ttyUSB1  # receiver behind the counter\n",
        "  port: /dev/ttyUSB1\n  devices: [{address: 1, shop_id: S1, device_id: panel-1}]\n",
    ))  # fmt: skip
    config = load_config(path)
    with pytest.raises(ConfigError, match="no rf433 driver configured"):
        learn_driver(config, None, file=str(path))


def test_a_private_config_stays_private(tmp_path):
    """A mode-600 config (it may hold secrets) is still 600 after learn, and so is its backup."""
    path = tmp_path / "lianfang.yaml"
    path.write_text(CONFIG)
    path.chmod(0o600)
    config = load_config(path)
    bind_code(
        path, config, learn_driver(config, None, file=str(path)), shop="S1", device="rb-1",
        code="A1B2C3",
    )  # fmt: skip
    assert "A1B2C3" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "lianfang.yaml.bak").stat().st_mode) == 0o600
