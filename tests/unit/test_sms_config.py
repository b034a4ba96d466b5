"""The `sms` section and the alert channels: defaults, a pin file beside the config, a channel with no modem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.file import load_config
from gateway.errors import ConfigError
from tests.unit.test_config_file import BASE, BASE_ALONE, write


def test_defaults_alert_by_mqtt_in_chinese_and_need_no_modem(tmp_path: Path) -> None:
    """Without an sms section: notices by MQTT only, SMS wording Chinese."""
    config = load_config(write(tmp_path, BASE))
    assert config.sms is None
    assert config.neighbour_alert.channels == ["mqtt"]
    assert config.neighbour_alert.language == "zh"


def test_the_modem_s_pin_file_is_taken_from_the_config_s_folder(tmp_path: Path) -> None:
    """A relative pin_file is resolved beside lianfang.yaml; baudrate defaults to 115200."""
    text = BASE + "sms:\n  port: /dev/ttyUSB3\n  pin_file: sim.pin\n"
    text += "neighbour_alert:\n  channels: [mqtt, sms]\n  language: en\n"
    config = load_config(write(tmp_path, text))
    assert config.sms is not None
    assert config.sms.pin_file == tmp_path / "sim.pin"
    assert config.sms.baudrate == 115200
    assert config.neighbour_alert.channels == ["mqtt", "sms"]


@pytest.mark.parametrize(
    ("extra", "path", "says"),
    [
        (
            "neighbour_alert:\n  channels: [mqtt, sms]\n",
            "neighbour_alert.channels",
            "no 'sms' section",
        ),
        (
            "neighbour_alert:\n  channels: [pager]\n",
            "neighbour_alert.channels[0]",
            "'mqtt' or 'sms'",
        ),
        ("sms:\n  port: /dev/ttyUSB3\n  smsc: call-me\n", "sms.smsc", "must match the pattern"),
        ("sms:\n  port: /dev/ttyUSB3\n  speed: 9600\n", "sms.speed", "unknown key 'speed'"),
    ],
)
def test_bad_sms_settings_are_located(tmp_path: Path, extra: str, path: str, says: str) -> None:
    """A texting channel with no modem, an unknown channel, a bad SMSC, an unknown key: each named at its path."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BASE + extra))
    [problem] = caught.value.problems
    assert problem.path == path
    assert says in problem.message


def test_check_warns_of_an_absent_modem_and_refuses_a_pin_file_others_read(tmp_path: Path) -> None:
    """`lianfang check`: a modem not plugged in is a warning at sms.port; a PIN file with mode 644 an error at sms.pin_file."""
    pin = tmp_path / "sim.pin"
    pin.write_text("1234\n")
    pin.chmod(0o644)
    text = BASE_ALONE + f"state_dir: {tmp_path / 'state'}\n"
    text += "sms:\n  port: /dev/ttyNOSUCHMODEM\n  pin_file: sim.pin\n"
    config = write(tmp_path, text)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "sms.port: warning: no device /dev/ttyNOSUCHMODEM now" in done.stderr + done.stdout
    assert "sms.pin_file: " in done.stderr + done.stdout
    assert "chmod 600" in done.stderr + done.stdout
