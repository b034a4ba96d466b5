"""Great-circle geometry for shops: distances, bearings and nearest neighbours."""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Iterable, Sequence
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


# Candidates are collected on 3-D chords, then ranked on exact great-circle distances:
# anything within this much more chord than the last kept candidate is ranked too, so the
# rounding of the two formulas can never let a shop the brute force keeps slip out.
_CHORD_SLACK_M = 0.01
# Shops per grid cell on average (on the sphere's surface): a few, so that a search
# visits few empty cells and few far shops.
_SHOPS_PER_CELL = 6


class NeighbourIndex:
    """Nearest places in O(log n)-ish per query: grid buckets over 3-D unit-sphere points.

    Chord length through the sphere grows with great-circle distance, so a cube of
    grid cells around an origin bounds what can be nearer; only those candidates
    get the exact haversine distance, and ranking is the brute force's own
    ``(distance, shop id)``, so results are identical to comparing every pair.
    """

    def __init__(self, places: Sequence[Place]) -> None:
        """Bucket ``places`` (built once, O(n))."""
        self._points = [(p.id, p.lat, p.lon, _unit_point(p.lat, p.lon)) for p in places]
        self._cell_m = _cell_size_m([xyz for *_, xyz in self._points])
        self._cells: dict[tuple[int, int, int], list[int]] = {}
        for i, (*_, xyz) in enumerate(self._points):
            self._cells.setdefault(self._cell_of(xyz), []).append(i)

    def _cell_of(self, xyz: tuple[float, float, float]) -> tuple[int, int, int]:
        size = self._cell_m
        return (math.floor(xyz[0] / size), math.floor(xyz[1] / size), math.floor(xyz[2] / size))

    def _chords(
        self, centre: tuple[float, float, float], origin_id: str, members: Iterable[int]
    ) -> list[tuple[float, int]]:
        points = self._points
        return [(math.dist(centre, points[i][3]), i) for i in members if points[i][0] != origin_id]

    def nearest(
        self, origin: Place, *, count: int, radius_m: float | None = None
    ) -> list[Neighbour]:
        """The ``count`` places nearest ``origin`` (itself excluded), ties broken by shop id."""
        if count <= 0 or not self._points:
            return []
        centre = _unit_point(origin.lat, origin.lon)
        cx, cy, cz = self._cell_of(centre)
        # No search needs to reach past the radius, nor past the whole set.
        reach_m = 2 * EARTH_RADIUS_M if radius_m is None else min(radius_m, 2 * EARTH_RADIUS_M)
        chords: list[tuple[float, int]] = []
        ring = 0
        while True:
            if len(_shell_cells(ring)) > len(self._points):
                # Sparse or lopsided places: ranking them all is cheaper than more cells.
                chords = self._chords(centre, origin.id, range(len(self._points)))
                break
            for cell in _shell_cells(ring):
                members = self._cells.get((cx + cell[0], cy + cell[1], cz + cell[2]))
                if members:
                    chords += self._chords(centre, origin.id, members)
            # Everything outside the searched cube is more than ring * cell away.
            searched_m = ring * self._cell_m
            if searched_m >= reach_m + _CHORD_SLACK_M:
                break
            if len(chords) >= count:
                kth = heapq.nsmallest(count, chords)[-1][0]
                if kth + _CHORD_SLACK_M <= searched_m:
                    break
            ring += 1
        chords.sort()
        limit = chords[count - 1][0] if len(chords) >= count else math.inf
        found = [
            Neighbour(
                shop_id=shop_id,
                distance_m=distance_m(origin.lat, origin.lon, lat, lon),
                bearing_deg=bearing_deg(origin.lat, origin.lon, lat, lon),
            )
            for chord, i in chords
            if chord <= limit + _CHORD_SLACK_M
            for shop_id, lat, lon, _ in (self._points[i],)
        ]
        if radius_m is not None:
            found = [n for n in found if n.distance_m <= radius_m]
        found.sort(key=lambda n: (n.distance_m, n.shop_id))
        return found[:count]


def _unit_point(lat: float, lon: float) -> tuple[float, float, float]:
    """The place as a point on a sphere of the earth's radius, metres."""
    p, lam = math.radians(lat), math.radians(lon)
    return (
        EARTH_RADIUS_M * math.cos(p) * math.cos(lam),
        EARTH_RADIUS_M * math.cos(p) * math.sin(lam),
        EARTH_RADIUS_M * math.sin(p),
    )


def _cell_size_m(points: Sequence[tuple[float, float, float]]) -> float:
    """A cell edge giving a few places per cell, whatever the spread (never below 1 m)."""
    if len(points) < 2:
        return 2 * EARTH_RADIUS_M
    spans = sorted(max(c) - min(c) for c in zip(*points, strict=True))
    # Shops lie on a surface: the two widest spans of the box hold them.
    area = max(spans[1], 1.0) * max(spans[2], 1.0)
    return max(1.0, math.sqrt(area * _SHOPS_PER_CELL / len(points)))


@functools.cache
def _shell_cells(ring: int) -> tuple[tuple[int, int, int], ...]:
    """Offsets of the cells at Chebyshev distance exactly ``ring`` from a centre cell."""
    span = range(-ring, ring + 1)
    return tuple(
        (dx, dy, dz)
        for dx in span
        for dy in span
        for dz in span
        if max(abs(dx), abs(dy), abs(dz)) == ring
    )


def nearest_shops(
    origin: Place, places: Sequence[Place], *, count: int, radius_m: float | None = None
) -> list[Neighbour]:
    """The ``count`` places nearest ``origin`` (itself excluded), ties broken by shop id.

    Bearings point from ``origin`` to each neighbour.
    """
    return NeighbourIndex(places).nearest(origin, count=count, radius_m=radius_m)


def neighbour_table(
    origins: Iterable[Place], places: Sequence[Place], *, count: int, radius_m: float
) -> dict[str, list[Neighbour]]:
    """Nearest shops of every origin, computed once at start (one index, O(n log n))."""
    index = NeighbourIndex(places)
    return {o.id: index.nearest(o, count=count, radius_m=radius_m) for o in origins}
