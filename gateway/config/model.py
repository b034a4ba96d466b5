"""The gateway's configuration: one root model that rejects unknown keys.

``GatewayConfig`` is the whole ``lianfang.yaml``. Every field documents itself
(``lianfang config schema`` prints the JSON schema). Validators are pure: they
never touch the disk or the network; ``lianfang check --online`` does that.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from gateway.config import kinds
from gateway.mqtt.client import BrokerConfig
from rules.defaults import DEFAULT_RULES
from rules.models import CommandsConfig, Escalate, Forward, RulesConfig, Siren

if TYPE_CHECKING:
    from drivers import DriverConfigUnion
    from gateway.forwarders import ForwarderConfigUnion

# Ids travel in MQTT topics: no '/', '+', '#' or spaces.
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")]
Loc = tuple[str | int, ...]
Channel = Literal["mqtt", "sms"]


def _repeats(what: str, key: str, sections: dict[str, Sequence[BaseModel]]) -> list[dict[str, Any]]:
    """Every item whose ``key`` value came earlier in ``sections``.

    Each is told as what, value, where (``at``) and where the value came first.
    """
    first: dict[str, Loc] = {}
    found = []
    for section, items in sections.items():
        for i, item in enumerate(items):
            value, at = getattr(item, key), (section, i, key)
            if value in first:
                found.append({"what": what, "value": value, "at": at, "first": first[value]})
            else:
                first[value] = at
    return found


def _duplicate_error(repeats: list[dict[str, Any]]) -> PydanticCustomError:
    """One error for all repeats; its context lets ``lianfang check`` point at each item."""
    summary = "; ".join(dict.fromkeys(f"{r['what']} {r['value']!r} is repeated" for r in repeats))
    return PydanticCustomError("duplicate", "{summary}", {"summary": summary, "repeats": repeats})


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    # Built at the first validation, not at import: the daemon validates its config in a
    # forked child (``load_config_apart``) and never needs these validators itself.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class GridCells(Strict):
    """The police three-level grid a shop lies in."""

    large: Identifier = Field(description="Police station area (large grid cell).")
    medium: Identifier = Field(description="Area a patrol reaches within 5 minutes.")
    small: Identifier = Field(description="Community cell with its own officer.")


class DeviceConfig(Strict):
    """A device paired to a shop."""

    id: Identifier = Field(description="Device id, unique within its shop (e.g. 'panel-1').")
    kind: Literal[
        "alarm_panel",
        "panic_button",
        "keypad",
        "rf433_button",
        "door_contact",
        "io_module",
        "leak_sensor",
        "smoke_detector",
    ] = Field(default="alarm_panel", description="What the device is.")


class ShopPlace(Strict):
    """A shop's identity and position; shared by own and neighbouring shops."""

    id: Identifier = Field(description="Shop id from the survey sheet (e.g. 'S00011').")
    name: str = Field(min_length=1, max_length=120, description="Shop name shown to neighbours.")
    lat: float = Field(ge=-90, le=90, description="Latitude in decimal degrees (WGS 84).")
    lon: float = Field(ge=-180, le=180, description="Longitude in decimal degrees (WGS 84).")
    grid: GridCells = Field(description="Grid cells of the shop.")


class ShopConfig(ShopPlace):
    """A shop served by this gateway."""

    trade: str | None = Field(default=None, description="Trade, as surveyed.")
    street: str | None = Field(default=None, description="Street name.")
    number: str | None = Field(default=None, description="House number on the street.")
    side: str | None = Field(default=None, description="Side of the street (N/S/E/W).")
    phone: str | None = Field(default=None, description="Shop phone for the police.")
    opens: time | None = Field(default=None, description="Opening time, HH:MM local.")
    closes: time | None = Field(default=None, description="Closing time, HH:MM local.")
    account: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Fa-f]{3,16}$",
        description="DC-09 account the shop reports under (3-16 hex); default: its id's digits.",
    )
    devices: list[DeviceConfig] = Field(
        default_factory=lambda: [DeviceConfig(id="panel-1")],
        description="Devices paired to the shop.",
    )

    @model_validator(mode="after")
    def _unique_devices(self) -> ShopConfig:
        repeats = _repeats("device id", "id", {"devices": self.devices})
        if repeats:
            raise _duplicate_error(repeats)
        return self


class OtherShopConfig(ShopPlace):
    """A shop served by a neighbouring gateway; used to find nearest shops across blocks."""

    gateway_id: Identifier = Field(description="Gateway that serves this shop.")


class GatewayIdentity(Strict):
    """Who this gateway is."""

    id: Identifier = Field(description="Gateway id (e.g. 'GW-001').")
    large_grid: Identifier = Field(description="Large grid cell, used in police topics.")
    mesh_key_file: Path | None = Field(
        default=None,
        description="This gateway's Ed25519 private key (PEM, mode 600; `lianfang keys mesh`) "
        "that signs the notices it sends other gateways' shops through the police broker.",
    )

    def resolved(self, base: Path) -> GatewayIdentity:
        """The mesh key file's path taken from ``base``."""
        key = self.mesh_key_file
        return self.model_copy(update={"mesh_key_file": base / key if key else None})


class NeighbourAlertConfig(Strict):
    """How a panic reaches the nearest shops."""

    count: int = Field(default=10, ge=1, le=100, description="How many nearest shops to alert.")
    radius_m: float = Field(default=300, gt=0, le=5000, description="Farthest shop to alert, m.")
    cooldown_s: float = Field(
        default=30, ge=0, le=3600, description="One neighbour alert per shop per this many s."
    )
    expires_s: float = Field(default=300, gt=0, le=86400, description="Alert lifetime on devices.")
    channels: list[Channel] = Field(
        default_factory=lambda: list[Channel](["mqtt"]),
        min_length=1,
        description="How alerted shops are told: notices on the block broker (mqtt), and/or one "
        "SMS to each shop's phone through the modem in 'sms'.",
    )
    language: Literal["zh", "en"] = Field(
        default="zh", description="Language of the SMS to shops (Chinese or English)."
    )


class SmsConfig(Strict):
    """A GSM/4G modem (AT commands on a serial port) that texts shops and takes their SMS."""

    port: str = Field(description="The modem's AT port (e.g. /dev/ttyUSB3) or a pyserial URL.")
    baudrate: int = Field(default=115200, gt=0, description="Serial line speed.")
    pin_file: Path | None = Field(
        default=None,
        description="File (mode 600) holding the SIM's PIN, when the SIM asks one; relative "
        "paths are taken from the config file.",
    )
    smsc: str | None = Field(
        default=None,
        pattern=r"^\+?[0-9]{3,20}$",
        description="SMS centre number put in every message; default: the one on the SIM.",
    )
    country_code: str = Field(
        default="86",
        pattern=r"^[1-9][0-9]{0,2}$",
        description="Country calling code of shop phones written without '+' (a leading 0, "
        "the trunk prefix, is dropped).",
    )
    panic_words: list[str] = Field(
        default_factory=lambda: ["9#", "99", "救命"],
        min_length=1,
        description="An SMS with one of these texts from a shop's phone raises a panic for it.",
    )

    def resolved(self, base: Path) -> SmsConfig:
        """The same with ``pin_file`` taken from ``base``."""
        pin = None if self.pin_file is None else base / self.pin_file
        return self.model_copy(update={"pin_file": pin})


class JournalConfig(Strict):
    """The durable journal (SQLite, WAL) in the state directory."""

    max_size_mb: float = Field(
        default=2048,
        gt=0,
        description="Size cap. Past it, routine then acknowledged low-value records go first; "
        "alarms are never evicted.",
    )
    reserve_mb: float = Field(
        default=16,
        ge=0,
        description="Ballast kept beside the journal and released when the disk fills, so "
        "that alarms are still journalled; 0 keeps none.",
    )


class StatusPageConfig(Strict):
    """The local status page and its JSON API (``lianfang run`` serves it; read-only)."""

    listen: str = Field(
        default="127.0.0.1:8080",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
        description="HOST:PORT to serve on. Any address but loopback needs a token and TLS "
        "(or behind_proxy).",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token the API asks for (Authorization: Bearer ...); required off "
        "loopback. The page takes it from its address: http://HOST:PORT/#token=...",
    )
    tls_cert: Path | None = Field(default=None, description="TLS certificate (PEM) to serve with.")
    tls_key: Path | None = Field(default=None, description="Its private key (PEM).")
    behind_proxy: bool = Field(
        default=False,
        description="true says a reverse proxy on this machine terminates TLS in front of the "
        "page (see docs/status-page.md), so a non-loopback listen may be plain HTTP.",
    )
    max_clients: int = Field(
        default=64, ge=1, le=1024, description="Connections served at once; more are refused."
    )

    @property
    def host(self) -> str:
        """The address part of ``listen``, without IPv6 brackets."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of ``listen``."""
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the page."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @model_validator(mode="after")
    def _secured_off_loopback(self) -> StatusPageConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise PydanticCustomError("tls_pair", "tls_cert and tls_key go together")
        if not 0 < self.port < 65536:
            raise PydanticCustomError("port", "port {port} is not 1-65535", {"port": self.port})
        if self.loopback:
            return self
        if self.token is None:
            raise PydanticCustomError(
                "token_required",
                "listen {listen} is not loopback: set status_page.token (a bearer token)",
                {"listen": self.listen},
            )
        if self.tls_cert is None and not self.behind_proxy:
            raise PydanticCustomError(
                "tls_required",
                "listen {listen} is not loopback: set status_page.tls_cert and tls_key, or "
                "behind_proxy: true with a TLS proxy in front",
                {"listen": self.listen},
            )
        return self

    def resolved(self, base: Path) -> StatusPageConfig:
        """The same with the TLS files taken from ``base``."""
        return self.model_copy(
            update={
                "tls_cert": None if self.tls_cert is None else base / self.tls_cert,
                "tls_key": None if self.tls_key is None else base / self.tls_key,
            }
        )


class GatewayConfig(Strict):
    """A whole ``lianfang.yaml``."""

    @classmethod
    def model_rebuild(cls, **kwargs: Any) -> bool | None:  # noqa: ANN401 - pydantic's signature
        """Build the validator, the drivers' and forwarders' settings unions with it.

        pydantic calls this at the first validation (or schema): only then are
        every kind's settings imported (``gateway.config.kinds``, decision 108).
        Validate through ``GatewayConfig`` itself: a ``TypeAdapter(GatewayConfig)``
        or a model with a ``GatewayConfig`` field is built without this hook, and
        fails with "not fully defined" until a config was validated once.
        """
        kwargs["_types_namespace"] = {**kinds.namespace(), **(kwargs.get("_types_namespace") or {})}
        return super().model_rebuild(**kwargs)

    schema_version: Literal[1] = Field(default=1, description="Version of this file's schema.")
    gateway: GatewayIdentity = Field(description="Identity of this gateway.")
    state_dir: Path = Field(
        default=Path("state"),
        description="Directory for the journal; relative paths are taken from the config file.",
    )
    broker: BrokerConfig = Field(description="The block's local broker (shops and devices).")
    drivers: list[DriverConfigUnion] = Field(
        default_factory=list, description="Southbound drivers."
    )
    forwarders: list[ForwarderConfigUnion] = Field(
        default_factory=list, description="Upstream receivers, each with its own outbox cursor."
    )
    no_forwarders_ok: bool = Field(
        default=False,
        description="true says on purpose that this gateway forwards to no receiver (a bench, "
        "or a block that alerts neighbours only); otherwise `lianfang check` refuses a config "
        "with no forwarder, whose alarms would never reach the police.",
    )
    neighbour_alert: NeighbourAlertConfig = Field(
        default_factory=NeighbourAlertConfig, description="Nearest-shop alerts."
    )
    journal: JournalConfig = Field(default_factory=JournalConfig, description="The journal.")
    sms: SmsConfig | None = Field(
        default=None, description="A GSM/4G modem for SMS to and from shops' phones."
    )
    status_interval_s: float = Field(
        default=15,
        ge=0.2,
        le=3600,
        description="How often the retained status and state_dir/status.json are refreshed.",
    )
    status_page: StatusPageConfig | None = Field(
        default=None, description="The local status page (off unless given)."
    )
    shops: list[ShopConfig] = Field(min_length=1, description="Shops this gateway serves.")
    other_shops: list[OtherShopConfig] = Field(
        default_factory=list, description="Shops of neighbouring gateways."
    )
    other_gateways: dict[Identifier, Path] = Field(
        default_factory=dict,
        description="Public mesh keys (PEM files) of the gateways whose notices this one relays "
        "to its shops, by gateway id; a notice from any other gateway is refused.",
    )
    rules: RulesConfig = Field(
        default_factory=RulesConfig,
        description="Local rules and their settings (or a rules.yaml beside this file).",
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, description="Signed commands from the police platform."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        repeats = (
            _repeats("shop id", "id", {"shops": self.shops, "other_shops": self.other_shops})
            + _repeats("driver name", "name", {"drivers": self.drivers})
            + _repeats("forwarder name", "name", {"forwarders": self.forwarders})
        )
        if repeats:
            raise _duplicate_error(repeats)
        _check_bound_devices(self)
        _check_buses(self)
        for i, other in enumerate(self.other_shops):
            if other.gateway_id == self.gateway.id:
                raise PydanticCustomError(
                    "own_gateway",
                    "other shop '{shop_id}' is served by this gateway '{gateway_id}'; "
                    "list it under 'shops'",
                    {
                        "shop_id": other.id,
                        "gateway_id": other.gateway_id,
                        "at": ("other_shops", i, "gateway_id"),
                    },
                )
        return self

    @model_validator(mode="after")
    def _rules_name_what_exists(self) -> GatewayConfig:
        problems = _unknown_names(self)
        if problems:
            at, message = problems[0]
            raise PydanticCustomError("unknown_name", "{message}", {"message": message, "at": at})
        return self

    @model_validator(mode="after")
    def _sms_channel_has_a_modem(self) -> GatewayConfig:
        if "sms" in self.neighbour_alert.channels and self.sms is None:
            raise PydanticCustomError(
                "sms_without_modem",
                "neighbour_alert.channels has 'sms' but no 'sms' section names the modem's port",
                {"at": ("neighbour_alert", "channels")},
            )
        return self

    def resolved(self, base: Path) -> GatewayConfig:
        """The same config with relative paths taken from ``base`` (the file's folder)."""
        return self.model_copy(
            update={
                "state_dir": base / self.state_dir,
                "gateway": self.gateway.resolved(base),
                "other_gateways": {g: base / p for g, p in self.other_gateways.items()},
                "broker": self.broker.resolved(base),
                "drivers": [d.resolved(base) for d in self.drivers],
                "forwarders": [f.resolved(base) for f in self.forwarders],
                "sms": None if self.sms is None else self.sms.resolved(base),
                "status_page": self.status_page and self.status_page.resolved(base),
            }
        )

    @property
    def journal_path(self) -> Path:
        """Path of the journal database."""
        return self.state_dir / "journal.sqlite3"


def _unknown_names(config: GatewayConfig) -> list[tuple[Loc, str]]:
    """Each forwarder, shop or default rule a rule names that the config lacks, with where."""
    forwarders = {f.name for f in config.forwarders}
    shops = {s.id for s in config.shops}
    defaults = {r.name for r in DEFAULT_RULES}
    found: list[tuple[Loc, str]] = [
        (
            ("rules", "disable", i),
            f"no default rule {name!r} (defaults: {', '.join(sorted(defaults))})",
        )
        for i, name in enumerate(config.rules.disable)
        if name not in defaults
    ]
    for i, rule in enumerate(config.rules.rules):
        for j, action in enumerate(rule.do):
            at: Loc = ("rules", "rules", i, "do", j)
            if isinstance(action, Forward | Escalate):
                found += [
                    ((*at, "to"), f"rule {rule.name!r}: no forwarder named {name!r}")
                    for name in action.to or ()
                    if name not in forwarders
                ]
            if isinstance(action, Siren) and action.shop != "origin" and action.shop not in shops:
                found.append(((*at, "shop"), f"rule {rule.name!r}: no shop {action.shop!r} here"))
    return found


def _check_bound_devices(config: GatewayConfig) -> None:
    """Every device a driver binds is one of its shop's devices, and bound only once."""
    devices = {s.id: {d.id for d in s.devices} for s in config.shops}
    bound: dict[tuple[str, str], str] = {}
    for i, driver in enumerate(config.drivers):
        for shop_id, device_id, loc in driver.bound_devices():
            at = ("drivers", i, *loc)
            if shop_id not in devices:
                message = "driver '{driver}' binds a device of shop '{shop_id}', not a served shop"
            elif device_id not in devices[shop_id]:
                message = (
                    "driver '{driver}' binds device '{device_id}', which shop '{shop_id}'"
                    " does not list under 'devices'"
                )
            elif (shop_id, device_id) in bound:
                message = (
                    "device '{device_id}' of shop '{shop_id}' is bound twice"
                    " (also by driver '{other}')"
                )
            else:
                bound[shop_id, device_id] = driver.name
                continue
            context = {
                "driver": driver.name,
                "shop_id": shop_id,
                "device_id": device_id,
                "other": bound.get((shop_id, device_id), ""),
                "at": at,
            }
            raise PydanticCustomError("unbound_device", message, context)


def _check_buses(config: GatewayConfig) -> None:
    """One driver per serial port: two would read each other's frames."""
    owner: dict[str, str] = {}
    for i, driver in enumerate(config.drivers):
        port = getattr(driver, "port", None)
        if port is None:
            continue
        if port in owner:
            raise PydanticCustomError(
                "shared_port",
                "drivers '{first}' and '{second}' both use port '{port}'; one bus, one driver",
                {
                    "first": owner[port],
                    "second": driver.name,
                    "port": port,
                    "at": ("drivers", i, "port"),
                },
            )
        owner[port] = driver.name
