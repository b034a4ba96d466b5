"""Great-circle distance, bearing and the nearest shops (rules/geo.py)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from rules.geo import (
    EARTH_RADIUS_M,
    Neighbour,
    bearing_deg,
    compass_point,
    distance_m,
    nearest_shops,
)

# The package's own demo survey, so a fresh clone has it.
CHANGPING = Path(__file__).resolve().parents[2] / "gateway" / "data" / "changping-road.csv"


@dataclass(frozen=True)
class Shop:
    id: str
    lat: float
    lon: float


def test_quarter_meridian() -> None:
    """Equator to pole along a meridian is a quarter of the great circle."""
    assert distance_m(0, 0, 90, 0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M, rel=1e-12)


def test_haversine_known_distance() -> None:
    """Nashville (BNA) to Los Angeles (LAX): 2886.444 km on a 6371 km sphere (Rosetta Code)."""
    on_our_sphere = 2_886_444.442837984 * EARTH_RADIUS_M / 6_371_000
    assert distance_m(36.12, -86.67, 33.94, -118.40) == pytest.approx(on_our_sphere, rel=1e-9)


def test_distance_is_symmetric_and_zero_on_itself() -> None:
    """A to B equals B to A, and a point is 0 m from itself."""
    a, b = (23.359106, 116.6900737), (23.3591232, 116.6901508)
    assert distance_m(*a, *b) == pytest.approx(distance_m(*b, *a), rel=1e-12)
    assert distance_m(*a, *a) == 0


@pytest.mark.parametrize(
    ("to", "bearing", "compass", "words"),
    [
        pytest.param((23.36, 116.70), 0, "N", "north", id="north"),
        pytest.param((23.35, 116.701), 90, "E", "east", id="east"),
        pytest.param((23.34, 116.70), 180, "S", "south", id="south"),
        pytest.param((23.35, 116.699), 270, "W", "west", id="west"),
    ],
)
def test_bearing_of_the_four_directions(
    to: tuple[float, float], bearing: float, compass: str, words: str
) -> None:
    """Due north, east, south and west of a shop give 0, 90, 180 and 270 degrees."""
    here = (23.35, 116.70)
    found = bearing_deg(*here, *to)
    assert found == pytest.approx(bearing, abs=0.01)
    neighbour = Neighbour("S2", distance_m(*here, *to), found)
    assert (neighbour.compass, neighbour.words) == (compass, words)


def test_bearing_due_east_on_the_equator_is_exact() -> None:
    """On the equator, due east is exactly 90 degrees."""
    assert bearing_deg(0, 0, 0, 1) == pytest.approx(90, abs=1e-12)


@pytest.mark.parametrize(
    ("bearing", "point"),
    [(0, "N"), (22.4, "N"), (22.6, "NE"), (81, "E"), (200, "S"), (337.6, "N"), (359.9, "N")],
)
def test_compass_point(bearing: float, point: str) -> None:
    """Bearings fall in 45-degree sectors centred on the eight points."""
    assert compass_point(bearing) == point


def test_ties_are_broken_by_shop_id() -> None:
    """Two shops at the same distance come in shop-id order, whatever the input order."""
    origin = Shop("S00", 0, 0)
    east, west = Shop("S02", 0, 0.001), Shop("S01", 0, -0.001)
    assert distance_m(0, 0, east.lat, east.lon) == distance_m(0, 0, west.lat, west.lon)
    found = nearest_shops(origin, [east, west, origin], count=2)
    assert [n.shop_id for n in found] == ["S01", "S02"]
    assert [n.shop_id for n in nearest_shops(origin, [west, east], count=1)] == ["S01"]


def test_radius_caps_the_neighbours() -> None:
    """Shops farther than the radius are left out, even when fewer than count remain."""
    origin = Shop("S00", 23.35, 116.70)
    near = Shop("S01", 23.35 + 100 / 111_195, 116.70)  # about 100 m north
    far = Shop("S02", 23.35 + 200 / 111_195, 116.70)  # about 200 m north
    assert [n.shop_id for n in nearest_shops(origin, [far, near], count=10, radius_m=150)] == [
        "S01"
    ]
    assert [n.shop_id for n in nearest_shops(origin, [far, near], count=10)] == ["S01", "S02"]
    assert nearest_shops(origin, [far, near], count=10, radius_m=50) == []


def brute_force_distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance from the chord between unit vectors: not the haversine formula."""

    def unit(lat: float, lon: float) -> tuple[float, float, float]:
        p, lam = math.radians(lat), math.radians(lon)
        return (math.cos(p) * math.cos(lam), math.cos(p) * math.sin(lam), math.sin(p))

    chord = math.dist(unit(lat1, lon1), unit(lat2, lon2))
    return 2 * EARTH_RADIUS_M * math.asin(chord / 2)


def test_ten_nearest_of_s00011_on_changping() -> None:
    """The 10 nearest of S00011 match an independent brute-force scan of the sheet."""
    with CHANGPING.open(newline="", encoding="utf-8") as f:
        shops = [Shop(r["shop_id"], float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]
    origin = next(s for s in shops if s.id == "S00011")
    expected = sorted(
        (brute_force_distance(origin.lat, origin.lon, s.lat, s.lon), s.id)
        for s in shops
        if s is not origin
    )[:10]
    found = nearest_shops(origin, shops, count=10)
    assert [n.shop_id for n in found] == [shop_id for _, shop_id in expected]
    assert [n.distance_m for n in found] == pytest.approx([d for d, _ in expected], abs=1e-6)
    assert found[0].distance_m == pytest.approx(7.9, abs=0.05)
