"""Write a gateway's ``lianfang.yaml`` from an installer's survey sheet (CSV).

A sheet may cover a whole city: each row is a shop and names the gateway that
serves it. The rows of the chosen gateway become its ``shops``. Shops of other
gateways become ``other_shops`` only when they lie within ``NEARBY_M`` (500 m)
of one of this gateway's shops: that covers the nearest-shop alert across a
block's edge at any radius up to 500 m (the default is 300 m), and keeps a
60-block city sheet from copying thousands of shops into every gateway's file.

Every problem in the sheet is reported at once, by file, line and column.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from gateway.config.model import GatewayConfig, Loc, NeighbourAlertConfig
from gateway.config.problems import Locate, Spot, explain_errors, path_text
from gateway.errors import ConfigError, ConfigProblem
from rules.geo import EARTH_RADIUS_M, distance_m

if TYPE_CHECKING:
    from pathlib import Path

COLUMNS = (
    "shop_id",
    "name",
    "trade",
    "street",
    "side",
    "number",
    "lat",
    "lon",
    "large_grid",
    "medium_grid",
    "small_grid",
    "gateway_id",
    "phone",
    "open",
    "close",
)
NEARBY_M = 500.0
TLS_PLACEHOLDERS = {
    "ca_file": "certs/ca.pem",
    "cert_file": "certs/gateway.pem",
    "key_file": "certs/gateway.key",
}
# Shop settings whose survey column has another name; the rest share their names.
_COLUMN_OF = {"id": "shop_id", "opens": "open", "closes": "close"}
_OPTIONAL = ("trade", "street", "number", "side", "phone", "opens", "closes", "account")
# Columns a sheet may have; blank or absent means the default.
_EXTRA_COLUMNS = ("account",)


@dataclass(frozen=True)
class SurveyRow:
    """One shop of the sheet: its cells (stripped), its position, and the line it is on."""

    line: int
    cells: dict[str, str]
    lat: float
    lon: float

    @property
    def id(self) -> str:
        """Shop id."""
        return self.cells["shop_id"]

    @property
    def gateway_id(self) -> str:
        """Gateway that serves the shop."""
        return self.cells["gateway_id"]


def read_survey(path: Path) -> list[SurveyRow]:
    """Every row of the sheet at ``path``.

    Raises:
        ConfigError: naming the file, line and column of every blank id, bad or
            blank position and repeated shop id, or the missing columns.
    """
    file = str(path)
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        has = ", ".join(reader.fieldnames or []) or "nothing"
        message = f"missing column(s) {', '.join(missing)} (the header has: {has})"
        raise ConfigError([ConfigProblem(file, "", message, 1)])
    rows: list[SurveyRow] = []
    problems: list[ConfigProblem] = []
    first_line: dict[str, int] = {}
    try:
        for raw in reader:
            cells = {c: (raw.get(c) or "").strip() for c in COLUMNS + _EXTRA_COLUMNS}
            row, found = _row(cells, reader.line_num, file, first_line)
            problems += found
            if row is not None:
                rows.append(row)
                first_line[row.id] = row.line
    except csv.Error as exc:
        problems.append(ConfigProblem(file, "", f"not a CSV sheet: {exc}", reader.line_num))
    if not rows and not problems:
        problems.append(ConfigProblem(file, "", "the sheet has no shops", 1))
    if problems:
        raise ConfigError(problems)
    return rows


def _read_text(path: Path) -> str:
    file = str(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "no such file")]) from None
    except UnicodeDecodeError:
        message = "not UTF-8 text; save the sheet as 'CSV UTF-8'"
        raise ConfigError([ConfigProblem(file, "", message)]) from None
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(file, "", message)]) from None


def _row(
    cells: dict[str, str], line: int, file: str, first_line: dict[str, int]
) -> tuple[SurveyRow | None, list[ConfigProblem]]:
    """The row, or None and what is wrong with it."""
    problems = [
        ConfigProblem(file, column, "is blank", line)
        for column in ("shop_id", "gateway_id")
        if not cells[column]
    ]
    if cells["shop_id"] in first_line:
        message = (
            f"duplicate shop_id {cells['shop_id']!r} (also at line {first_line[cells['shop_id']]})"
        )
        problems.append(ConfigProblem(file, "shop_id", message, line))
    position = []
    for column in ("lat", "lon"):
        try:
            value = float(cells[column])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            shown = repr(cells[column]) if cells[column] else None
            message = "must be a number in decimal degrees" if shown else "is blank"
            problems.append(ConfigProblem(file, column, message, line, shown))
        position.append(value)
    if problems:
        return None, problems
    return SurveyRow(line, cells, position[0], position[1]), []


def nearby(own: list[SurveyRow], others: list[SurveyRow], radius_m: float) -> list[SurveyRow]:
    """The ``others`` within ``radius_m`` of any of ``own``, in sheet order."""
    # A box around the block first, so that a city sheet costs little.
    margin = math.degrees(radius_m / EARTH_RADIUS_M)
    south, north = min(r.lat for r in own) - margin, max(r.lat for r in own) + margin
    widest = math.cos(math.radians(min(89.0, max(abs(south), abs(north)))))
    west = min(r.lon for r in own) - margin / widest
    east = max(r.lon for r in own) + margin / widest
    return [
        o
        for o in others
        if south <= o.lat <= north
        and west <= o.lon <= east
        and any(distance_m(s.lat, s.lon, o.lat, o.lon) <= radius_m for s in own)
    ]


def init_config(
    survey: Path,
    gateway_id: str,
    *,
    out: Path,
    broker_url: str,
    police_url: str | None = None,
    dc09: dict[str, Any] | None = None,
    timezone: str | None = None,
    force: bool = False,
    nearby_m: float = NEARBY_M,
) -> GatewayConfig:
    """Write ``out`` for ``gateway_id`` from the sheet at ``survey``; return what it holds.

    Raises:
        ConfigError: for a bad sheet, an unknown gateway, a bad broker URL, or
            an ``out`` that exists (unless ``force``).

    ``dc09`` adds a DC-09 forwarder named ``centre`` with these settings; a file
    that then holds its key is written readable by its owner only. ``timezone``
    (IANA name) is the zone the shops' opening hours are read in (``rules.timezone``).
    """
    rows = read_survey(survey)
    own = [r for r in rows if r.gateway_id == gateway_id]
    if not own:
        named = ", ".join(sorted({r.gateway_id for r in rows}))
        message = f"no shops of gateway {gateway_id!r}; the sheet has {named}"
        raise ConfigError([ConfigProblem(str(survey), "gateway_id", message)])
    others = nearby(own, [r for r in rows if r.gateway_id != gateway_id], nearby_m)
    data = _config_data(own, others, broker_url=broker_url, police_url=police_url)
    if dc09 is not None:
        data.setdefault("forwarders", []).append({"kind": "dc09", "name": "centre", **dc09})
        data["shops"] = data.pop("shops")  # keep shops after the forwarders in the file
        data["other_shops"] = data.pop("other_shops")
    if timezone is not None:
        data["rules"] = {"timezone": timezone}
        data["shops"] = data.pop("shops")
        data["other_shops"] = data.pop("other_shops")
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        options = [
            f"--{f['kind'].replace('police_mqtt', 'police')}" for f in data.get("forwarders", [])
        ]
        problems = explain_errors(exc, _survey_locator(str(survey), own, others, options))
        raise ConfigError(problems) from None
    _write(out, _render(data, survey=survey, nearby_m=nearby_m), force=force)
    if dc09 and dc09.get("key"):
        out.chmod(0o600)
    return config


def _config_data(
    own: list[SurveyRow], others: list[SurveyRow], *, broker_url: str, police_url: str | None
) -> dict[str, Any]:
    grids = Counter(r.cells["large_grid"] for r in own)
    large_grid = min(grids, key=lambda g: (-grids[g], g))
    data: dict[str, Any] = {
        "schema_version": 1,
        "gateway": {"id": own[0].gateway_id, "large_grid": large_grid},
        "state_dir": str(GatewayConfig.model_fields["state_dir"].default),
        "broker": _broker(broker_url),
        "drivers": [{"kind": "mqtt_ingest", "name": "shops"}],
    }
    if police_url is not None:
        data["forwarders"] = [
            {"kind": "police_mqtt", "name": "police", "broker": _broker(police_url)}
        ]
    data["neighbour_alert"] = NeighbourAlertConfig().model_dump()
    data["shops"] = [_shop(r) for r in own]
    data["other_shops"] = [{**_place(r), "gateway_id": r.gateway_id} for r in others]
    return data


def _broker(url: str) -> dict[str, Any]:
    if urlsplit(url).scheme == "mqtts":
        return {"url": url, "tls": dict(TLS_PLACEHOLDERS)}
    return {"url": url}


def _place(row: SurveyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.cells["name"],
        "lat": row.lat,
        "lon": row.lon,
        "grid": {
            "large": row.cells["large_grid"],
            "medium": row.cells["medium_grid"],
            "small": row.cells["small_grid"],
        },
    }


def _shop(row: SurveyRow) -> dict[str, Any]:
    shop = _place(row)
    for key in _OPTIONAL:
        if cell := row.cells[_COLUMN_OF.get(key, key)]:
            shop[key] = cell
    shop["devices"] = [{"id": "panel-1", "kind": "alarm_panel"}]
    return shop


def _survey_locator(
    file: str, own: list[SurveyRow], others: list[SurveyRow], forwarder_options: list[str]
) -> Locate:
    """Place a config path at the sheet's line and column, or at the init option it came from."""

    def locate(loc: Loc) -> Spot:
        section = {"shops": own, "other_shops": others}.get(str(loc[0])) if loc else None
        if section is not None and len(loc) > 1 and isinstance(loc[1], int):
            key = str(loc[2]) if len(loc) > 2 else ""
            column = (
                f"{loc[3]}_grid" if key == "grid" and len(loc) > 3 else _COLUMN_OF.get(key, key)
            )
            return Spot(file, column, section[loc[1]].line)
        option = {"broker": "--broker"}.get(str(loc[0])) if loc else None
        if loc and loc[0] == "forwarders" and len(loc) > 1 and isinstance(loc[1], int):
            option = forwarder_options[loc[1]]
            if len(loc) > 2 and option == "--dc09" and loc[2] != "url":
                option = f"--dc09-{str(loc[2]).replace('_url', '').replace('_', '-')}"
        if option is not None:
            return Spot("lianfang init", option, None)
        return Spot(file, path_text(loc), None)

    return locate


def _render(data: dict[str, Any], *, survey: Path, nearby_m: float) -> str:
    gateway = data["gateway"]
    header = (
        f"# Gateway {gateway['id']} (large grid {gateway['large_grid']}), written by"
        f" `lianfang init` from {survey.name}.\n"
        f"# shops: the {len(data['shops'])} shops this gateway serves.\n"
        f"# other_shops: the {len(data['other_shops'])} shops of other gateways within"
        f" {nearby_m:g} m of them,\n"
        "# for nearest-shop alerts across the block's edge.\n"
        "# Check it with `lianfang check` (add --online to connect to the brokers too).\n"
    )
    tls_note = (
        "# mqtts:// needs the broker's CA certificate and this gateway's client certificate\n"
        "# and key: put them at the paths below (relative to this file) before going online.\n"
    )
    with_tls = {"broker"} if "tls" in data["broker"] else set()
    if any("tls" in f.get("broker", {}) for f in data.get("forwarders", [])):
        with_tls.add("forwarders")
    parts = [header]
    for key, value in data.items():
        parts.append("\n" + (tls_note if key in with_tls else ""))
        parts.append(yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True))
    return "".join(parts)


def _write(out: Path, text: str, *, force: bool) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        message = "already exists; add --force to overwrite it"
        raise ConfigError([ConfigProblem(str(out), "", message)]) from None
    except OSError as exc:
        message = f"cannot write the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(str(out), "", message)]) from None
