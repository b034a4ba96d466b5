"""Offline checks of this machine against a valid config: what ``lianfang run`` will need.

``lianfang check`` (the systemd unit's ``ExecStartPre``) runs these after the
config validates, as the user the gateway runs as. They read the filesystem and
never touch the network (``--online`` does that):

- every TLS file and broker password file a link names exists and this user
  can read it (errors);
- the state directory is a writable folder, or can be created (error);
- a serial port given as a device path (a driver's, the SMS modem's) exists (a
  warning: USB adapters are often plugged in later, and the driver keeps
  retrying) and this user may open it (error);
- the SIM's PIN file, if named, is readable by this user and no one else (error);
- the journal, if there is one, passes SQLite's quick check (a warning: the
  gateway salvages a damaged journal when it starts);
- a forwarder exists, or ``no_forwarders_ok: true`` says none is wanted (error);
- every shop lies within ``FAR_FROM_BLOCK_M`` of the block's median position and
  has another shop within ``neighbour_alert.radius_m`` (warnings: a one-degree
  typo in a survey puts a shop 111 km away, where no neighbour hears its panic).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.config.model import GatewayConfig, Loc
from gateway.config.problems import Locate
from gateway.errors import ConfigProblem
from gateway.journal_repair import integrity_problem
from gateway.mqtt.client import BrokerConfig
from rules.geo import NeighbourIndex, distance_m

FAR_FROM_BLOCK_M = 2000.0
_TLS_FIELDS = ("ca_file", "cert_file", "key_file")


@dataclass(frozen=True)
class Finding:
    """One problem found on this machine; a warning does not stop the gateway from starting."""

    problem: ConfigProblem
    warning: bool = False

    def __str__(self) -> str:
        """``file:line: path: message``, the message led by ``warning:`` for a warning."""
        if not self.warning:
            return str(self.problem)
        return str(dataclasses.replace(self.problem, message=f"warning: {self.problem.message}"))


def preflight(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """Every finding for the resolved ``config`` (paths taken from its file's folder), by line."""
    findings = [
        *tls_findings(config, locate),
        *_state_dir_findings(config, locate),
        *_journal_findings(config, locate),
        *_serial_findings(config, locate),
        *_pin_findings(config, locate),
        *_forwarder_findings(config, locate),
        *_mesh_findings(config, locate),
        *map_findings(config, locate),
    ]
    return sorted(findings, key=lambda f: (f.problem.line or 0, f.problem.path))


def user_name() -> str:
    """The name of the user this process runs as (its uid if it has no name)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _at(locate: Locate, loc: Loc, message: str, *, warning: bool = False) -> Finding:
    spot = locate(loc)
    return Finding(ConfigProblem(spot.file, spot.path, message, spot.line), warning=warning)


def _tls_paths(config: GatewayConfig) -> Iterator[tuple[Loc, Path]]:
    """Each TLS, password or key file the config names, with its key path."""

    def of_broker(base: Loc, broker: BrokerConfig) -> Iterator[tuple[Loc, Path]]:
        if broker.tls is not None:
            for name in _TLS_FIELDS:
                if (path := getattr(broker.tls, name)) is not None:
                    yield (*base, "tls", name), path
        if broker.password_file is not None:
            yield (*base, "password_file"), broker.password_file

    yield from of_broker(("broker",), config.broker)
    yield from _mesh_key_paths(config)
    for i, forwarder in enumerate(config.forwarders):
        # By field, so that a new forwarder's broker or *_file is checked with no change here.
        for name in type(forwarder).model_fields:
            value = getattr(forwarder, name)
            if isinstance(value, BrokerConfig):
                yield from of_broker(("forwarders", i, name), value)
            elif name.endswith("_file") and isinstance(value, Path):
                yield ("forwarders", i, name), value
    yield from _status_page_paths(config)


def _status_page_paths(config: GatewayConfig) -> Iterator[tuple[Loc, Path]]:
    """The status page's TLS certificate and key."""
    page = config.status_page
    for name in ("tls_cert", "tls_key"):
        if page is not None and (path := getattr(page, name)) is not None:
            yield ("status_page", name), path


def _mesh_key_paths(config: GatewayConfig) -> Iterator[tuple[Loc, Path]]:
    """The gateway's own mesh key and the other gateways' public ones."""
    if config.gateway.mesh_key_file is not None:
        yield ("gateway", "mesh_key_file"), config.gateway.mesh_key_file
    for gateway_id, public_key in config.other_gateways.items():
        yield ("other_gateways", gateway_id), public_key


def tls_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """A TLS or password file that is missing, not a file, or not readable by this user (errors)."""
    found = []
    for loc, path in _tls_paths(config):
        try:
            with path.open("rb"):
                continue
        except FileNotFoundError:
            message = f"no such file: {path}"
        except IsADirectoryError:
            message = f"is a folder, not a file: {path}"
        except OSError as exc:
            message = f"{user_name()} cannot read {path}: {exc.strerror or exc}"
        found.append(_at(locate, loc, message))
    return found


def _state_dir_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """The state directory must be a folder this user can write in, or be creatable."""
    state = config.state_dir
    existing = next((p for p in (state, *state.parents) if p.exists()), None)
    if existing == state:
        if not state.is_dir():
            message = f"{state} is not a folder"
        elif not os.access(state, os.W_OK | os.X_OK):
            message = f"{user_name()} cannot write in {state}"
        else:
            return []
    elif existing is None or not existing.is_dir():
        message = f"{state} cannot be created: {existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        message = f"{state} does not exist and {user_name()} cannot create it in {existing}"
    else:
        return []
    return [_at(locate, ("state_dir",), message)]


def _journal_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """A damaged journal (a warning: the gateway moves it aside and salvages it as it starts)."""
    problem = integrity_problem(config.journal_path, readonly=True)
    if problem is None:
        return []
    message = (
        f"journal {config.journal_path} is damaged ({problem}); the gateway will move it"
        " aside and salvage what it can read when it starts"
    )
    return [_at(locate, ("state_dir",), message, warning=True)]


def _serial_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """A device path (not a pyserial URL) that is absent (warning) or that this user cannot open."""
    found = []
    ports: list[tuple[Loc, object]] = [
        (("drivers", i, "port"), getattr(driver, "port", None))
        for i, driver in enumerate(config.drivers)
    ]
    if config.sms is not None:
        ports.append((("sms", "port"), config.sms.port))
    for at, port in ports:
        if not isinstance(port, str) or "://" in port:
            continue
        if not os.path.exists(port):  # noqa: PTH110 - a device name, kept as text like pyserial
            message = (
                f"no device {port} now; the gateway keeps retrying it, so this is fine"
                " if the adapter is plugged in later"
            )
            found.append(_at(locate, at, message, warning=True))
        elif not os.access(port, os.R_OK | os.W_OK):
            message = (
                f"{user_name()} cannot open {port}; add the user to the device's group"
                " (often dialout)"
            )
            found.append(_at(locate, at, message))
    return found


def _pin_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """The SIM PIN file: there, readable, and not readable by others (like a key)."""
    pin = config.sms.pin_file if config.sms else None
    if pin is None:
        return []
    try:
        mode = pin.stat().st_mode
        pin.read_bytes()
    except OSError as exc:
        return [
            _at(locate, ("sms", "pin_file"), f"{user_name()} cannot read {pin}: {exc.strerror}")
        ]
    if mode & 0o077:
        message = f"{pin} may be read by others (mode {mode & 0o777:o}); chmod 600 it"
        return [_at(locate, ("sms", "pin_file"), message)]
    return []


def _forwarder_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """No forwarder is an error unless ``no_forwarders_ok`` says it is meant."""
    if config.forwarders or config.no_forwarders_ok:
        return []
    message = (
        "no forwarder: alarms would reach the neighbours but never the police;"
        " add one (police_mqtt, dc09 or webhook), or set no_forwarders_ok: true if that is meant"
    )
    return [_at(locate, ("forwarders",), message)]


def _mesh_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """Shops of other gateways the mesh cannot reach for want of keys (warnings).

    Mesh notices are signed: with no key of its own, a gateway sends none; with
    no key of a neighbour, it refuses that neighbour's.
    """
    if not config.other_shops or not any(f.kind == "police_mqtt" for f in config.forwarders):
        return []
    neighbours = sorted({s.gateway_id for s in config.other_shops})
    found = []
    if config.gateway.mesh_key_file is None:
        message = (
            f"no mesh key: shops of {', '.join(neighbours)} get no notices from this gateway;"
            " make one with `lianfang keys mesh` (or `lianfang init --mesh-keys DIR`)"
        )
        found.append(_at(locate, ("gateway",), message, warning=True))
    unknown = [g for g in neighbours if g not in config.other_gateways]
    if unknown:
        message = (
            f"no public mesh key of {', '.join(unknown)}: notices from there are refused;"
            " list their .pub files under other_gateways"
        )
        found.append(_at(locate, ("other_shops",), message, warning=True))
    return found


def map_findings(config: GatewayConfig, locate: Locate) -> list[Finding]:
    """Shops far from the block's median position, or with no shop within the alert radius."""
    shops = config.shops
    places = [*shops, *config.other_shops]
    radius = config.neighbour_alert.radius_m
    mid_lat = statistics.median(s.lat for s in shops)
    mid_lon = statistics.median(s.lon for s in shops)
    index = NeighbourIndex(places)
    found = []
    for i, shop in enumerate(shops):
        far = distance_m(shop.lat, shop.lon, mid_lat, mid_lon)
        if far > FAR_FROM_BLOCK_M:
            message = (
                f"shop {shop.id} ({shop.name}) is {_length(far)} from the block's median"
                f" position ({mid_lat:.6f}, {mid_lon:.6f}); is its position a typo?"
            )
        else:
            nearest = index.nearest(shop, count=1)
            if nearest and nearest[0].distance_m <= radius:
                continue
            what = (
                f"the nearest is {_length(nearest[0].distance_m)} away"
                if nearest
                else "it is alone"
            )
            message = (
                f"shop {shop.id} ({shop.name}) has no other shop within"
                f" neighbour_alert.radius_m ({radius:g} m; {what}): its panic alerts no neighbour"
            )
        found.append(_at(locate, ("shops", i, "lat"), message, warning=True))
    return found


def _length(metres: float) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"
