"""`lianfang neighbours SHOP`: the nearest shops with distance, bearing and serving gateway."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gateway.cli.main import app
from rules.geo import distance_m

# Only files inside the repository: a fresh clone must pass. Changping is the package's own
# demo survey; the 60-block city is a test fixture.
REPO = Path(__file__).resolve().parents[2]
CHANGPING = REPO / "gateway" / "data" / "changping-road.csv"
CITY = REPO / "tests" / "fixtures" / "city-60-blocks.csv"


def written_config(directory: Path, survey: Path, gateway: str) -> Path:
    result = CliRunner().invoke(
        app,
        ["init", "--survey", str(survey), "--gateway", gateway, "--dir", str(directory)],
    )
    assert result.exit_code == 0, result.output
    return directory / "lianfang.yaml"


@pytest.fixture(scope="module")
def changping(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return written_config(tmp_path_factory.mktemp("changping"), CHANGPING, "GW-001")


@pytest.fixture(scope="module")
def city_gw002(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return written_config(tmp_path_factory.mktemp("city"), CITY, "GW-002")


def neighbours(config: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["neighbours", *args, "--config", str(config)])


def as_json(config: Path, *args: str) -> list[dict[str, Any]]:
    result = neighbours(config, *args, "--json")
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def test_json_lists_the_ten_nearest(changping: Path) -> None:
    """--json gives the config's 10 nearest, ranked by distance, with every field filled."""
    found = as_json(changping, "S00011")
    assert [n["rank"] for n in found] == list(range(1, 11))
    assert {"shop_id", "name", "distance_m", "bearing_deg", "compass", "gateway_id"} <= set(
        found[0]
    )
    distances = [n["distance_m"] for n in found]
    assert distances == sorted(distances)
    assert all(0 < d <= 300 for d in distances)
    assert "S00011" not in {n["shop_id"] for n in found}
    assert found[0] == {
        "rank": 1,
        "shop_id": "S00010",
        "name": "Changping Road No.19 Bakery",
        "distance_m": 7.9,
        "bearing_deg": 265.0,
        "compass": "W",
        "direction": "west",
        "gateway_id": "GW-001",
    }
    assert (found[1]["shop_id"], found[1]["compass"]) == ("S00012", "E")


def test_count_and_radius_options(changping: Path) -> None:
    """--count and --radius override the config; the radius may leave fewer than count."""
    assert len(as_json(changping, "S00011", "--count", "3")) == 3
    within_ten = as_json(changping, "S00011", "--count", "5", "--radius", "10")
    assert [n["shop_id"] for n in within_ten] == ["S00010", "S00012"]


def test_count_defaults_to_the_config(tmp_path: Path) -> None:
    """Without --count, neighbour_alert.count of the config decides how many."""
    config = written_config(tmp_path, CHANGPING, "GW-001")
    text = config.read_text()
    assert "  count: 10\n" in text
    config.write_text(text.replace("  count: 10\n", "  count: 4\n"))
    assert len(as_json(config, "S00011")) == 4


def test_neighbours_across_the_block_edge(city_gw002: Path) -> None:
    """Past the block's edge, neighbours served by other gateways are named with their gateway."""
    with CITY.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    gateway_of = {r["shop_id"]: r["gateway_id"] for r in rows}
    own = [r for r in rows if r["gateway_id"] == "GW-002"]
    others = [r for r in rows if r["gateway_id"] != "GW-002"]
    gap, edge_shop, other_shop = min(
        (distance_m(float(a["lat"]), float(a["lon"]), float(b["lat"]), float(b["lon"])), a, b)
        for a in own
        for b in others
    )
    assert gap < 300
    found = as_json(city_gw002, edge_shop["shop_id"], "--count", "100", "--radius", "300")
    assert all(n["gateway_id"] == gateway_of[n["shop_id"]] for n in found)
    [match] = [n for n in found if n["shop_id"] == other_shop["shop_id"]]
    assert match["gateway_id"] == other_shop["gateway_id"] != "GW-002"
    assert match["distance_m"] == pytest.approx(gap, abs=0.05)


def test_other_shop_as_origin(city_gw002: Path) -> None:
    """The nearest shops of a neighbouring gateway's shop can be shown too."""
    other = json.loads(neighbours(city_gw002, "S01001", "--json").stdout)
    assert len(other) == 10


def test_table_shows_distance_and_bearing_words(changping: Path) -> None:
    """The table shows metres with one decimal, the bearing in degrees and in words."""
    result = neighbours(changping, "S00011", "--count", "2")
    assert result.exit_code == 0, result.output
    assert "Nearest shops to S00011" in result.stdout
    assert "7.9 m" in result.stdout
    assert "265° W (west)" in result.stdout
    assert "96° E (east)" in result.stdout
    assert "GW-001" in result.stdout


def test_unknown_shop(changping: Path) -> None:
    """An unknown shop id is a clear error with suggestions, exit 1."""
    result = neighbours(changping, "S0011")
    assert result.exit_code == 1
    assert "no shop 'S0011'" in result.stderr
    assert "did you mean S00011" in result.stderr
    assert "Traceback" not in result.output


def test_missing_config(tmp_path: Path) -> None:
    """Without a config file, neighbours says so and exits 2."""
    result = neighbours(tmp_path / "absent.yaml", "S00011")
    assert result.exit_code == 2
    assert "no such file" in result.stderr
