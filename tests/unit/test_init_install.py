"""`lianfang init` for an install: police certificates, the state dir, the map, no forwarder."""

from __future__ import annotations

import csv
import stat
from pathlib import Path

from typer.testing import CliRunner, Result

from gateway.cli.main import app
from gateway.config.file import load_config
from gateway.config.survey import SYSTEM_STATE_DIR, default_state_dir

SURVEY = Path(__file__).resolve().parents[2] / "gateway" / "data" / "changping-road.csv"
POLICE = "mqtts://police.example:8883"


def init(directory: Path, *args: str, survey: Path = SURVEY) -> Result:
    """`lianfang init` for GW-001 of ``survey`` into ``directory``, with ``args``."""
    base = ["init", "--survey", str(survey), "--gateway", "GW-001", "--dir", str(directory)]
    return CliRunner().invoke(app, [*base, "--timezone", "Asia/Shanghai", *args])


def check(directory: Path) -> Result:
    """`lianfang check` on the file init wrote in ``directory``."""
    return CliRunner().invoke(app, ["check", "--config", str(directory / "lianfang.yaml")])


def test_police_certificates_are_copied_and_the_key_kept_private(tmp_path: Path) -> None:
    """--police-ca/-cert/-key land in certs/ beside the config (key mode 600) and check passes."""
    given = tmp_path / "given"
    given.mkdir()
    for name in ("ca.pem", "gw.pem", "gw.key"):
        (given / name).write_text(f"PEM of {name}\n")
    out = tmp_path / "etc"
    result = init(
        out,
        "--police", POLICE,
        "--police-ca", str(given / "ca.pem"),
        "--police-cert", str(given / "gw.pem"),
        "--police-key", str(given / "gw.key"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fails until" not in result.output
    tls = load_config(out / "lianfang.yaml").forwarders[0].broker.tls  # type: ignore[union-attr]
    assert tls is not None
    assert tls.ca_file.read_text() == "PEM of ca.pem\n"
    assert tls.cert_file is not None
    assert tls.cert_file.read_text() == "PEM of gw.pem\n"
    assert tls.key_file is not None
    assert tls.key_file.read_text() == "PEM of gw.key\n"
    assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600
    assert check(out).exit_code == 0


def test_placeholders_are_listed_and_check_fails_until_filled(tmp_path: Path) -> None:
    """Without the certificate options init names each placeholder; check refuses, then passes."""
    result = init(tmp_path, "--police", POLICE)
    assert result.exit_code == 0, result.output
    assert "Put these files in place; `lianfang check` fails until they are:" in result.stderr
    for key, name in [
        ("ca_file", "ca.pem"),
        ("cert_file", "gateway.pem"),
        ("key_file", "gateway.key"),
    ]:
        line = f"forwarders[0].broker.tls.{key}: no such file: {tmp_path / 'certs' / name}"
        assert line in result.stderr
    refused = check(tmp_path)
    assert refused.exit_code == 1
    assert "forwarders[0].broker.tls.key_file: no such file" in refused.stderr
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "gateway.pem", "gateway.key"):
        (tmp_path / "certs" / name).write_text("PEM\n")
    assert check(tmp_path).exit_code == 0


def test_certificate_options_need_an_mqtts_police_url(tmp_path: Path) -> None:
    """--police-ca with a plain mqtt:// police broker is blamed on the option; nothing written."""
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM\n")
    result = init(tmp_path, "--police", "mqtt://10.0.0.9:1883", "--police-ca", str(ca))
    assert result.exit_code == 1
    assert "lianfang init: --police-ca: needs --police mqtts://..." in result.stderr
    assert not (tmp_path / "lianfang.yaml").exists()


def test_unreadable_certificate_is_named(tmp_path: Path) -> None:
    """A --police-key that does not exist is named with the option, before anything is written."""
    result = init(tmp_path, "--police", POLICE, "--police-key", str(tmp_path / "absent.key"))
    assert result.exit_code == 1
    assert f"lianfang init: --police-key: cannot read {tmp_path / 'absent.key'}" in result.stderr
    assert not (tmp_path / "lianfang.yaml").exists()


def test_state_dir_option_and_defaults(tmp_path: Path) -> None:
    """--state-dir is written as given; the default is /var/lib/lianfang under /etc, else state."""
    result = init(tmp_path, "--state-dir", "/srv/lianfang-state", "--police", "mqtt://h:1883")
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "lianfang.yaml").state_dir == Path("/srv/lianfang-state")
    assert default_state_dir(Path("/etc/lianfang")) == SYSTEM_STATE_DIR == Path("/var/lib/lianfang")
    assert default_state_dir(tmp_path) == Path("state")


def test_no_forwarder_is_written_as_meant_and_said(tmp_path: Path) -> None:
    """Without --police or --dc09 init writes no_forwarders_ok: true and warns on the option."""
    result = init(tmp_path)
    assert result.exit_code == 0, result.output
    assert "lianfang init: --police: warning: none given" in result.stderr
    config = load_config(tmp_path / "lianfang.yaml")
    assert (config.forwarders, config.no_forwarders_ok) == ([], True)
    assert check(tmp_path).exit_code == 0


def test_one_degree_latitude_typo_in_the_sheet_is_warned_at_its_line(tmp_path: Path) -> None:
    """A shop one degree north of its street is named at its sheet line, 111 km away."""
    with SURVEY.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[4]["lat"] = str(float(rows[4]["lat"]) + 1)
    sheet = tmp_path / "typo.csv"
    with sheet.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = init(tmp_path / "out", "--police", "mqtt://h:1883", survey=sheet)
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stderr.splitlines() if "km from the block" in line]
    shop = rows[4]
    assert warning.startswith(f"{sheet}:6: lat: warning: shop {shop['shop_id']} ({shop['name']})")
    assert "is 111.2 km from the block's median position" in warning
