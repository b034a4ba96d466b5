"""The block broker's users, passwords and ACL, generated from the gateway config.

Mosquitto enforces credentials and ACLs itself; these are the files it reads:
``lianfang.conf`` (an include for ``/etc/mosquitto/conf.d/``), ``passwd`` in
Mosquitto's own PBKDF2-SHA512 format, and ``acl``. Beside them go the
installer's ``credentials.csv`` (one row per shop panel) and the gateway's own
``gateway.password``, both mode 600. Each shop's panels log in with the shop id
as user name, so the ACL is three ``pattern`` lines for every shop; the gateway
has a user of its own.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from drivers.mqtt_devices_config import MqttDevicesConfig
from drivers.mqtt_ingest_config import MqttIngestConfig
from gateway.config.model import GatewayConfig
from gateway.forwarders.mqtt_police import PoliceMqttConfig
from gateway.mqtt.notify import TOPIC_ROOT, gateway_status_topic

CONF_FILE = "lianfang.conf"
PASSWD_FILE = "passwd"  # noqa: S105 - a file name, not a password
ACL_FILE = "acl"
CREDENTIALS_FILE = "credentials.csv"
GATEWAY_PASSWORD_FILE = "gateway.password"  # noqa: S105 - a file name
CREDENTIAL_COLUMNS = ("shop_id", "device_id", "username", "password", "topics")

# Mosquitto's PBKDF2-SHA512 scheme ("$7$"): what mosquitto_passwd 2.x writes by default.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
SECRET_MODE = 0o600
PASSWORD_BYTES = 24  # 192 bits from `secrets`
# Panels of other kinds (buttons, keypads, door contacts) reach the gateway
# over serial, 433 MHz or Modbus, not the broker, and get no login.
MQTT_DEVICE_KINDS = frozenset({"alarm_panel"})
# A restart of the gateway at a busy block (thousands of events a second, a
# few seconds down) queues tens of thousands of messages for its persistent
# session; stock Mosquitto keeps 1,000 per offline client and drops the rest.
MAX_QUEUED_MESSAGES = 1_000_000


class BrokerAccessError(ValueError):
    """The broker files cannot be made from this config and these options."""


@dataclass(frozen=True)
class Listener:
    """Where the broker listens, and its TLS files if it speaks TLS."""

    host: str | None
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Login:
    """One broker user: a shop (its panels share it) or the gateway (``shop_id`` None)."""

    shop_id: str | None
    device_ids: tuple[str, ...]
    username: str
    password: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def gateway_username(config: GatewayConfig) -> str:
    """The gateway's own user name on its block broker."""
    return f"gateway-{config.gateway.id}"


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """``password`` as a Mosquitto ``$7$`` password-file entry (PBKDF2-HMAC-SHA512)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def shop_topics(shop_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a shop's panel may publish, and what it may subscribe to."""
    shop = f"{TOPIC_ROOT}/shop/{shop_id}"
    return (f"{shop}/event", f"{shop}/response"), (f"{shop}/notify",)


def plan_logins(
    config: GatewayConfig,
    previous: dict[str, str],
    *,
    rotate: frozenset[str] = frozenset(),
) -> list[Login]:
    """The gateway's login, then one per shop with an MQTT panel, in config order.

    ``previous`` maps user names to the passwords already given out: they are
    kept, except for the shops in ``rotate``, which get new ones.
    """
    shop_ids = {s.id for s in config.shops}
    unknown = sorted(rotate - shop_ids)
    if unknown:
        raise BrokerAccessError(f"--rotate: no shop {', '.join(unknown)} in this config")
    gateway_user = gateway_username(config)
    if gateway_user in shop_ids:
        raise BrokerAccessError(
            f"shop id {gateway_user!r} is the gateway's own broker user name; rename the shop"
        )
    reads = {f"{TOPIC_ROOT}/shop/+/event", f"{TOPIC_ROOT}/shop/+/response"}
    reads |= {d.topic for d in config.drivers if isinstance(d, MqttIngestConfig)}
    reads |= {
        t
        for d in config.drivers
        if isinstance(d, MqttDevicesConfig) and not d.broker
        for t in d.topics()
    }
    status = gateway_status_topic(config.gateway.id)
    logins = [
        Login(
            shop_id=None,
            device_ids=(),
            username=gateway_user,
            password=previous.get(gateway_user) or _new_password(),
            publish=(f"{TOPIC_ROOT}/shop/+/notify", status),
            subscribe=(*sorted(reads), status),
        )
    ]
    for shop in config.shops:
        panels = tuple(d.id for d in shop.devices if d.kind in MQTT_DEVICE_KINDS)
        if not panels:
            continue
        kept = None if shop.id in rotate else previous.get(shop.id)
        publish, subscribe = shop_topics(shop.id)
        logins.append(Login(shop.id, panels, shop.id, kept or _new_password(), publish, subscribe))
    return logins


def _new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def previous_passwords(out: Path, gateway_user: str) -> dict[str, str]:
    """User name to password, as an earlier run wrote them into ``out`` (empty if none)."""
    found: dict[str, str] = {}
    credentials = out / CREDENTIALS_FILE
    if credentials.exists():
        with credentials.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("username") and row.get("password"):
                    found[row["username"]] = row["password"]
    gateway_file = out / GATEWAY_PASSWORD_FILE
    if gateway_file.exists():
        found[gateway_user] = gateway_file.read_text(encoding="utf-8").strip()
    return found


def conf_text(out: Path, listener: Listener) -> str:
    """``lianfang.conf``: the listener, no anonymous clients, our password and ACL files."""
    out = out.resolve()
    where = f"{listener.port} {listener.host}" if listener.host else str(listener.port)
    lines = [
        "# Generated by `lianfang broker-config` from lianfang.yaml; re-run it, do not edit.",
        "# Include it from /etc/mosquitto/conf.d/ (the Debian package reads that folder).",
        f"listener {where}",
        "allow_anonymous false",
        f"password_file {out / PASSWD_FILE}",
        f"acl_file {out / ACL_FILE}",
        "# A neighbour alert is a few small packets; Nagle would hold each one back.",
        "set_tcp_nodelay true",
        "# The gateway keeps a persistent session. While it restarts, the broker queues",
        "# the block's events for it; stock Mosquitto keeps only 1,000 per offline client",
        "# and silently drops the rest, so a restart at a busy block (thousands of events",
        "# a second) would lose alarms at the broker. A million small events is a few",
        "# hundred MB at worst, and only while the gateway is away.",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
    ]
    if listener.cert_file is not None and listener.key_file is not None:
        lines += [
            f"certfile {listener.cert_file.resolve()}",
            f"keyfile {listener.key_file.resolve()}",
            *([f"cafile {listener.ca_file.resolve()}"] if listener.ca_file else []),
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n"


def acl_text(config: GatewayConfig, logins: list[Login]) -> str:
    """The ACL: shops by ``pattern`` (user name = shop id), the gateway by ``topic`` lines.

    No line grants anyone but the gateway a write to ``.../notify``, and there is
    no catch-all, so what is not granted here is refused. The gateway's status is
    for everyone on the block (DESIGN: "gateway → all"), so every user may read it.
    """
    publish, subscribe = shop_topics("%u")
    gateway = logins[0]
    lines = [
        "# Generated by `lianfang broker-config`; re-run it, do not edit.",
        "# Every shop panel logs in with its shop id as user name (%u):",
        "# it publishes only its own events and responses, reads only its own notices.",
        *(f"pattern write {t}" for t in publish),
        *(f"pattern read {t}" for t in subscribe),
        "# Every user may read whether the gateway is online (its retained status).",
        f"pattern read {gateway_status_topic(config.gateway.id)}",
        "",
        f"# The gateway {config.gateway.id}: reads every shop, alone sends neighbour notices.",
        f"user {gateway.username}",
        *(
            f"topic {'readwrite' if t in gateway.subscribe else 'write'} {t}"
            for t in gateway.publish
        ),
        *(f"topic read {t}" for t in gateway.subscribe if t not in gateway.publish),
    ]
    return "\n".join(lines) + "\n"


def police_acl_text(config: GatewayConfig, username: str | None = None) -> str:
    """The police broker's ACL entries for this gateway, as Mosquitto ``user``/``topic`` lines.

    The user is ``username`` (default the gateway id; with client certificates and
    ``use_identity_as_username``, the certificate's CN). It may publish only its
    own events and status, read only its own commands and mesh inbox, and send
    mesh notices only into the inboxes of the gateways whose shops it alerts.
    """
    police = next((f for f in config.forwarders if isinstance(f, PoliceMqttConfig)), None)
    if police is None:
        raise BrokerAccessError("no police_mqtt forwarder in this config: no police broker to use")
    gid, large = config.gateway.id, config.gateway.large_grid
    root = police.topic_root
    own = f"{root}/{large}/{gid}"
    # A notice goes to ROOT/{the shop's large grid}/mesh/{its gateway}/notify (gateway/inboxes.py).
    mesh_out = sorted(
        {f"{root}/{s.grid.large}/mesh/{s.gateway_id}/notify" for s in config.other_shops}
    )
    lines = [
        f"# Generated by `lianfang police-acl` for gateway {gid}; add it to the police broker's",
        "# acl_file (one block per gateway). Nothing else is granted, so nothing else is allowed.",
        f"user {username or gid}",
        f"topic write {own}/events",
        f"topic write {own}/status",
        f"topic read {own}/cmd",
        f"topic read {root}/{large}/mesh/{gid}/notify",
        *(f"topic write {t}" for t in mesh_out),
    ]
    return "\n".join(lines) + "\n"


def passwd_text(logins: list[Login]) -> str:
    """Mosquitto's password file: ``user:$7$...`` a line."""
    return "".join(f"{login.username}:{mosquitto_hash(login.password)}\n" for login in logins)


def credentials_text(logins: list[Login]) -> str:
    """The installer's sheet: one row per shop panel, with the topics it may use."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CREDENTIAL_COLUMNS)
    for login in logins:
        if login.shop_id is None:
            continue
        topics = " ".join(
            [*(f"pub:{t}" for t in login.publish), *(f"sub:{t}" for t in login.subscribe)]
        )
        for device in login.device_ids:
            writer.writerow((login.shop_id, device, login.username, login.password, topics))
    return text.getvalue()


def write_files(out: Path, config: GatewayConfig, logins: list[Login], listener: Listener) -> None:
    """Write the five files into ``out``; new secrets mode 600, each file replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / CREDENTIALS_FILE, credentials_text(logins), secret=True)
    _write(out / GATEWAY_PASSWORD_FILE, logins[0].password + "\n", secret=True)
    _write(out / PASSWD_FILE, passwd_text(logins), secret=True)
    _write(out / ACL_FILE, acl_text(config, logins), secret=False)
    _write(out / CONF_FILE, conf_text(out, listener), secret=False)


def generate(
    out: Path, config: GatewayConfig, listener: Listener, *, rotate: frozenset[str] = frozenset()
) -> tuple[list[Login], dict[str, str]]:
    """Plan the logins (keeping the passwords already in ``out``) and write the files.

    Returns the logins and the passwords found from an earlier run.

    Raises:
        BrokerAccessError: the config and options do not fit.
        OSError: ``out`` cannot be read or written.
    """
    previous = previous_passwords(out, gateway_username(config))
    logins = plan_logins(config, previous, rotate=rotate)
    write_files(out, config, logins, listener)
    return logins, previous


def _write(path: Path, text: str, *, secret: bool) -> None:
    """Replace ``path`` atomically; a file already there keeps its owner, group and mode.

    So a re-run leaves ``passwd`` readable by the ``mosquitto`` user and
    ``gateway.password`` by the gateway's group, as the installer set them; a
    secret never becomes readable by every user.
    """
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    mode = SECRET_MODE if secret else 0o644
    if old is not None:
        mode = stat.S_IMODE(old.st_mode) & ~(0o007 if secret else 0)
    tmp = path.with_name(f".{path.name}.new")
    # Created owner-only, so a secret is never readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if old is not None:
                with contextlib.suppress(PermissionError):  # only root may give a file away
                    os.fchown(f.fileno(), old.st_uid, old.st_gid)
            os.fchmod(f.fileno(), mode)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
