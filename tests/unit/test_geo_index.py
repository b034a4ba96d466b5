"""The spatial index behind the nearest shops gives exactly what comparing every pair gives."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.actions import _narrowed
from rules.geo import Neighbour, NeighbourIndex, bearing_deg, distance_m, neighbour_table

CITY = Path(__file__).resolve().parents[1] / "fixtures" / "city-60-blocks.csv"


@dataclass(frozen=True)
class Shop:
    id: str
    lat: float
    lon: float


def brute_force(
    origin: Shop, places: list[Shop], *, count: int, radius_m: float | None
) -> list[Neighbour]:
    """Every pair compared: the quadratic scan the index replaced, kept here as the oracle."""
    found = [
        Neighbour(
            p.id,
            distance_m(origin.lat, origin.lon, p.lat, p.lon),
            bearing_deg(origin.lat, origin.lon, p.lat, p.lon),
        )
        for p in places
        if p.id != origin.id
    ]
    if radius_m is not None:
        found = [n for n in found if n.distance_m <= radius_m]
    found.sort(key=lambda n: (n.distance_m, n.shop_id))
    return found[:count]


# A block or a district: shops within ~0.05 degrees (5 km) of a point, some on the same
# spot (ties broken by id), now and then one far away (a bad survey line).
offsets = st.one_of(
    st.floats(-0.05, 0.05, allow_nan=False),
    st.sampled_from([0.0, 0.0001, -0.0001]),
    st.floats(-3.0, 3.0, allow_nan=False),
)
shops = st.lists(st.tuples(offsets, offsets), min_size=1, max_size=120)


@settings(max_examples=150, deadline=None)
@given(
    spots=shops,
    base=st.tuples(st.floats(-80, 80), st.floats(-179, 179)),
    count=st.integers(1, 25),
    radius_m=st.one_of(st.none(), st.floats(1, 6000)),
)
def test_index_matches_brute_force(
    spots: list[tuple[float, float]],
    base: tuple[float, float],
    count: int,
    radius_m: float | None,
) -> None:
    """Same shops, same order, same distances as the every-pair scan, for every origin."""
    places = [
        Shop(f"S{i:04d}", base[0] + dlat, base[1] + dlon) for i, (dlat, dlon) in enumerate(spots)
    ]
    index = NeighbourIndex(places)
    for origin in places:
        expected = brute_force(origin, places, count=count, radius_m=radius_m)
        assert index.nearest(origin, count=count, radius_m=radius_m) == expected


def test_whole_city_matches_brute_force_on_a_sample() -> None:
    """4,736 shops of the city fixture: every 97th shop's 20 nearest within 300 m are exact."""
    with CITY.open(newline="", encoding="utf-8") as f:
        city = [Shop(r["shop_id"], float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]
    table = neighbour_table(city, city, count=20, radius_m=300)
    assert len(table) == len(city)
    for origin in city[::97]:
        assert table[origin.id] == brute_force(origin, city, count=20, radius_m=300)
    assert sum(len(found) == 20 for found in table.values()) > len(city) // 2  # a real city


# Shops along streets: rows a few metres apart (some on the same spot), a few streets
# crossing, and a far cluster, as a city's survey has them; a uniform grid over the
# bounding box would put dozens in a cell.
streets = st.lists(
    st.tuples(
        st.floats(-0.02, 0.02),  # where the street starts
        st.floats(-0.02, 0.02),
        st.sampled_from([(0.0, 1.0), (1.0, 0.0), (0.7, 0.7), (0.0, 0.0)]),  # its direction
        st.lists(st.sampled_from([0.0, 0.00005, 0.0001, 0.00013, 0.0002]), min_size=1, max_size=30),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=streets,
    base=st.tuples(st.floats(-80, 80), st.floats(-179.9, 179.9)),
    count=st.integers(1, 25),
    radius_m=st.one_of(st.none(), st.floats(1, 600)),
)
def test_clustered_places_match_brute_force(
    rows: list[tuple[float, float, tuple[float, float], list[float]]],
    base: tuple[float, float],
    count: int,
    radius_m: float | None,
) -> None:
    """Shops packed along streets give the every-pair scan's neighbours, in its order."""
    places: list[Shop] = []
    for lat0, lon0, (dlat, dlon), gaps in rows:
        along = 0.0
        for gap in gaps:
            along += gap
            spot = (base[0] + lat0 + dlat * along, base[1] + lon0 + dlon * along)
            places.append(Shop(f"S{len(places):04d}", *spot))
    table = neighbour_table(places, places, count=count, radius_m=radius_m or 1e7)
    for origin in places:
        expected = brute_force(origin, places, count=count, radius_m=radius_m or 1e7)
        assert table[origin.id] == expected


@settings(max_examples=40, deadline=None)
@given(
    spots=shops,
    count=st.integers(1, 25),
    narrower=st.integers(1, 25),
    radius_m=st.floats(1, 6000),
    nearer_m=st.floats(1, 6000),
)
def test_a_narrower_rule_is_the_widest_table_filtered_and_sliced(
    spots: list[tuple[float, float]], count: int, narrower: int, radius_m: float, nearer_m: float
) -> None:
    """One table at the most shops and the farthest radius serves every rule's own."""
    places = [Shop(f"S{i:04d}", 30 + dlat, 120 + dlon) for i, (dlat, dlon) in enumerate(spots)]
    most, fewest = max(count, narrower), min(count, narrower)
    widest = neighbour_table(places, places, count=most, radius_m=max(radius_m, nearer_m))
    narrowed = _narrowed(widest, fewest, min(radius_m, nearer_m))
    for origin in places:
        expected = brute_force(origin, places, count=fewest, radius_m=min(radius_m, nearer_m))
        assert narrowed[origin.id] == expected
