"""`lianfang check` on this machine: TLS files, state dir, serial ports, forwarders, the map."""

from __future__ import annotations

import ctypes
import os
import pwd
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from gateway.cli.main import app
from gateway.journal_schema import connect
from rules.geo import distance_m

# Two shops 8 m apart and a police broker over TLS; tests add what they break.
BASE = """\
gateway: {id: GW-001, large_grid: L1}
broker:
  url: mqtt://127.0.0.1:1883
drivers:
- {kind: mqtt_ingest, name: shops}
forwarders:
- kind: police_mqtt
  name: police
  broker:
    url: mqtts://police.example:8883
    tls: {ca_file: certs/ca.pem, cert_file: certs/gw.pem, key_file: certs/gw.key}
shops:
- id: S00001
  name: No.1 Lottery
  lat: 23.359106
  lon: 116.6900737
  grid: {large: L1, medium: L1-M01, small: L1-M01-01}
  devices: [{id: panel-1}, {id: pb-1, kind: panic_button}]
- id: S00002
  name: No.3 Grocery
  lat: 23.3591232
  lon: 116.6901508
  grid: {large: L1, medium: L1-M01, small: L1-M01-01}
"""
CERTS = ("ca.pem", "gw.pem", "gw.key")
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, capability.h


def write(directory: Path, text: str = BASE, *, certs: tuple[str, ...] = CERTS) -> Path:
    """``text`` as lianfang.yaml in ``directory``, with the named files under certs/."""
    (directory / "certs").mkdir(exist_ok=True)
    for name in certs:
        (directory / "certs" / name).write_text("PEM\n")
    path = directory / "lianfang.yaml"
    path.write_text(text)
    return path


def check(path: Path) -> Result:
    """`lianfang check --config path`, in process."""
    return CliRunner().invoke(app, ["check", "--config", str(path)])


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``text`` that holds ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _without_file_override() -> None:
    """Drop root's power to ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_outsider(*args: str) -> subprocess.CompletedProcess[str]:
    """`lianfang ARGS` as a process that file modes stop, also when the tests run as root.

    Root loses the capabilities that override file modes before the exec: switching to
    `nobody` instead would fail when the interpreter lives under /root (pyenv, CI).
    """
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_without_file_override if os.geteuid() == 0 else None,
    )


def test_valid_config_with_its_files_passes(tmp_path: Path) -> None:
    """With every TLS file present and a state dir that can be created, check passes quietly."""
    result = check(write(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_missing_tls_files_are_named_at_their_keys(tmp_path: Path) -> None:
    """Missing CA and key of the police broker and a webhook's CA: one located line each, exit 1."""
    webhook = (
        "- kind: webhook\n  name: hook\n  url: https://platform.example/in\n"
        "  secret: 0123456789abcdef\n  ca_file: certs/hook-ca.pem\n"
    )
    text = BASE.replace("shops:\n", webhook + "shops:\n", 1)
    path = write(tmp_path, text, certs=("gw.pem",))
    path.chmod(0o600)  # it holds the webhook's secret
    result = check(path)
    assert result.exit_code == 1
    tls_line = line_of(text, "tls:")
    assert result.stderr.splitlines() == [
        (
            f"{path}:{tls_line}: forwarders[0].broker.tls.ca_file: no such file:"
            f" {tmp_path / 'certs' / 'ca.pem'}"
        ),
        (
            f"{path}:{tls_line}: forwarders[0].broker.tls.key_file: no such file:"
            f" {tmp_path / 'certs' / 'gw.key'}"
        ),
        (
            f"{path}:{line_of(text, 'hook-ca.pem')}: forwarders[1].ca_file:"
            f" no such file: {tmp_path / 'certs' / 'hook-ca.pem'}"
        ),
        "3 problems found",
    ]


def test_tls_key_unreadable_by_the_gateway_user(tmp_path: Path) -> None:
    """A key only root may read fails check for the gateway's user, naming user and file."""
    path = write(tmp_path)
    path.chmod(0o644)
    key = tmp_path / "certs" / "gw.key"
    key.chmod(0o000)
    result = as_outsider("check", "--config", str(path))
    assert result.returncode == 1, result.stderr
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert (
        f"{path}:{line_of(BASE, 'tls:')}: forwarders[0].broker.tls.key_file:"
        f" {user} cannot read {key}: Permission denied"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_state_dir_that_is_a_file_or_under_one(tmp_path: Path) -> None:
    """A state_dir that is a file, or cannot be made because a file is in the way, is an error."""
    (tmp_path / "taken").write_text("not a folder\n")
    for state, expected in [
        ("taken", f"{tmp_path / 'taken'} is not a folder"),
        ("taken/state", f"cannot be created: {tmp_path / 'taken'} is not a folder"),
    ]:
        path = write(tmp_path, f"state_dir: {state}\n" + BASE)
        result = check(path)
        assert result.exit_code == 1
        assert f"{path}:1: state_dir: " in result.stderr
        assert expected in result.stderr


def test_state_dir_the_gateway_user_cannot_write(tmp_path: Path) -> None:
    """A state dir without write permission for the gateway's user is refused before `run`."""
    state = tmp_path / "state"
    state.mkdir(mode=0o555)
    state.chmod(0o555)
    path = write(tmp_path)
    result = as_outsider("check", "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert f"{path}:1: state_dir: " in result.stderr
    assert f"cannot write in {state}" in result.stderr


def test_absent_serial_device_is_a_warning_and_urls_are_not_checked(tmp_path: Path) -> None:
    """A /dev path that is not there warns (plugged in later); exit 0. socket:// is left alone."""
    drivers = (
        "- {kind: line_serial, name: bus-1, port: /dev/ttyLIANFANG-absent,"
        " devices: [{address: 3, shop_id: S00001, device_id: pb-1}]}\n"
        "- {kind: rf433, name: rf, port: 'socket://127.0.0.1:7000'}\n"
    )
    text = BASE.replace("forwarders:\n", drivers + "forwarders:\n", 1)
    path = write(tmp_path, text)
    result = check(path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        (
            f"{path}:{line_of(text, 'ttyLIANFANG')}: drivers[1].port: warning: no device"
            " /dev/ttyLIANFANG-absent now; the gateway keeps retrying it, so this is fine"
            " if the adapter is plugged in later"
        )
    ]
    assert "valid:" in result.stdout


def test_no_forwarder_is_refused_unless_acknowledged(tmp_path: Path) -> None:
    """Without forwarders check fails; `no_forwarders_ok: true` makes it pass."""
    start, end = BASE.index("forwarders:"), BASE.index("shops:")
    alone = BASE[:start] + BASE[end:]
    refused = check(write(tmp_path, alone))
    assert refused.exit_code == 1
    assert "forwarders: no forwarder: alarms would reach the neighbours but never" in (
        refused.stderr
    )
    accepted = check(write(tmp_path, "forwarders: []\nno_forwarders_ok: true\n" + alone))
    assert accepted.exit_code == 0, accepted.output


def test_one_degree_latitude_typo_is_warned_with_the_distance(tmp_path: Path) -> None:
    """A shop at 24.35 instead of 23.35 is reported 111 km from the block, by key and line."""
    third = (
        "- id: S00003\n  name: No.5 Tea\n  lat: 24.3591300\n  lon: 116.6902000\n"
        "  grid: {large: L1, medium: L1-M01, small: L1-M01-01}\n"
    )
    text = BASE + third
    path = write(tmp_path, text)
    result = check(path)
    assert result.exit_code == 0, result.output
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"{path}:{line_of(text, '24.3591300')}: shops[2].lat: warning:")
    assert "shop S00003 (No.5 Tea) is 111.2 km from the block's median position" in warning


def test_shop_with_no_neighbour_in_the_alert_radius_is_warned(tmp_path: Path) -> None:
    """A shop 500 m from the others (inside 2 km) has nobody to alert at radius 300 m."""
    third = (
        "- id: S00003\n  name: No.99 Hardware\n  lat: 23.3636000\n  lon: 116.6901000\n"
        "  grid: {large: L1, medium: L1-M01, small: L1-M01-01}\n"
    )
    result = check(write(tmp_path, BASE + third))
    assert result.exit_code == 0, result.output
    [warning] = result.stderr.splitlines()
    nearest = distance_m(23.3636, 116.6901, 23.3591232, 116.6901508)
    assert (
        "shops[2].lat: warning: shop S00003 (No.99 Hardware) has no other shop within"
        f" neighbour_alert.radius_m (300 m; the nearest is {nearest:.0f} m away)"
    ) in warning


def test_status_and_events_say_the_state_cannot_be_read(tmp_path: Path) -> None:
    """A user who cannot read the state dir gets one line and exit 1 from status and events."""
    path = write(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text("{}")
    connect(state / "journal.sqlite3").close()
    state.chmod(0o000)
    for command in ("status", "events"):
        result = as_outsider(command, "--config", str(path))
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.splitlines()
        assert f"cannot read the gateway's state in {state}" in line
