"""The block drawn as SVG from the shops' coordinates: no tiles, no network, no script.

The status page colours the shops (each circle is ``id="shop-{id}"``) and the
commissioning report prints the same drawing, with a chosen shop's neighbour links.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.config.model import GatewayConfig, ShopPlace
from rules.geo import nearest_shops

WIDTH = 900
PADDING = 40
RADIUS = 6
METRES_PER_DEGREE = 111_320.0


def _projection(shops: Sequence[ShopPlace]) -> tuple[float, float, float, float, float]:
    """Centre latitude and longitude, metres per degree of longitude there, px per metre, height."""
    lat0 = sum(s.lat for s in shops) / len(shops)
    lon0 = sum(s.lon for s in shops) / len(shops)
    per_lon = METRES_PER_DEGREE * math.cos(math.radians(lat0))
    # Symmetric about the centre, where the gateway is drawn.
    half_x = max([*(abs(s.lon - lon0) * per_lon for s in shops), 25.0])
    half_y = max([*(abs(s.lat - lat0) * METRES_PER_DEGREE for s in shops), 25.0])
    scale = min((WIDTH - 2 * PADDING) / (2 * half_x), (WIDTH - 2 * PADDING) / (2 * half_y))
    return lat0, lon0, per_lon, scale, 2 * half_y * scale + 2 * PADDING


def block_map_svg(config: GatewayConfig, *, links_of: str | None = None) -> str:
    """The block's shops as points around the gateway; ``links_of`` adds that shop's alert links.

    North is up and both axes keep the same metres per pixel (an equirectangular
    projection about the block's centre, exact enough over a street). The
    gateway is drawn at the centre of its shops: the config holds no position for it.
    """
    from html import escape  # noqa: PLC0415 - html's entity table only for a gateway that draws

    shops = config.shops
    lat0, lon0, per_lon, scale, height = _projection(shops)

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (
            WIDTH / 2 + (lon - lon0) * per_lon * scale,
            height / 2 - (lat - lat0) * METRES_PER_DEGREE * scale,
        )

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" '
            f'class="block-map" role="img" aria-label="Map of the block, {len(shops)} shops">'
        ),
        f'<rect width="{WIDTH}" height="{height:.0f}" fill="#f7f7f2"/>',
    ]
    if links_of is not None:
        origin = next(s for s in shops if s.id == links_of)
        ox, oy = xy(origin.lat, origin.lon)
        places = {s.id: s for s in shops}
        alert = config.neighbour_alert
        for n in nearest_shops(origin, shops, count=alert.count, radius_m=alert.radius_m):
            nx, ny = xy(places[n.shop_id].lat, places[n.shop_id].lon)
            parts.append(
                f'<line class="link" x1="{ox:.1f}" y1="{oy:.1f}" x2="{nx:.1f}" y2="{ny:.1f}" '
                f'stroke="#d33" stroke-width="2"><title>{escape(links_of)} to {n.shop_id}: '
                f"{n.distance_m:.0f} m {n.compass}</title></line>"
            )
    gx, gy = WIDTH / 2, height / 2
    parts.append(
        f'<rect id="gateway" x="{gx - 9:.1f}" y="{gy - 9:.1f}" width="18" height="18" '
        f'fill="#225" ><title>gateway {escape(config.gateway.id)}</title></rect>'
    )
    for shop in shops:
        x, y = xy(shop.lat, shop.lon)
        chosen = " chosen" if shop.id == links_of else ""
        parts.append(
            f'<g class="shop{chosen}" id="shop-{escape(shop.id)}">'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{RADIUS}"/>'
            f'<text x="{x:.1f}" y="{y - RADIUS - 2:.1f}" text-anchor="middle" font-size="8">'
            f"{escape(shop.id.lstrip('S0') or shop.id)}</text>"
            f"<title>{escape(shop.id)} {escape(shop.name)}</title></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
