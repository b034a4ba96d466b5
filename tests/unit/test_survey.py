"""`lianfang init`: from a survey sheet to a lianfang.yaml that loads, or to located errors."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from drivers.mqtt_ingest_config import MqttIngestConfig
from gateway.cli.main import app
from gateway.config.file import load_config
from gateway.config.model import DeviceConfig, GatewayIdentity
from gateway.config.survey import init_config
from rules.geo import distance_m

# Only files inside the repository: a fresh clone must pass. Changping is the package's own
# demo survey; the 60-block city is a test fixture.
REPO = Path(__file__).resolve().parents[2]
CHANGPING = REPO / "gateway" / "data" / "changping-road.csv"
CITY = REPO / "tests" / "fixtures" / "city-60-blocks.csv"


def init(*args: str) -> Result:
    return CliRunner().invoke(app, ["init", *args])


def sheet(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_init_from_changping(tmp_path: Path) -> None:
    """The Changping sheet gives GW-001 in large grid L1 with its 87 shops, as surveyed."""
    result = init("--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "87 shops" in result.stdout
    assert "lianfang check" in result.stdout
    config = load_config(tmp_path / "lianfang.yaml")
    assert config.gateway == GatewayIdentity(id="GW-001", large_grid="L1")
    rows = sheet(CHANGPING)
    assert [(s.id, s.name, s.lat, s.lon) for s in config.shops] == [
        (r["shop_id"], r["name"], float(r["lat"]), float(r["lon"])) for r in rows
    ]
    assert config.other_shops == []
    first = config.shops[0]
    assert (first.opens, first.closes) == (time(10, 0), time(23, 30))
    assert (first.number, first.side, first.phone) == ("1", "N", "+86-754-87368886")
    assert (first.grid.large, first.grid.medium, first.grid.small) == ("L1", "L1-M01", "L1-M01-01")
    assert all(s.devices == [DeviceConfig(id="panel-1", kind="alarm_panel")] for s in config.shops)
    assert config.broker.url == "mqtt://127.0.0.1:1883"
    assert config.drivers == [MqttIngestConfig(kind="mqtt_ingest", name="shops")]
    assert config.forwarders == []


def test_written_file_says_where_it_came_from(tmp_path: Path) -> None:
    """The file opens with a comment naming the sheet and the next step."""
    init("--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(tmp_path))
    text = (tmp_path / "lianfang.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Gateway GW-001 (large grid L1), written by `lianfang init`")
    assert "changping-road.csv" in text.splitlines()[0]
    assert "# Check it with `lianfang check`" in text


def test_written_file_passes_check(tmp_path: Path) -> None:
    """What init writes, `lianfang check` accepts."""
    init("--survey", str(CITY), "--gateway", "GW-002", "--dir", str(tmp_path))
    result = CliRunner().invoke(app, ["check", "--config", str(tmp_path / "lianfang.yaml")])
    assert result.exit_code == 0, result.output


def test_city_sheet_keeps_only_nearby_other_shops(tmp_path: Path) -> None:
    """For GW-002 of the city: its own shops, and exactly the others within 500 m of one."""
    result = init("--survey", str(CITY), "--gateway", "GW-002", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "lianfang.yaml")
    rows = sheet(CITY)
    own = [r for r in rows if r["gateway_id"] == "GW-002"]
    assert [s.id for s in config.shops] == [r["shop_id"] for r in own]
    grids = Counter(r["large_grid"] for r in own)
    assert config.gateway.large_grid == grids.most_common(1)[0][0]

    def near(row: dict[str, str]) -> bool:
        lat, lon = float(row["lat"]), float(row["lon"])
        return any(distance_m(lat, lon, float(o["lat"]), float(o["lon"])) <= 500 for o in own)

    expected = [r for r in rows if r["gateway_id"] != "GW-002" and near(r)]
    assert [(o.id, o.gateway_id) for o in config.other_shops] == [
        (r["shop_id"], r["gateway_id"]) for r in expected
    ]
    assert 0 < len(config.other_shops) < len(rows) / 10


def test_unknown_gateway_lists_the_sheets_gateways(tmp_path: Path) -> None:
    """An id the sheet does not have is refused, naming the ids it has; nothing is written."""
    result = init("--survey", str(CHANGPING), "--gateway", "GW-099", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "no shops of gateway 'GW-099'; the sheet has GW-001" in result.stderr
    assert not (tmp_path / "lianfang.yaml").exists()


def test_no_overwrite_without_force(tmp_path: Path) -> None:
    """An existing lianfang.yaml is kept unless --force is given."""
    out = tmp_path / "lianfang.yaml"
    out.write_text("# the installer's own edits\n")
    args = ["--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(tmp_path)]
    refused = init(*args)
    assert refused.exit_code == 1
    assert f"{out}: already exists; add --force to overwrite it" in refused.stderr
    assert out.read_text() == "# the installer's own edits\n"
    assert init(*args, "--force").exit_code == 0
    assert out.read_text().startswith("# Gateway GW-001")


def test_police_over_tls_gets_certificate_placeholders(tmp_path: Path) -> None:
    """An mqtts:// police URL gives a tls section with certificate paths beside the config."""
    result = init(
        "--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(tmp_path),
        "--police", "mqtts://police.example:8883", "--broker", "mqtt://10.0.0.2:1883",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "lianfang.yaml")
    assert config.broker.url == "mqtt://10.0.0.2:1883"
    [police] = config.forwarders
    assert (police.kind, police.name, police.broker.url) == (
        "police_mqtt",
        "police",
        "mqtts://police.example:8883",
    )
    tls = police.broker.tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        tmp_path / "certs" / "ca.pem",
        tmp_path / "certs" / "gateway.pem",
        tmp_path / "certs" / "gateway.key",
    )
    assert (
        "# mqtts:// needs the broker's CA certificate" in (tmp_path / "lianfang.yaml").read_text()
    )


def test_bad_police_url_names_the_option(tmp_path: Path) -> None:
    """A police URL that is not MQTT is blamed on --police, and nothing is written."""
    result = init(
        "--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(tmp_path),
        "--police", "https://police.example",
    )  # fmt: skip
    assert result.exit_code == 1
    assert (
        "lianfang init: --police: expected mqtt://HOST:PORT or mqtts://HOST:PORT" in result.stderr
    )
    assert not (tmp_path / "lianfang.yaml").exists()


def small_sheet(directory: Path, change: dict[str, str] | None = None, row: int = 1) -> Path:
    """The first four Changping rows, with ``change`` applied to row ``row`` (0-based)."""
    rows = sheet(CHANGPING)[:4]
    rows[row].update(change or {})
    path = directory / "survey.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("change", "column", "message"),
    [
        pytest.param({"lat": "23.35x"}, "lat", "must be a number", id="bad number"),
        pytest.param({"lon": " "}, "lon", "is blank", id="blank lon"),
        pytest.param({"lat": ""}, "lat", "is blank", id="blank lat"),
        pytest.param(
            {"shop_id": "S00001"},
            "shop_id",
            "duplicate shop_id 'S00001' (also at line 2)",
            id="duplicate id",
        ),
        pytest.param({"shop_id": ""}, "shop_id", "is blank", id="blank id"),
        pytest.param({"gateway_id": ""}, "gateway_id", "is blank", id="blank gateway"),
        pytest.param(
            {"lat": "91"}, "lat", "latitude must be between -90 and 90", id="latitude out of range"
        ),
        pytest.param({"open": "25:00"}, "open", "must be a time of day", id="bad opening time"),
        pytest.param(
            {"medium_grid": "L1 M01"}, "medium_grid", "must be 1 to 40 letters", id="bad cell"
        ),
        pytest.param({"name": ""}, "name", "must not be empty", id="blank name"),
    ],
)
def test_bad_row_is_located(
    tmp_path: Path, change: dict[str, str], column: str, message: str
) -> None:
    """A bad cell is reported by file, line and column, and no config is written."""
    survey = small_sheet(tmp_path, change)
    result = init("--survey", str(survey), "--gateway", "GW-001", "--dir", str(tmp_path))
    assert result.exit_code == 1
    [line] = [x for x in result.stderr.splitlines() if x.startswith(f"{survey}:")]
    assert line.startswith(f"{survey}:3: {column}: {message}")
    assert not (tmp_path / "lianfang.yaml").exists()


def test_every_bad_row_is_reported(tmp_path: Path) -> None:
    """Problems on several rows are reported together, each at its line."""
    survey = small_sheet(tmp_path, {"lat": "north"}, row=0)
    text = survey.read_text().splitlines()
    text[3] = text[3].replace("S00003", "")
    survey.write_text("\n".join(text) + "\n")
    result = init("--survey", str(survey), "--gateway", "GW-001", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"{survey}:2: lat: must be a number in decimal degrees (got 'north')" in result.stderr
    assert f"{survey}:4: shop_id: is blank" in result.stderr


def test_missing_column(tmp_path: Path) -> None:
    """A sheet without a needed column is refused at line 1, naming the column."""
    survey = tmp_path / "survey.csv"
    survey.write_text("shop_id,name,lat\nS00001,Lottery,23.35\n")
    result = init("--survey", str(survey), "--gateway", "GW-001", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"{survey}:1: missing column(s) trade, street, side, number, lon," in result.stderr


def test_missing_sheet(tmp_path: Path) -> None:
    """A sheet that is not there is named, with no traceback."""
    result = init("--survey", str(tmp_path / "absent.csv"), "--gateway", "GW-001")
    assert result.exit_code == 1
    assert f"{tmp_path / 'absent.csv'}: no such file" in result.stderr
    assert "Traceback" not in result.output


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12).filter(
    str.strip
) | st.sampled_from(["yes", "No", "null", "~", "23:30", "0x1F", "1e3", "- a", "#x", "'q", "&a"])
CELLS = st.fixed_dictionaries(
    dict.fromkeys(("name", "trade", "street", "number", "phone"), TEXT)
    | {"open": st.sampled_from(["", "07:05", "09:30", "23:30"])}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=CELLS)
def test_what_init_writes_loads_back(
    tmp_path_factory: pytest.TempPathFactory, cells: dict[str, str]
) -> None:
    """Whatever text a sheet's cells hold, the file init writes loads back to the same shops."""
    directory = tmp_path_factory.getbasetemp()
    row = sheet(CHANGPING)[0] | cells
    survey = directory / "random.csv"
    with survey.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    out = directory / "random.yaml"
    written = init_config(survey, "GW-001", out=out, broker_url="mqtt://h:1", force=True)
    assert written.shops[0].name == cells["name"].strip()
    assert load_config(out).shops == written.shops


def test_opening_hours_without_a_zone_are_warned_of_and_timezone_names_it(tmp_path: Path) -> None:
    """A Pi on UTC would arm Beijing shops at the wrong hours: init and check say so."""
    bare, zoned = tmp_path / "bare", tmp_path / "zoned"
    warned = init("--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(bare))
    assert "no rules.timezone" in warned.stderr
    checked = CliRunner().invoke(app, ["check", "--config", str(bare / "lianfang.yaml")])
    assert checked.exit_code == 0
    assert "no rules.timezone" in checked.stderr
    args = ["--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(zoned)]
    quiet = init(*args, "--timezone", "Asia/Shanghai")
    assert quiet.exit_code == 0, quiet.output
    assert "timezone" not in quiet.stderr
    assert load_config(zoned / "lianfang.yaml").rules.timezone == "Asia/Shanghai"
    checked = CliRunner().invoke(app, ["check", "--config", str(zoned / "lianfang.yaml")])
    assert "timezone" not in checked.stderr
    bad = init("--survey", str(CHANGPING), "--gateway", "GW-001", "--dir", str(tmp_path / "x"),
               "--timezone", "Mars/Olympus")  # fmt: skip
    assert bad.exit_code != 0
    assert "Mars/Olympus" in bad.output
