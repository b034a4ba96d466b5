"""Great-circle geometry for shops: distances, bearings and nearest neighbours."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
COMPASS_POINTS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
COMPASS_WORDS = {
    "N": "north",
    "NE": "north-east",
    "E": "east",
    "SE": "south-east",
    "S": "south",
    "SW": "south-west",
    "W": "west",
    "NW": "north-west",
}


class Place(Protocol):
    """Anything with an id and a position."""

    @property
    def id(self) -> str:
        """Shop id."""
        ...

    @property
    def lat(self) -> float:
        """Latitude, degrees."""
        ...

    @property
    def lon(self) -> float:
        """Longitude, degrees."""
        ...


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360


def compass_point(bearing: float) -> str:
    """The 8-point compass abbreviation ("NE") of a bearing."""
    return COMPASS_POINTS[round(bearing / 45) % 8]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One shop near another: how far and which way to go to reach it."""

    shop_id: str
    distance_m: float
    bearing_deg: float

    @property
    def compass(self) -> str:
        """8-point compass abbreviation, e.g. "NE"."""
        return compass_point(self.bearing_deg)

    @property
    def words(self) -> str:
        """Direction in words, e.g. "north-east"."""
        return COMPASS_WORDS[self.compass]


def nearest_shops(
    origin: Place, places: Sequence[Place], *, count: int, radius_m: float | None = None
) -> list[Neighbour]:
    """The ``count`` places nearest ``origin`` (itself excluded), ties broken by shop id.

    Bearings point from ``origin`` to each neighbour.
    """
    found = [
        Neighbour(
            shop_id=p.id,
            distance_m=distance_m(origin.lat, origin.lon, p.lat, p.lon),
            bearing_deg=bearing_deg(origin.lat, origin.lon, p.lat, p.lon),
        )
        for p in places
        if p.id != origin.id
    ]
    if radius_m is not None:
        found = [n for n in found if n.distance_m <= radius_m]
    found.sort(key=lambda n: (n.distance_m, n.shop_id))
    return found[:count]


def neighbour_table(
    origins: Sequence[Place], places: Sequence[Place], *, count: int, radius_m: float
) -> dict[str, list[Neighbour]]:
    """Nearest shops of every origin, computed once at start (O(n²), n is a block's shops)."""
    return {o.id: nearest_shops(o, places, count=count, radius_m=radius_m) for o in origins}
