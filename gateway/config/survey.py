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
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from gateway.config import event_writer
from gateway.config.model import GatewayConfig, Loc, NeighbourAlertConfig, StatusPageConfig
from gateway.config.preflight import Finding, map_findings
from gateway.config.problems import Locate, Spot, explain_errors, path_text
from gateway.errors import ConfigError, ConfigProblem
from rules.geo import EARTH_RADIUS_M, distance_m

try:
    from yaml import CSafeDumper as _SafeDumper  # libyaml writes a city's shops 3-4 times faster
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeDumper as _SafeDumper  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Callable

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
# The systemd unit's StateDirectory=lianfang.
SYSTEM_STATE_DIR = Path("/var/lib/lianfang")
# Where `init --police-ca/--police-cert/--police-key` copy their files, beside the config.
POLICE_CERTS = {
    "ca_file": Path("certs/police-ca.pem"),
    "cert_file": Path("certs/police-gateway.pem"),
    "key_file": Path("certs/police-gateway.key"),
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


def default_state_dir(config_dir: Path) -> Path:
    """Where init puts the state of a config written in ``config_dir``.

    ``/var/lib/lianfang`` for a config under ``/etc`` (a system install, whose
    systemd unit makes that directory); else ``state`` beside the config.
    """
    if config_dir.resolve().is_relative_to("/etc"):
        return SYSTEM_STATE_DIR
    return Path(GatewayConfig.model_fields["state_dir"].default)


def init_config(
    survey: Path,
    gateway_id: str,
    *,
    out: Path,
    broker_url: str,
    police_url: str | None = None,
    police_tls: dict[str, Path] | None = None,
    dc09: dict[str, Any] | None = None,
    timezone: str | None = None,
    state_dir: Path | None = None,
    sms_port: str | None = None,
    mesh_keys: Path | None = None,
    status_page: bool = False,
    force: bool = False,
    nearby_m: float = NEARBY_M,
    warn: Callable[[Finding], None] | None = None,
) -> GatewayConfig:
    """Write ``out`` for ``gateway_id`` from the sheet at ``survey``; return what it holds.

    Raises:
        ConfigError: for a bad sheet, an unknown gateway, a bad broker URL, an
            unreadable certificate, or an ``out`` that exists (unless ``force``).

    ``police_tls`` maps ``ca_file``/``cert_file``/``key_file`` to files that are
    copied beside ``out`` (``certs/police-*``; the key readable by its owner only)
    and named in the police broker's ``tls``; the others stay placeholders.
    ``dc09`` adds a DC-09 forwarder named ``centre`` with these settings; a file
    that then holds its key is written readable by its owner only. ``timezone``
    (IANA name) is the zone the shops' opening hours are read in (``rules.timezone``).
    ``sms_port`` names a GSM modem's port and texts alerted shops through it.
    With neither police nor DC-09, ``no_forwarders_ok: true`` is written and said.
    ``mesh_keys`` is the folder of the gateways' mesh keys (``lianfang keys mesh``):
    ``{id}.key`` becomes this gateway's ``mesh_key_file``, and ``{id}.pub`` of
    every gateway in ``other_shops`` its entry in ``other_gateways``.
    ``status_page`` turns the local status page on, on loopback (``StatusPageConfig``).
    ``warn`` hears of shops that look misplaced on the map, located in the sheet.
    """
    rows = read_survey(survey)
    own = [r for r in rows if r.gateway_id == gateway_id]
    if not own:
        named = ", ".join(sorted({r.gateway_id for r in rows}))
        message = f"no shops of gateway {gateway_id!r}; the sheet has {named}"
        raise ConfigError([ConfigProblem(str(survey), "gateway_id", message)])
    others = nearby(own, [r for r in rows if r.gateway_id != gateway_id], nearby_m)
    certs = _read_certs(police_tls or {}, police_url)
    forwarders = _forwarders(police_url, {n: dest for n, (dest, _) in certs.items()}, dc09)
    data = _config_data(
        own,
        others,
        broker_url=broker_url,
        forwarders=forwarders,
        state_dir=state_dir or default_state_dir(out.parent),
        timezone=timezone,
        sms_port=sms_port,
    )
    if status_page:
        data["status_page"] = {"listen": StatusPageConfig().listen}
    if mesh_keys is not None:
        folder = mesh_keys.resolve()
        data["gateway"]["mesh_key_file"] = str(folder / f"{gateway_id}.key")
        data["other_gateways"] = {
            g: str(folder / f"{g}.pub") for g in sorted({r.gateway_id for r in others})
        }
    locate = _survey_locator(str(survey), own, others, [_option(f) for f in forwarders])
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain_errors(exc, locate)) from None
    _write(out, _render(data, survey=survey, nearby_m=nearby_m), force=force)
    if dc09 and dc09.get("key"):
        out.chmod(0o600)
    for dest, content in certs.values():
        _write_cert(out.parent / dest, content)
    if warn is not None:
        if not forwarders:
            message = "none given: no_forwarders_ok: true is written; alarms reach no police"
            warn(Finding(ConfigProblem("lianfang init", "--police", message), warning=True))
        for finding in map_findings(config, locate):
            warn(finding)
    return config


def _forwarders(
    police_url: str | None, certs: dict[str, Path], dc09: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The forwarders init writes: the police broker (its tls naming ``certs``), DC-09."""
    forwarders = []
    if police_url is not None:
        broker = _broker(police_url)
        if "tls" in broker:
            broker["tls"] |= {name: str(dest) for name, dest in certs.items()}
        forwarders.append({"kind": "police_mqtt", "name": "police", "broker": broker})
    if dc09 is not None:
        forwarders.append({"kind": "dc09", "name": "centre", **dc09})
    return forwarders


def _option(forwarder: dict[str, Any]) -> str:
    """The init option a forwarder came from."""
    return f"--{forwarder['kind'].replace('police_mqtt', 'police')}"


def _read_certs(given: dict[str, Path], police_url: str | None) -> dict[str, tuple[Path, bytes]]:
    """Each given certificate or key: where it goes beside the config, and its bytes."""
    problems = []
    found = {}
    for name, source in given.items():
        option = f"--police-{name.removesuffix('_file')}"
        if police_url is None or urlsplit(police_url).scheme != "mqtts":
            problems.append(ConfigProblem("lianfang init", option, "needs --police mqtts://..."))
            continue
        try:
            found[name] = (POLICE_CERTS[name], source.read_bytes())
        except OSError as exc:
            message = f"cannot read {source}: {exc.strerror or exc}"
            problems.append(ConfigProblem("lianfang init", option, message))
    if problems:
        raise ConfigError(problems)
    return found


def _write_cert(path: Path, content: bytes) -> None:
    """Write a certificate, or a key (``.key``) that only its owner may read."""
    mode = 0o600 if path.suffix == ".key" else 0o644
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # an existing file keeps its mode through O_CREAT
            f.write(content)
    except OSError as exc:
        message = f"cannot write the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(str(path), "", message)]) from None


def _config_data(
    own: list[SurveyRow],
    others: list[SurveyRow],
    *,
    broker_url: str,
    forwarders: list[dict[str, Any]],
    state_dir: Path,
    timezone: str | None,
    sms_port: str | None = None,
) -> dict[str, Any]:
    grids = Counter(r.cells["large_grid"] for r in own)
    large_grid = min(grids, key=lambda g: (-grids[g], g))
    data: dict[str, Any] = {
        "schema_version": 1,
        "gateway": {"id": own[0].gateway_id, "large_grid": large_grid},
        "state_dir": str(state_dir),
        "broker": _broker(broker_url),
        "drivers": [{"kind": "mqtt_ingest", "name": "shops"}],
        "forwarders": forwarders,
    }
    if not forwarders:
        data["no_forwarders_ok"] = True
    data["neighbour_alert"] = NeighbourAlertConfig().model_dump()
    if sms_port is not None:
        data["neighbour_alert"]["channels"] = ["mqtt", "sms"]
        data["sms"] = {"port": sms_port}
    if timezone is not None:
        data["rules"] = {"timezone": timezone}
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
    no_forwarder_note = (
        "# No police or DC-09 receiver was given: alarms reach the neighbours only, and\n"
        "# no_forwarders_ok says that is meant. Add a forwarder and delete that line.\n"
    )
    notes = {"broker": tls_note} if _placeholders(data["broker"]) else {}
    if any(_placeholders(f.get("broker", {})) for f in data["forwarders"]):
        notes["forwarders"] = tls_note
    if not data["forwarders"]:
        notes["forwarders"] = no_forwarder_note
    if "status_page" in data:
        notes["status_page"] = (
            "# The local status page, on this machine only; see docs/status-page.md to open it\n"
            "# to the street's network (a token and TLS).\n"
        )
    parts = [header]
    for key, value in data.items():
        parts.append("\n" + notes.get(key, ""))
        parts.append(event_writer.dump({key: value}, _SafeDumper))
    return "".join(parts)


def _placeholders(broker: dict[str, Any]) -> bool:
    """Whether a broker's tls still names a placeholder for the installer to fill."""
    return any(v in TLS_PLACEHOLDERS.values() for v in broker.get("tls", {}).values())


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
