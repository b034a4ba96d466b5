"""Great-circle geometry for shops: distances, bearings and nearest neighbours."""

from __future__ import annotations

import functools
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
    return _distance(_spot(lat1, lon1), _spot(lat2, lon2))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north."""
    return _bearing(_spot(lat1, lon1), _spot(lat2, lon2))


_Spot = tuple[float, float, float, float]
"""A position as the formulas take it: latitude in radians, longitude in degrees, and the
latitude's cosine and sine, worked out once per place rather than once per pair."""


def _spot(lat: float, lon: float) -> _Spot:
    p = math.radians(lat)
    return (p, lon, math.cos(p), math.sin(p))


def _distance(a: _Spot, b: _Spot) -> float:
    """Haversine distance in metres."""
    dp, dl = b[0] - a[0], math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + a[2] * b[2] * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _bearing(a: _Spot, b: _Spot) -> float:
    """Initial bearing from ``a`` to ``b``, degrees clockwise from north."""
    dl = math.radians(b[1] - a[1])
    y = math.sin(dl) * b[2]
    x = a[2] * b[3] - a[3] * b[2] * math.cos(dl)
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
# Shops in a shop's own grid cell on average: a few, so that a search visits few empty
# cells and few far shops.
_SHOPS_PER_CELL = 4
# Passes that shrink the cells where shops crowd (along streets) more than the average says.
_CELL_PASSES = 4


class NeighbourIndex:
    """Nearest places in O(log n)-ish per query: grid buckets over a plane through the earth.

    Each place is a 3-D point on the sphere, projected onto the plane through the
    earth's centre square to the places' mean direction (flat over a city). A
    projection never lengthens a distance, and chord length through the sphere
    grows with great-circle distance, so a square of grid cells around an origin
    bounds what can be nearer; only those candidates get the exact haversine
    distance, and ranking is the brute force's own ``(distance, shop id)``, so
    results are identical to comparing every pair.
    """

    def __init__(self, places: Sequence[Place]) -> None:
        """Bucket ``places`` (built once, O(n))."""
        self._ids = [p.id for p in places]
        self._spots = [_spot(p.lat, p.lon) for p in places]
        self._points = [_unit_point(p.lat, p.lon) for p in places]
        self._plane = _plane_through(self._points)
        flat = [self._flat(xyz) for xyz in self._points]
        self._cell_m, self._cells = _buckets(flat)

    def _flat(self, xyz: tuple[float, float, float]) -> tuple[float, float]:
        (ax, ay, az), (bx, by, bz) = self._plane
        x, y, z = xyz
        return (ax * x + ay * y + az * z, bx * x + by * y + bz * z)

    def nearest(
        self, origin: Place, *, count: int, radius_m: float | None = None
    ) -> list[Neighbour]:
        """The ``count`` places nearest ``origin`` (itself excluded), ties broken by shop id."""
        if count <= 0 or not self._points:
            return []
        centre = _unit_point(origin.lat, origin.lon)
        u, v = self._flat(centre)
        size = self._cell_m
        cu, cv = math.floor(u / size), math.floor(v / size)
        # No search needs to reach past the radius, nor past the whole set.
        reach_m = 2 * EARTH_RADIUS_M if radius_m is None else min(radius_m, 2 * EARTH_RADIUS_M)
        points, cells, dist = self._points, self._cells, math.dist
        chords: list[tuple[float, int]] = []
        ring = 0
        while True:
            if 8 * ring > len(points):
                # Sparse or lopsided places: ranking them all is cheaper than more cells.
                chords = [(dist(centre, xyz), i) for i, xyz in enumerate(points)]
                break
            for du, dv in _ring_cells(ring):
                members = cells.get((cu + du, cv + dv))
                if members:
                    chords += [(dist(centre, points[i]), i) for i in members]
            # Everything outside the searched square is more than ring * cell away.
            searched_m = ring * size
            if searched_m >= reach_m + _CHORD_SLACK_M:
                break
            # One more than count: the origin itself may be among them.
            if len(chords) > count:
                chords.sort()  # mostly sorted already after the first ring: cheap
                if chords[count][0] + _CHORD_SLACK_M <= searched_m:
                    break
            ring += 1
        return self._ranked(origin, chords, count, radius_m)

    def _ranked(
        self, origin: Place, chords: list[tuple[float, int]], count: int, radius_m: float | None
    ) -> list[Neighbour]:
        """The brute force's ranking of the candidates that can be among the ``count`` nearest."""
        ids, spots = self._ids, self._spots
        own_id, here = origin.id, _spot(origin.lat, origin.lon)
        chords.sort()
        kept = [(c, i) for c, i in chords if ids[i] != own_id]
        limit = kept[count - 1][0] if len(kept) >= count else math.inf
        reach = math.inf if radius_m is None else radius_m
        ranked = sorted(
            (d, ids[i], i)
            for c, i in kept
            if c <= limit + _CHORD_SLACK_M and (d := _distance(here, spots[i])) <= reach
        )
        return [
            Neighbour(shop_id=shop_id, distance_m=d, bearing_deg=_bearing(here, spots[i]))
            for d, shop_id, i in ranked[:count]
        ]


def _unit_point(lat: float, lon: float) -> tuple[float, float, float]:
    """The place as a point on a sphere of the earth's radius, metres."""
    p, lam = math.radians(lat), math.radians(lon)
    return (
        EARTH_RADIUS_M * math.cos(p) * math.cos(lam),
        EARTH_RADIUS_M * math.cos(p) * math.sin(lam),
        EARTH_RADIUS_M * math.sin(p),
    )


Vector = tuple[float, float, float]


def _plane_through(points: Sequence[Vector]) -> tuple[Vector, Vector]:
    """Two unit vectors square to each other and to the points' mean direction.

    Any plane would keep the search exact; this one, tangent where the places
    are, keeps a city's shops as far apart as they are, so cells stay small.
    """
    n = len(points) or 1
    mean = [sum(c) / n for c in zip(*points, strict=True)] if points else [0.0, 0.0, 1.0]
    norm = math.hypot(*mean)
    normal = (0.0, 0.0, 1.0) if norm < 1.0 else (mean[0] / norm, mean[1] / norm, mean[2] / norm)
    # The axis least along the normal gives a first direction that is never degenerate.
    axis = min(range(3), key=lambda k: abs(normal[k]))
    along = [1.0 if k == axis else 0.0 for k in range(3)]
    first = _unit(_cross(normal, (along[0], along[1], along[2])))
    return first, _cross(normal, first)


def _cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _unit(a: Vector) -> Vector:
    norm = math.hypot(*a)
    return (a[0] / norm, a[1] / norm, a[2] / norm)


def _buckets(
    flat: Sequence[tuple[float, float]],
) -> tuple[float, dict[tuple[int, int], list[int]]]:
    """A cell edge giving a few places in each place's cell, and the places of each cell.

    The first guess spreads the places evenly over their bounding box; shops
    crowd along streets, so cells shrink while a place's cell holds many more
    than the average (never below 1 m).
    """
    if len(flat) < 2:
        return 2 * EARTH_RADIUS_M, {(0, 0): list(range(len(flat)))}
    us, vs = [u for u, _ in flat], [v for _, v in flat]
    area = max(max(us) - min(us), 1.0) * max(max(vs) - min(vs), 1.0)
    size = max(1.0, math.sqrt(area * _SHOPS_PER_CELL / len(flat)))
    for attempt in range(_CELL_PASSES):
        cells: dict[tuple[int, int], list[int]] = {}
        for i, (u, v) in enumerate(flat):
            cells.setdefault((math.floor(u / size), math.floor(v / size)), []).append(i)
        crowd = sum(len(members) ** 2 for members in cells.values()) / len(flat)
        if crowd <= 2 * _SHOPS_PER_CELL or size <= 1.0 or attempt == _CELL_PASSES - 1:
            break
        size = max(1.0, size * math.sqrt(_SHOPS_PER_CELL / crowd))
    return size, cells


@functools.cache
def _ring_cells(ring: int) -> tuple[tuple[int, int], ...]:
    """Offsets of the cells at Chebyshev distance exactly ``ring`` from a centre cell."""
    span = range(-ring, ring + 1)
    return tuple((du, dv) for du in span for dv in span if max(abs(du), abs(dv)) == ring)


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
